import net from 'node:net';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { buildApp } from '../src/http/app.ts';
import { loadConfig } from '../src/config.ts';
import { edgeOptions } from '../src/http/edge.ts';
import { useTestRedis } from '../../../test/support/redis.ts';
import { useProfileApps } from './app-harness.ts';

const ctx = useTestRedis();
const apps = useProfileApps(ctx);
const app = (options?: Parameters<typeof apps.app>[0]) => apps.app(options);

const startProcessor = () => apps.startProcessor();

/** XADDs one flat-form entry; returns its id. */
async function xadd(stream: string, ...fields: string[]): Promise<string> {
  return String(await ctx.redis.xadd(stream, '*', ...fields));
}

let users = 0;
const newUser = () => `u${process.pid}_${++users}_${Date.now() % 100_000}`;

const ERROR_SHAPE = {
  statusCode: expect.any(Number),
  code: expect.stringMatching(/^RS_/),
  error: expect.any(String),
  message: expect.any(String),
};

describe('OpenAPI document and docs page', () => {
  it('serves the document generated from the zod schemas at /docs/json', async () => {
    const res = await (await app()).inject('/docs/json');
    expect(res.statusCode).toBe(200);
    const doc = res.json<{
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          {
            parameters?: { name: string; in: string }[];
            responses: Record<
              string,
              { description: string; content?: Record<string, { schema: Record<string, unknown> }> }
            >;
          }
        >
      >;
      components?: { schemas?: Record<string, unknown> };
    }>();
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/users/{id}/profile', '/healthz', '/readyz']));
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/docs'))).toEqual([]);

    const profile = doc.paths['/users/{id}/profile']?.['get'];
    expect(Object.keys(profile?.responses ?? {})).toEqual(
      expect.arrayContaining(['200', '304', '400', '404', '429', '503', '504']),
    );
    expect(profile?.responses['304']?.content).toBeUndefined();
    const ok = profile?.responses['200']?.content?.['application/json']?.schema;
    expect(ok).toMatchObject({
      type: 'object',
      required: expect.arrayContaining(['id', 'friends', 'likedPages', 'activity']),
    });
    expect(profile?.responses['404']?.content?.['application/json']?.schema).toMatchObject({
      required: ['statusCode', 'code', 'error', 'message'],
    });
    expect(profile?.parameters?.map((p) => `${p.in}:${p.name}`)).toEqual(
      expect.arrayContaining(['path:id', 'query:after', 'query:wait', 'header:if-none-match']),
    );
    expect(doc.paths['/readyz']?.['get']?.responses['503']).toBeDefined();

    // Every reference resolves inside the document.
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map(
      (m) => m[1] as string,
    );
    for (const ref of refs) expect(doc.components?.schemas?.[ref], ref).toBeDefined();
  });

  it('serves a docs page at /docs that needs no build step', async () => {
    const a = await app();
    const page = await a.inject('/docs');
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.body).toMatch(/swagger/i);
    const asset = await a.inject('/docs/static/swagger-ui-bundle.js');
    expect(asset.statusCode).toBe(200);
  });
});

