import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort } from '../../../test/support/redis.ts';

/** A redis-server of the test's own with an ACL user (the default user off) and, optionally, TLS only. */
export interface SecureRedis {
  /** `redis://` or `rediss://` with the user and the (percent-encoded) password. */
  readonly url: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** PEM file of the CA that signed the server certificate (TLS only). */
  readonly caFile: string | undefined;
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

export interface SecureRedisOptions {
  readonly user: string;
  readonly password: string;
  readonly tls?: boolean;
}

/** True when openssl is on PATH and this redis-server was built with TLS (it knows `tls-port`). */
export function tlsAvailable(): boolean {
  if (spawnSync('openssl', ['version']).status !== 0) return false;
  // Listening nowhere, a TLS build loads the configuration and exits at once; one without TLS rejects the directive.
  const probe = spawnSync('redis-server', ['--port', '0', '--tls-port', '0', '--bind', '127.0.0.1', '--save', ''], {
    encoding: 'utf8',
    timeout: 5_000,
  });
  const output = `${probe.stdout}${probe.stderr}`;
  return /Configuration loaded/.test(output) && !/Bad directive/.test(output);
}

/** CA, and a server certificate signed by it for 127.0.0.1 and localhost, under `dir`. */
function makeCertificates(dir: string): { ca: string; cert: string; key: string } {
  const ca = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  const cert = join(dir, 'server.crt');
  const key = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  const ext = join(dir, 'server.ext');
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const run = (args: string[]) => {
    const result = spawnSync('openssl', args, { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${result.stderr}`);
  };
  run(['req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-days', '1', '-subj', '/CN=redsource test CA']);
  run(['req', ...ec, '-keyout', key, '-out', csr, '-subj', '/CN=localhost']);
  run([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca,
    '-CAkey',
    caKey,
    '-CAcreateserial',
    '-out',
    cert,
    '-days',
    '1',
    '-extfile',
    ext,
  ]);
  return { ca, cert, key };
}

export async function startSecureRedis({ user, password, tls = false }: SecureRedisOptions): Promise<SecureRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'redsource-secure-redis-'));
  const port = await freePort();
  const acl = ['--user', 'default', 'off', '--user', user, 'on', `>${password}`, '~*', '&*', '+@all'];
  const base = ['--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', ...acl];
  let caFile: string | undefined;
  let args: string[];
  if (tls) {
    const certs = makeCertificates(dir);
    caFile = certs.ca;
    args = [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      certs.cert,
      '--tls-key-file',
      certs.key,
      '--tls-ca-cert-file',
      certs.ca,
      '--tls-auth-clients',
      'no',
      ...base,
    ];
  } else {
    args = ['--port', String(port), ...base];
  }
  const child: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
  const url = `${tls ? 'rediss' : 'redis'}://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 200 && child.exitCode === null; i++) {
    const probe = new Redis(url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      ...(caFile ? { tls: { ca: readFileSync(caFile, 'utf8') } } : {}),
    });
    probe.on('error', () => undefined);
    const up = await probe.connect().then(
      async () => (await probe.ping()) === 'PONG',
      () => false,
    );
    probe.disconnect();
    if (up) return { url, port, user, password, caFile, pid: child.pid, stop };
    await sleep(25);
  }
  await stop();
  throw new Error(`the secure redis-server on port ${port} did not start`);
}
