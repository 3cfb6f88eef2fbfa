import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { loadConfig } from '../src/config.ts';
import { connectRedis, redactUrl, redisTls } from '../src/runtime/redis.ts';
import { isolatedServiceEnv, runCli, type CliProcess } from '../../../test/support/cli.ts';
import { eventually, freePort, unique } from '../../../test/support/redis.ts';
import { startSecureRedis, tlsAvailable, type SecureRedis } from './secure-redis.ts';

// Characters that must be percent-encoded in a URL: ioredis must decode them, redaction must hide them.
const PASSWORD = 'Pa55:w@rd/%+secret';
const USER = 'redsource_app';

const clients: Redis[] = [];
const children: CliProcess[] = [];
function client(url: string, tls?: ReturnType<typeof redisTls>): Redis {
  const c = connectRedis(url, unique('test'), tls);
  c.on('error', () => undefined);
  clients.push(c);
  return c;
}
afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect();
  for (const c of children.splice(0)) {
    if (c.child.exitCode === null) c.child.kill('SIGKILL');
    await c.exited;
  }
});

/** The first error a client reports, or undefined if it connects. */
function firstError(redis: Redis): Promise<Error | undefined> {
  return new Promise((resolve) => {
    redis.once('error', (error: Error) => resolve(error));
    redis.once('ready', () => resolve(undefined));
  });
}

/** Names of this test only, as the CLI's environment. */
function isolatedEnv(url: string): Record<string, string> {
  // LOG_LEVEL: everything the process could log about its connection.
  return { ...isolatedServiceEnv(url), LOG_LEVEL: 'trace' };
}

describe('redactUrl', () => {
  it('hides the password, keeps what identifies the server', () => {
    expect(redactUrl('redis://alice:s3cret@redis.example:6380/2')).toBe('redis://alice:***@redis.example:6380/2');
    expect(redactUrl('rediss://:s3cret@host:6379')).toBe('rediss://:***@host:6379');
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    // A bare userinfo is read as a password by some clients: hidden too.
    expect(redactUrl('redis://s3cret@host')).toBe('redis://***@host');
  });

  it('hides unencoded and encoded special characters, and URLs that do not parse', () => {
    for (const url of [
      'redis://u:pa@ss:w/rd@host:1',
      `redis://u:${encodeURIComponent(PASSWORD)}@host:1`,
      'u:s3cret@host:6379',
      'http://u:s3cret@host',
    ]) {
      const shown = redactUrl(url);
      expect(shown, url).not.toMatch(/s3cret|pa@ss|w\/rd|Pa55|secret/);
      expect(shown, url).toContain('***');
    }
  });

  it('keeps REDIS_URL secrets out of configuration errors', () => {
    for (const bad of ['http://alice:s3cret@host:6379', 'alice:s3cret@host:6379', 'redis://alice:s3cret@[bad']) {
      expect(() => loadConfig({ REDIS_URL: bad })).toThrow(/REDIS_URL/);
      try {
        loadConfig({ REDIS_URL: bad });
      } catch (error) {
        expect((error as Error).message).not.toContain('s3cret');
        expect((error as Error).message).toContain('***');
      }
    }
  });
});