describe('ETag and If-None-Match', () => {
  it('answers 304 with no body while the profile is unchanged, 200 with a new tag once it changes', async () => {
    const id = newUser();
    await xadd(apps.setup.streams.updates, 'user_id', id, 'command', 'register', 'name', 'Tag');
    const processor = await startProcessor();
    const a = await app();
    const first = await a.inject({
      url: `/users/${id}/profile?after=${apps.setup.streams.updates}:${await lastId(apps.setup.streams.updates)}`,
    });
    expect(first.statusCode).toBe(200);
    const etag = first.headers['etag'];
    expect(etag).toMatch(/^W\/"\d+-[A-Za-z0-9_-]+"$/);
    expect(first.headers['cache-control']).toBe('no-cache');

    const again = await a.inject({ url: `/users/${id}/profile`, headers: { 'if-none-match': String(etag) } });
    expect(again.statusCode).toBe(304);
    expect(again.body).toBe('');
    expect(again.headers['etag']).toBe(etag);
    for (const header of [`W/"other", ${String(etag)}`, '*', String(etag).replace(/^W\//, '')]) {
      expect(
        (await a.inject({ url: `/users/${id}/profile`, headers: { 'if-none-match': header } })).statusCode,
        header,
      ).toBe(304);
    }
    expect(
      (await a.inject({ url: `/users/${id}/profile`, headers: { 'if-none-match': 'W/"stale"' } })).statusCode,
    ).toBe(200);

    const liked = await xadd(apps.setup.streams.activity, 'user_id', id, 'command', 'like', 'page', 'P');
    const changed = await a.inject({
      url: `/users/${id}/profile?after=${apps.setup.streams.activity}:${liked}`,
      headers: { 'if-none-match': String(etag) },
    });
    expect(changed.statusCode).toBe(200);
    expect(changed.json()).toMatchObject({ likedPages: ['P'] });
    expect(changed.headers['etag']).not.toBe(etag);
    await processor.stop();
  });

  it('gives no tag to a 404', async () => {
    const res = await (await app()).inject({ url: `/users/${newUser()}/profile`, headers: { 'if-none-match': '*' } });
    expect(res.statusCode).toBe(404);
    expect(res.headers['etag']).toBeUndefined();
  });
});

async function lastId(stream: string): Promise<string> {
  const [entry] = await ctx.redis.xrevrange(stream, '+', '-', 'COUNT', 1);
  return entry?.[0] ?? '0-0';
}

describe('read your writes: ?after=<stream>:<entry id>', () => {
  it('waits until the snapshots have applied the entry, then answers with it', async () => {
    const id = newUser();
    const entryId = await xadd(apps.setup.streams.updates, 'user_id', id, 'command', 'register', 'name', 'Writer');
    const a = await app();
    expect((await a.inject(`/users/${id}/profile`)).statusCode).toBe(404);

    const started = Date.now();
    const pending = a.inject(`/users/${id}/profile?after=${apps.setup.streams.updates}:${entryId}&wait=8000`);
    await sleep(150);
    await startProcessor();
    const res = await pending;
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ id, name: 'Writer' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
  });

  it('answers at once when the snapshots are already past the entry', async () => {
    const id = newUser();
    const entryId = await xadd(apps.setup.streams.updates, 'user_id', id, 'command', 'register', 'name', 'Early');
    await startProcessor();
    const a = await app();
    expect(
      (await a.inject(`/users/${id}/profile?after=${apps.setup.streams.updates}:${entryId}&wait=5000`)).statusCode,
    ).toBe(200);
    const started = Date.now();
    const res = await a.inject(`/users/${id}/profile?after=${apps.setup.streams.updates}:1-0&wait=0`);
    expect(res.statusCode).toBe(200);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('answers 504 RS_NOT_CAUGHT_UP with Retry-After when the wait runs out', async () => {
    const id = newUser();
    const entryId = await xadd(apps.setup.streams.friends, 'user_id', id, 'command', 'add', 'friend_id', 'x1');
    const a = await app();
    const started = Date.now();
    const res = await a.inject(
      `/users/${id}/profile?after=${encodeURIComponent(`${apps.setup.streams.friends}:${entryId}`)}&wait=200`,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(res.statusCode).toBe(504);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.json()).toEqual({ ...ERROR_SHAPE, statusCode: 504, code: 'RS_NOT_CAUGHT_UP', error: 'Gateway Timeout' });
    expect(res.json<{ message: string }>().message).toContain(entryId);
  });

  it('validates after (a configured stream, an entry id) and wait (0-10000)', async () => {
    const a = await app();
    const bad = [
      'after=nope:1700000000000-0',
      `after=${apps.setup.streams.updates}`,
      `after=${apps.setup.streams.updates}:abc`,
      `after=${apps.setup.streams.updates}:1700000000000`,
      `after=${apps.setup.streams.updates}:1-0&wait=10001`,
      `after=${apps.setup.streams.updates}:1-0&wait=-1`,
      `after=${apps.setup.streams.updates}:1-0&wait=soon`,
    ];
    for (const query of bad) {
      const res = await a.inject(`/users/1/profile?${query}`);
      expect(res.statusCode, query).toBe(400);
      expect(res.json(), query).toEqual({ ...ERROR_SHAPE, statusCode: 400, code: 'RS_BAD_REQUEST' });
    }
    const unknown = await a.inject('/users/1/profile?after=nope:1700000000000-0');
    expect(unknown.json<{ message: string }>().message).toContain(apps.setup.streams.updates);
  });
});

describe('request ids', () => {
  it('echoes a safe incoming x-request-id, replaces an unsafe one, and logs with it', async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) });
    // debug: a probe's request lines are debug (request-log.ts).
    const a = await app({ logger: pino({ level: 'debug' }, sink) });

    const fresh = await a.inject('/healthz');
    expect(fresh.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);

    const kept = await a.inject({ url: '/healthz', headers: { 'x-request-id': 'client-42.abc:1' } });
    expect(kept.headers['x-request-id']).toBe('client-42.abc:1');
    expect(lines.some((l) => (JSON.parse(l) as { reqId?: string }).reqId === 'client-42.abc:1')).toBe(true);

    for (const unsafe of ['has space', 'x'.repeat(129), 'a"b', '<script>']) {
      const res = await a.inject({ url: '/healthz', headers: { 'x-request-id': unsafe } });
      expect(res.headers['x-request-id'], unsafe).toMatch(/^[0-9a-f-]{36}$/);
    }
    const missing = await a.inject({ url: '/nope', headers: { 'x-request-id': 'on-errors-too' } });
    expect(missing.statusCode).toBe(404);
    expect(missing.headers['x-request-id']).toBe('on-errors-too');
  });
});

