import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { createRedactor, redactingLoggerOptions, urlSecrets } from '../src/runtime/redact.ts';
import { cliChildren, isolatedServiceEnv, runCli } from '../../../test/support/cli.ts';
import { eventually, freePort } from '../../../test/support/redis.ts';
import { startSecureRedis, type SecureRedis } from './secure-redis.ts';

// Characters that must be percent-encoded in a URL, and a run of letters that is easy to grep for.
const PASSWORD = 'Pa55:w@rd/%+zq7LeakMarker';
const USER = 'app';
/** Every form the password could take in an output. */
const FORMS = [PASSWORD, encodeURIComponent(PASSWORD), 'zq7LeakMarker'];

function expectNoPassword(label: string, text: string): void {
  for (const form of FORMS)
    expect(text.includes(form), `${label} shows the password (${form}):\n${text.slice(0, 3000)}`).toBe(false);
}

/** An ioredis-style ReplyError: the message plus the command with its arguments. */
function replyError(message: string, name: string, args: string[]): Error {
  return Object.assign(new Error(message), { name: 'ReplyError', command: { name, args } });
}

describe('the redaction every log line and error message passes through', () => {
  const redactor = createRedactor(urlSecrets(`redis://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:6379`));

  it('strips the arguments of AUTH, HELLO, MIGRATE, ACL SETUSER and CONFIG SET from a ReplyError', () => {
    const cases: [string, string[]][] = [
      ['auth', [USER, 'other-s3cret']],
      ['hello', ['3', 'AUTH', USER, 'other-s3cret', 'SETNAME', 'x']],
      ['migrate', ['h', '6379', 'k', '0', '5000', 'AUTH2', USER, 'other-s3cret']],
      ['acl', ['SETUSER', USER, 'on', '>other-s3cret']],
      ['config', ['SET', 'masterauth', 'other-s3cret']],
      ['config', ['SET', 'maxmemory', '1mb', 'requirepass', 'other-s3cret']],
    ];
    for (const [name, args] of cases) {
      const shown = JSON.stringify(
        redactor.value({ err: replyError('WRONGPASS invalid username-password pair', name, args) }),
      );
      expect(shown, name).not.toContain('other-s3cret');
      expect(shown, name).toContain('WRONGPASS');
    }
    // Other commands keep their arguments (they say what failed).
    expect(JSON.stringify(redactor.value(replyError('WRONGTYPE', 'hgetall', ['user_snapshot_1'])))).toContain(
      'user_snapshot_1',
    );
  });

  it('hides the password of any URL in any string, and the configured password anywhere', () => {
    const text = redactor.text(
      `connect to redis://bob:hunter22@h:1 and rediss://:hunter33@h:2 failed; also ${PASSWORD} and ${encodeURIComponent(PASSWORD)}`,
    );
    expect(text).not.toMatch(/hunter22|hunter33/);
    expectNoPassword('text', text);
    expect(text).toContain('redis://bob:***@h:1');
    // Nested, in a cause, in an array.
    const nested = redactor.value({ list: [new Error('x', { cause: new Error(`redis://u:hunter44@h`) })] });
    expect(JSON.stringify(nested)).not.toContain('hunter44');
  });

  it('a Redis Cluster seed list: every password hidden, every node still named; a node error kept in lastNodeError', () => {
    const encoded = encodeURIComponent(PASSWORD);
    const seeds = `redis://${USER}:${encoded}@10.0.0.1:7000,redis://${USER}:${encoded}@10.0.0.2:7001,10.0.0.3:7002`;
    const own = createRedactor(urlSecrets(seeds));
    const text = own.text(`REDIS_URL=${seeds} failed`);
    expectNoPassword('seed list', text);
    expect(text).toBe(
      `REDIS_URL=redis://${USER}:***@10.0.0.1:7000,redis://${USER}:***@10.0.0.2:7001,10.0.0.3:7002 failed`,
    );
    // A password that itself holds ',redis://' is not cut in two (it is REDIS_URL's, so known).
    const odd = 'x,redis://y@z';
    const oddUrl = `redis://${USER}:${odd}@10.0.0.1:7000,redis://${USER}:${odd}@10.0.0.2:7001`;
    expect(createRedactor([odd]).text(oddUrl)).not.toMatch(/x,redis:\/\/y|y@z/);
    // ioredis Cluster's "Failed to refresh slots cache." keeps the last node's refused AUTH, password included.
    const refresh = Object.assign(new Error('Failed to refresh slots cache.'), {
      name: 'ClusterAllFailedError',
      lastNodeError: replyError('WRONGPASS invalid username-password pair or user is disabled.', 'auth', [
        USER,
        PASSWORD,
      ]),
    });
    const shown = JSON.stringify(own.value({ err: refresh }));
    expectNoPassword('lastNodeError', shown);
    expect(shown).toContain('WRONGPASS');
  });

  it('is what the pino logger writes: err objects, messages, bindings of child loggers', () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) });
    const logger = pino({ level: 'trace', ...redactingLoggerOptions(redactor) }, sink);
    logger.error({ err: replyError('WRONGPASS x', 'auth', [USER, PASSWORD]) }, 'request failed');
    logger.warn({ error: replyError('NOAUTH x', 'hello', ['3', 'AUTH', USER, PASSWORD]) }, 'failed');
    logger
      .child({ url: `redis://${USER}:${PASSWORD}@h:1` })
      .info(`retrying redis://${USER}:${encodeURIComponent(PASSWORD)}@h:1`);
    logger.info({ detail: { deep: [PASSWORD] } }, 'x');
    expect(lines).toHaveLength(4);
    expectNoPassword('log', lines.join(''));
    expect(lines[0]).toContain('WRONGPASS');
  });
});