describe('Redis with an ACL user and password in the URL', () => {
  let server: SecureRedis;
  beforeAll(async () => {
    server = await startSecureRedis({ user: USER, password: PASSWORD });
  });
  afterAll(async () => server.stop());

  it("connects as the URL's user, its percent-encoded password decoded", async () => {
    expect(server.url).toContain(encodeURIComponent(PASSWORD));
    const redis = client(server.url);
    expect(await redis.ping()).toBe('PONG');
    expect(await redis.call('ACL', 'WHOAMI')).toBe(USER);
  });

  it('refuses a wrong password without ever echoing it', async () => {
    const wrong = server.url.replace(encodeURIComponent(PASSWORD), 'not-the-Pa55word');
    const error = await firstError(client(wrong));
    expect(error?.message).toMatch(/WRONGPASS|NOAUTH|invalid username-password/i);
    expect(error?.message).not.toContain('not-the-Pa55word');
  });

  it('every CLI process uses it: seed appends, and no log line shows the password', async () => {
    const env = isolatedEnv(server.url);
    const seed = runCli(['seed'], env);
    children.push(seed);
    expect(await seed.exited, seed.output()).toBe(0);
    expect(seed.output()).toContain('appended 5 seed event(s)');
    expect(seed.output()).not.toContain(PASSWORD);
    expect(seed.output()).not.toContain(encodeURIComponent(PASSWORD));
    const redis = client(server.url);
    expect(await redis.xlen(env.STREAM_UPDATES as string)).toBe(2);
  });

  it('a CLI process given a wrong password fails and never prints it', async () => {
    const wrong = server.url.replace(encodeURIComponent(PASSWORD), 'Wrong-Pa55word');
    const seed = runCli(['seed'], isolatedEnv(wrong));
    children.push(seed);
    const code = await Promise.race([seed.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000))]);
    expect(code, seed.output()).not.toBe(0);
    expect(seed.output()).toMatch(/WRONGPASS|NOAUTH|invalid username-password|refused the login for user/i);
    expect(seed.output()).not.toContain('Wrong-Pa55word');
  });
});

const TLS = tlsAvailable();

describe.skipIf(!TLS)('Redis over TLS (rediss://), with an ACL user', () => {
  let server: SecureRedis;
  let caFile: string;
  beforeAll(async () => {
    server = await startSecureRedis({ user: USER, password: PASSWORD, tls: true });
    caFile = server.caFile ?? '';
  });
  afterAll(async () => server.stop());

  it('verifies the server against REDIS_TLS_CA', async () => {
    expect(server.url.startsWith('rediss://')).toBe(true);
    const redis = client(server.url, redisTls({ REDIS_TLS_CA: caFile, REDIS_TLS_INSECURE: false }));
    expect(await redis.ping()).toBe('PONG');
    expect(await redis.call('ACL', 'WHOAMI')).toBe(USER);
  });

  it('refuses a server certificate no trusted CA signed, unless REDIS_TLS_INSECURE', async () => {
    const error = await firstError(client(server.url, redisTls({ REDIS_TLS_INSECURE: false })));
    expect(error?.message).toMatch(/certificate/i);
    const insecure = client(server.url, redisTls({ REDIS_TLS_INSECURE: true }));
    expect(await insecure.ping()).toBe('PONG');
  });

  it('loadConfig reads REDIS_TLS_CA and REDIS_TLS_INSECURE', () => {
    const config = loadConfig({ REDIS_URL: server.url, REDIS_TLS_CA: caFile, REDIS_TLS_INSECURE: '1' });
    expect(config.REDIS_TLS_CA).toBe(caFile);
    expect(config.REDIS_TLS_INSECURE).toBe(true);
    expect(loadConfig({}).REDIS_TLS_INSECURE).toBe(false);
    expect(() => loadConfig({ REDIS_TLS_CA: '/no/such/ca.pem' })).toThrow(/REDIS_TLS_CA: no such file/);
    expect(() => loadConfig({ REDIS_TLS_INSECURE: 'yes' })).toThrow(/REDIS_TLS_INSECURE/);
  });

  it('the API process serves over it (ready), and no log line shows the password', async () => {
    const port = await freePort();
    const env = { ...isolatedEnv(server.url), REDIS_TLS_CA: caFile, PORT: String(port), HOST: '127.0.0.1' };
    const api = runCli(['serve', '--demo'], env);
    children.push(api);
    const base = `http://127.0.0.1:${port}`;
    const ready = await eventually(
      async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200,
      20_000,
      100,
    );
    expect(ready, api.output()).toBe(true);
    const duffy = await eventually(async () => {
      const res = await fetch(`${base}/users/1/profile`);
      return res.status === 200 ? ((await res.json()) as Record<string, unknown>) : undefined;
    });
    expect(duffy).toMatchObject({ id: '1', name: 'Duffy' });
    api.child.kill('SIGTERM');
    expect(await api.exited, api.output()).toBe(0);
    expect(api.output()).not.toContain(PASSWORD);
    expect(api.output()).not.toContain(encodeURIComponent(PASSWORD));
  });
});
