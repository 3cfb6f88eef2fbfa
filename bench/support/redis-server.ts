import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort, pings } from '../../test/support/net.ts';
import { stopProcess, track } from './children.ts';

/** A redis-server of the bench's own: fresh, on a free port, no persistence. Never the shared 6379. */
export interface BenchRedis {
  readonly url: string;
  readonly port: number;
  readonly version: string;
  readonly process: ChildProcess;
  /** A new client (closed by `stop`). */
  client(name: string): Redis;
  stop(): Promise<void>;
}

export async function startRedisServer(): Promise<BenchRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'redsource-bench-redis-'));
  const child = track(
    spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'no',
        '--daemonize',
        'no',
        '--loglevel',
        'warning',
      ],
      { stdio: 'ignore' },
    ),
  );
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  // Should this process be SIGKILLed (no exit handler runs), the server must not outlive it: a
  // watcher polls for this pid and kills the server's. Stopped (by pid) with the server otherwise.
  const reaper = track(
    spawn(
      'sh',
      ['-c', `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -9 ${child.pid ?? 0} 2>/dev/null`],
      { stdio: 'ignore', detached: true },
    ),
  );
  const url = `redis://127.0.0.1:${port}`;
  const clients: Redis[] = [];
  const stop = async () => {
    for (const c of clients.splice(0)) c.disconnect();
    await stopProcess(child);
    await stopProcess(reaper, 1_000);
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 200; i++) {
    const failed = await Promise.race([spawnError, sleep(25).then(() => undefined)]);
    if (failed) throw new Error(`cannot start redis-server (is it on PATH?): ${failed.message}`);
    if (child.exitCode !== null) break;
    if (await pings(port)) {
      const probe = new Redis(url);
      const info = await probe.info('server');
      probe.disconnect();
      const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
      return {
        url,
        port,
        version,
        process: child,
        client(name) {
          const client = new Redis(url, { connectionName: name, maxRetriesPerRequest: 3 });
          client.on('error', () => undefined);
          clients.push(client);
          return client;
        },
        stop,
      };
    }
  }
  await stop();
  throw new Error(`redis-server on port ${port} did not answer PING`);
}