describe('a service whose ACL user is disabled while it runs', () => {
  let server: SecureRedis;
  let admin: Redis;
  const children = cliChildren();
  beforeAll(async () => {
    server = await startSecureRedis({ user: USER, password: PASSWORD });
    const app = new Redis(server.url);
    await app.call('ACL', 'SETUSER', 'admin', 'on', '>admin-pw', '~*', '&*', '+@all');
    app.disconnect();
    admin = new Redis(`redis://admin:admin-pw@127.0.0.1:${server.port}`);
  });
  afterAll(async () => {
    admin.disconnect();
    await server.stop();
  });

  it('never shows the password: API, processor, CLI commands, dashboard, metrics, before and after', async () => {
    const port = await freePort();
    const env = { ...isolatedServiceEnv(server.url), PORT: String(port), HOST: '127.0.0.1' };
    const base = `http://127.0.0.1:${port}`;
    const outputs: [string, string][] = [];
    const cli = async (args: string[], extra: Record<string, string> = {}) => {
      const run = runCli(args, { ...env, ...extra });
      children.push(run);
      const code = await Promise.race([run.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000))]);
      outputs.push([`redsource ${args.join(' ')}`, run.output()]);
      return { code, output: run.output() };
    };
    const http = async (path: string) => {
      const res = await fetch(`${base}${path}`);
      const body = await res.text();
      outputs.push([`GET ${path}`, `${res.status} ${JSON.stringify([...res.headers])} ${body}`]);
      return { status: res.status, body };
    };

    expect((await cli(['seed'])).code).toBe(0);
    const service = runCli(['serve'], { ...env, LOG_LEVEL: 'info' });
    children.push(service);
    expect(
      await eventually(async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200, 20_000, 100),
      service.output(),
    ).toBe(true);
    expect(await eventually(async () => (await http('/users/1/profile')).status === 200), service.output()).toBe(true);
    expect((await http('/dashboard/status.json')).status).toBe(200);
    expect((await http('/metrics')).body).toContain('redsource_status_up 1');
    const ok = await Promise.all([cli(['status']), cli(['status', '--json']), cli(['dlq', 'list']), cli(['replay'])]);
    for (const run of ok) expect(run.code, run.output).toBe(0);

    await admin.call('ACL', 'SETUSER', USER, 'off');
    await admin.call('CLIENT', 'KILL', 'USER', USER);

    const profile = await http('/users/1/profile');
    expect(profile.status, profile.body).toBe(503);
    expect(JSON.parse(profile.body)).toMatchObject({ statusCode: 503, code: 'RS_UNAVAILABLE' });
    expect((await http('/dashboard/status.json')).status).toBe(503);
    expect((await http('/metrics')).body).toContain('redsource_status_up 0');
    expect((await http('/readyz')).status).toBe(503);
    expect((await http('/users/2/profile?after=' + env.STREAM_UPDATES + ':1-0&wait=300')).status).toBe(503);

    const failed = await Promise.all([
      cli(['status']),
      cli(['status', '--json']),
      cli(['dlq', 'list']),
      cli(['replay']),
      cli(['seed']),
      cli(['status'], { LOG_LEVEL: 'debug' }),
    ]);
    for (const run of failed) {
      expect(run.code, run.output).not.toBe(0);
      expect(run.code, run.output).not.toBe('hung');
      expect(run.output, run.output).toMatch(
        /redsource: Redis at 127\.0\.0\.1:\d+ refused the login for user \S+: check the user and password in REDIS_URL/,
      );
    }
    // One line without the stack at the default level; the stack only under LOG_LEVEL=debug.
    for (const run of failed.slice(0, 5))
      expect(
        run.output
          .trim()
          .split('\n')
          .filter((l) => l.startsWith('redsource:') || l.includes('    at ')),
        run.output,
      ).toHaveLength(1);
    expect(failed[5]?.output).toMatch(/\n\s+at /);

    // Let the processor and the API log a few reconnect rounds, then stop the service.
    await new Promise((r) => setTimeout(r, 1_500));
    service.child.kill('SIGTERM');
    await Promise.race([service.exited, new Promise((r) => setTimeout(r, 15_000))]);
    outputs.push(['serve', service.output()]);
    expect(service.output()).toMatch(/WRONGPASS/);

    for (const [label, text] of outputs) expectNoPassword(label, text);
  }, 60_000);
});