describe('CORS', () => {
  it('sends no CORS headers when CORS_ORIGIN is unset', async () => {
    const a = await app(edgeOptions(loadConfig({})));
    const res = await a.inject({ url: '/healthz', headers: { origin: 'https://app.example' } });
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('allows exactly the listed origins', async () => {
    const a = await app(edgeOptions(loadConfig({ CORS_ORIGIN: 'https://app.example, http://localhost:5173' })));
    const allowed = await a.inject({ url: '/users/1/profile', headers: { origin: 'http://localhost:5173' } });
    expect(allowed.headers['access-control-allow-origin']).toBe('http://localhost:5173');
    expect(String(allowed.headers['access-control-expose-headers'])).toMatch(/etag/i);
    expect(String(allowed.headers['vary'])).toMatch(/origin/i);
    const other = await a.inject({ url: '/users/1/profile', headers: { origin: 'https://evil.example' } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const preflight = await a.inject({
      method: 'OPTIONS',
      url: '/users/1/profile',
      headers: {
        origin: 'https://app.example',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'if-none-match',
      },
    });
    expect(preflight.statusCode).toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(String(preflight.headers['access-control-allow-methods'])).toContain('GET');
  });

  it('allows any origin with *', async () => {
    const a = await app(edgeOptions(loadConfig({ CORS_ORIGIN: '*' })));
    const res = await a.inject({ url: '/healthz', headers: { origin: 'https://anyone.example' } });
    expect(res.headers['access-control-allow-origin']).toBe('*');
  });

  it('refuses a malformed CORS_ORIGIN at start', () => {
    for (const bad of ['app.example', 'https://app.example/', 'https://a.example,', 'ftp://x']) {
      expect(() => loadConfig({ CORS_ORIGIN: bad }), bad).toThrow(/CORS_ORIGIN/);
    }
  });
});

describe('rate limiting', () => {
  it('answers 429 in the API error shape past RATE_LIMIT_MAX per window, per client address', async () => {
    const a = await app(edgeOptions(loadConfig({ RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })));
    for (let i = 0; i < 3; i++) expect((await a.inject('/users/1/profile')).statusCode).not.toBe(429);
    const limited = await a.inject({ url: '/users/1/profile', headers: { 'x-request-id': 'limited-1' } });
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toEqual({
      ...ERROR_SHAPE,
      statusCode: 429,
      code: 'RS_RATE_LIMITED',
      error: 'Too Many Requests',
    });
    expect(limited.headers['retry-after']).toBeDefined();
    expect(limited.headers['x-request-id']).toBe('limited-1');
    // Another address has its own budget; probes are never limited.
    expect((await a.inject({ url: '/users/1/profile', remoteAddress: '10.9.8.7' })).statusCode).not.toBe(429);
    expect((await a.inject('/healthz')).statusCode).toBe(200);
    expect((await a.inject('/readyz')).statusCode).toBe(200);
  });

  it('is off by default (RATE_LIMIT_MAX=0) and on with a RATE_LIMIT_MAX', async () => {
    const defaults = loadConfig({});
    expect([defaults.RATE_LIMIT_MAX, defaults.RATE_LIMIT_WINDOW_MS]).toEqual([0, 1000]);
    const on = await app(edgeOptions(loadConfig({ RATE_LIMIT_MAX: '1000' })));
    expect((await on.inject('/users/1/profile')).headers['x-ratelimit-limit']).toBe('1000');
    const off = await app(edgeOptions(defaults));
    for (let i = 0; i < 20; i++) {
      const res = await off.inject('/users/1/profile');
      expect(res.statusCode).not.toBe(429);
      expect(res.headers['x-ratelimit-limit']).toBeUndefined();
    }
    expect(() => loadConfig({ RATE_LIMIT_MAX: '-1' })).toThrow(/RATE_LIMIT_MAX/);
    expect(() => loadConfig({ RATE_LIMIT_WINDOW_MS: '0' })).toThrow(/RATE_LIMIT_WINDOW_MS/);
  });
});

describe('graceful shutdown', () => {
  it('lets an in-flight request finish; a request arriving during close gets a 503 in the API error shape', async () => {
    const id = newUser();
    const entryId = await xadd(apps.setup.streams.updates, 'user_id', id, 'command', 'register', 'name', 'Lingering');
    const a = await buildApp({
      snapshots: apps.setup.snapshots,
      readiness: async () => ({ redis: true, processor: true }),
      streams: apps.streams,
    });
    await a.listen({ port: 0, host: '127.0.0.1' });
    const address = a.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;

    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString()));
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(
      `GET /users/${id}/profile?after=${apps.setup.streams.updates}:${entryId}&wait=8000 HTTP/1.1\r\nHost: test\r\n\r\n`,
    );
    await sleep(150);

    let closed = false;
    const closing = a.close().then(() => (closed = true));
    await sleep(50);
    // Pipelined on the busy connection: it reaches the app while it is closing.
    socket.write('GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n');
    await sleep(150);
    expect(closed).toBe(false);
    expect(received).toBe('');

    await startProcessor();
    await closing;
    await Promise.race([ended, sleep(2_000)]);
    socket.destroy();

    const responses = received.split(/(?=HTTP\/1\.1 )/);
    expect(responses[0]).toMatch(/^HTTP\/1\.1 200/);
    expect(responses[0]).toContain('"name":"Lingering"');
    expect(responses[1]).toMatch(/^HTTP\/1\.1 503/);
    const body = JSON.parse((responses[1] ?? '').slice((responses[1] ?? '').indexOf('\r\n\r\n') + 4)) as unknown;
    expect(body).toEqual({ ...ERROR_SHAPE, statusCode: 503, code: 'RS_UNAVAILABLE', error: 'Service Unavailable' });
  });
});

describe('error bodies', () => {
  it('keep the one shape for errors Fastify raises itself', async () => {
    const a = await app();
    const badUrl = await a.inject({ url: '/users/%E0%A4%A/profile', headers: { 'x-request-id': 'bad-url-1' } });
    expect(badUrl.statusCode).toBe(400);
    expect(badUrl.json()).toEqual({ ...ERROR_SHAPE, statusCode: 400, code: 'RS_BAD_REQUEST', error: 'Bad Request' });
    expect(badUrl.headers['x-request-id']).toBe('bad-url-1');
    const badJson = await a.inject({
      method: 'POST',
      url: '/users/1/profile',
      headers: { 'content-type': 'application/json' },
      payload: '{',
    });
    expect(badJson.json()).toEqual({ ...ERROR_SHAPE, statusCode: 400 });
    const badWait = await a.inject('/users/1/profile?wait=soon');
    expect(badWait.json<{ message: string }>().message).toMatch(/^wait must be/);
  });
});
