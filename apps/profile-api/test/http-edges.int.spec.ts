import net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { SnapshotStore } from '@redsource/snapshot-store';
import { loadConfig } from '../src/config.ts';
import { edgeOptions } from '../src/http/edge.ts';
import { connectRedis } from '../src/runtime/redis.ts';
import { startTestRedis, unique, useTestRedis } from '../../../test/support/redis.ts';
import { useProfileApps } from './app-harness.ts';

const ctx = useTestRedis();
const apps = useProfileApps(ctx);
const app = (options?: Parameters<typeof apps.app>[0]) => apps.app(options);

const ERROR_SHAPE = {
  statusCode: expect.any(Number),
  code: expect.stringMatching(/^RS_/),
  error: expect.any(String),
  message: expect.any(String),
};

/** Sends raw bytes to a listening app; resolves with everything it answered before closing. */
async function rawRequest(
  a: FastifyInstance,
  bytes: string,
): Promise<{ status: number; headers: string; body: unknown }> {
  if (!a.server.listening) await a.listen({ port: 0, host: '127.0.0.1' });
  const address = a.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const received = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.once('close', () => resolve(text));
    socket.once('error', reject);
    socket.setTimeout(5_000, () => socket.destroy());
  });
  const split = received.indexOf('\r\n\r\n');
  const head = received.slice(0, split);
  return {
    status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]),
    headers: head,
    body: JSON.parse(received.slice(split + 4)) as unknown,
  };
}

describe('rate limiting', () => {
  it('is off by default: a busy caller from one address is never throttled', async () => {
    expect(loadConfig({}).RATE_LIMIT_MAX).toBe(0);
    const a = await app(edgeOptions(loadConfig({})));
    for (let i = 0; i < 1_200; i++) {
      const res = await a.inject('/users/1/profile');
      if (res.statusCode === 429) expect.fail(`request ${i} was rate limited`);
      expect(res.headers['x-ratelimit-limit']).toBeUndefined();
    }
  });

  it('when on, covers every route not exempt: /docs*, unknown URLs (404) and the profile route', async () => {
    const a = await app(edgeOptions(loadConfig({ RATE_LIMIT_MAX: '2', RATE_LIMIT_WINDOW_MS: '60000' })));
    for (const url of ['/docs', '/docs/json', '/docs/static/swagger-ui.css', '/no/such/url', '/users/1/profile']) {
      const remoteAddress = `10.0.0.${url.length}`;
      const first = await a.inject({ url, remoteAddress });
      expect(first.statusCode, url).not.toBe(429);
      expect(first.headers['x-ratelimit-limit'], url).toBe('2');
      await a.inject({ url, remoteAddress });
      const limited = await a.inject({ url, remoteAddress });
      expect(limited.statusCode, url).toBe(429);
      expect(limited.json(), url).toEqual({ ...ERROR_SHAPE, statusCode: 429, code: 'RS_RATE_LIMITED' });
    }
    // The exempt ones stay exempt.
    for (const url of ['/healthz', '/readyz', '/metrics', '/dashboard']) {
      for (let i = 0; i < 4; i++)
        expect((await a.inject({ url, remoteAddress: '10.0.1.1' })).statusCode, url).not.toBe(429);
    }
  });
});

describe("errors from Node's HTTP parser answer the documented error body", () => {
  it('431 for headers too large, 400 for an unknown method and for a malformed header', async () => {
    const a = await app();
    const huge = await rawRequest(a, `GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(huge.status).toBe(431);
    expect(huge.body).toEqual({
      ...ERROR_SHAPE,
      statusCode: 431,
      code: 'RS_BAD_REQUEST',
      error: 'Request Header Fields Too Large',
    });
    expect(huge.headers).toMatch(/content-type: application\/json/i);

    const method = await rawRequest(a, 'FROB /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
    expect(method.status).toBe(400);
    expect(method.body).toEqual({ ...ERROR_SHAPE, statusCode: 400, code: 'RS_BAD_REQUEST', error: 'Bad Request' });

    const header = await rawRequest(a, 'GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n');
    expect(header.status).toBe(400);
    expect(header.body).toEqual({ ...ERROR_SHAPE, statusCode: 400, code: 'RS_BAD_REQUEST' });
  });
});

describe('read your writes: wait', () => {
  it('accepts decimal integers only', async () => {
    const a = await app();
    const after = `after=${apps.setup.streams.updates}:1-0`;
    for (const wait of ['0x10', '1e3', '', ' 5', '5.0', '+5', '-0', '10001', '1&wait=2']) {
      const res = await a.inject(`/users/1/profile?${after}&wait=${wait}`);
      expect(res.statusCode, `wait=${wait}`).toBe(400);
      expect(res.json(), wait).toEqual({ ...ERROR_SHAPE, statusCode: 400, code: 'RS_BAD_REQUEST' });
      expect(res.json<{ message: string }>().message, wait).toMatch(/wait must be/);
    }
    // Valid: the wait runs out (504), nothing is refused.
    for (const wait of ['0', '10', '010'])
      expect((await a.inject(`/users/1/profile?${after}&wait=${wait}`)).statusCode, wait).toBe(504);
  });

  it('answers 503 RS_UNAVAILABLE within about the wait when Redis is down', async () => {
    const own = await startTestRedis();
    const redis = connectRedis(own.url, unique('rwy'));
    redis.on('error', () => undefined);
    try {
      const snapshots = new SnapshotStore({ redis, keyPrefix: `${unique('snap')}_`, projection: 'profiles' });
      const a = await app({ snapshots });
      expect((await a.inject(`/users/1/profile?after=${apps.setup.streams.updates}:1-0&wait=0`)).statusCode).toBe(504);
      await own.stop('SIGKILL');
      for (const wait of [500, 0]) {
        const started = Date.now();
        const res = await a.inject(`/users/1/profile?after=${apps.setup.streams.updates}:1-0&wait=${wait}`);
        const took = Date.now() - started;
        expect(res.statusCode, `wait=${wait}: ${res.body}`).toBe(503);
        expect(res.json()).toEqual({
          ...ERROR_SHAPE,
          statusCode: 503,
          code: 'RS_UNAVAILABLE',
          error: 'Service Unavailable',
        });
        expect(took, `wait=${wait}`).toBeLessThan(wait + 1_000);
      }
      // close() would stop it again: a stopped server's second stop waits for an exit already seen.
      await own.restart();
    } finally {
      redis.disconnect();
      await own.close();
    }
  });
});
