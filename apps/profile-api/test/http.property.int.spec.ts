/**
 * The HTTP surface, property-based (fast-check, app.inject against real Redis): arbitrary ids,
 * query strings, headers and methods. Every answer is a documented status; every error has the
 * documented body `{statusCode, code, error, message}` with a catalogue code; nothing is a 500.
 */
import { STATUS_CODES } from 'node:http';
import fc from 'fast-check';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SNAPSHOT_ID } from '@redsource/snapshot-store';
import { buildApp } from '../src/http/app.ts';
import { anyBytes, anyName, PROTOTYPE_NAMES } from '../../../test/support/arbitraries.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { xaddAll } from '../../../test/support/model.ts';
import { useTestRedis } from '../../../test/support/redis.ts';

const ctx = useTestRedis();
let app: FastifyInstance;
let setup: ReturnType<typeof isolatedProfileSetup>;
const USERS = ['1', '2', 'constructor', '__proto__'];
const CODES = new Set([
  'RS_BAD_REQUEST',
  'RS_NOT_FOUND',
  'RS_RATE_LIMITED',
  'RS_UNAVAILABLE',
  'RS_NOT_CAUGHT_UP',
  'RS_INTERNAL',
]);
const WAIT = /^\d{1,5}$/;

beforeAll(async () => {
  setup = isolatedProfileSetup(ctx.redis);
  app = await buildApp({
    snapshots: setup.snapshots,
    readiness: async () => ({ redis: true, processor: true }),
    streams: [setup.streams.updates, setup.streams.activity],
  });
  await xaddAll(ctx.redis, [
    ...USERS.map((u): [string, ...string[]] => [
      setup.streams.updates,
      'user_id',
      u.replace(/[^A-Za-z0-9_-]/g, '_'),
      'command',
      'register',
      'name',
      `N${u}`,
    ]),
    [setup.streams.activity, 'user_id', '1', 'command', 'toString'],
  ]);
  const processor = setup.processor(ctx.server.client());
  await processor.start();
  for (let i = 0; i < 200 && (await setup.snapshots.totals(setup.streams.activity)).applied < 1; i++)
    await new Promise((r) => setTimeout(r, 20));
  await processor.stop();
});
afterAll(async () => {
  await app.close();
});

const existing = () => USERS.map((u) => u.replace(/[^A-Za-z0-9_-]/g, '_'));
const percent = (bytes: Buffer) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');
/** The text a percent-encoded path segment or query value stands for, or undefined when its bytes are not UTF-8. */
const decodedOf = (bytes: Buffer) =>
  Buffer.from(bytes.toString('utf8'), 'utf8').equals(bytes) ? bytes.toString('utf8') : undefined;

/** A documented answer: a documented status, and for an error the one body shape with a catalogue code. */
function expectDocumented(res: LightMyRequestResponse, allowed: readonly number[], what: string): void {
  expect(allowed, `${what}: ${res.statusCode} ${res.body.slice(0, 300)}`).toContain(res.statusCode);
  if (res.statusCode < 400) return;
  expect(res.headers['content-type'], what).toMatch(/^application\/json/);
  const body = JSON.parse(res.body) as Record<string, unknown>;
  expect(Object.keys(body).sort(), what).toEqual(['code', 'error', 'message', 'statusCode']);
  expect(body['statusCode'], what).toBe(res.statusCode);
  expect(CODES.has(String(body['code'])), `${what}: code ${String(body['code'])}`).toBe(true);
  expect(body['error'], what).toBe(STATUS_CODES[res.statusCode]);
  expect(typeof body['message'] === 'string' && body['message'].length > 0, what).toBe(true);
}

describe('GET /users/:id/profile, property-based', () => {
  it('any id, percent-encoded from any bytes or written raw: 200 for a user, 404 for none, 400 for a malformed one', async () => {
    const rawId = fc.oneof(
      fc.constantFrom(...existing(), ...PROTOTYPE_NAMES, '..', '.', '%', '%zz', '*'),
      fc.stringMatching(/^[A-Za-z0-9_~.!$&'()*+,;=:@-]{1,80}$/),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          anyBytes(70).map((b) => ({ path: percent(b), id: decodedOf(b) })),
          rawId.map((id) => ({ path: id, id: /%/.test(id) ? undefined : id })),
        ),
        async ({ path, id }) => {
          const res = await app.inject({ method: 'GET', url: `/users/${path}/profile` });
          const what = `GET /users/${path}/profile`;
          if (id !== undefined && SNAPSHOT_ID.test(id)) {
            expectDocumented(res, existing().includes(id) ? [200] : [404], what);
            if (res.statusCode === 200) expect((JSON.parse(res.body) as { id: string }).id).toBe(id);
          } else {
            // A dot segment is resolved away by URL rules: no such route.
            expectDocumented(res, id === undefined || id === '.' || id === '..' ? [400, 404] : [400], what);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('any query string: after and wait are validated (wait: decimal digits, at most 10000), the rest ignored', async () => {
    const entry = fc.constantFrom('0-1', '1-0', '0-0', 'x', '1', '1-', '-1', '99999999999999999999-0');
    const stream = fc.constantFrom(setup.streams.updates, setup.streams.activity, setup.streams.friends, 'nope', '');
    const after = fc.oneof(
      fc.tuple(stream, entry).map(([s, e]) => `${s}:${e}`),
      anyName(),
    );
    const wait = fc.oneof(
      fc.constantFrom('0', '10', '0x10', '1e3', '', ' 5', '-1', '10001', '010', '99999', '1.5', '+1'),
      fc.string({ maxLength: 6 }),
    );
    const key = fc.oneof(fc.constantFrom('after', 'wait'), anyName());
    const pair = fc.oneof(
      fc.tuple(fc.constant('after'), after),
      fc.tuple(fc.constant('wait'), wait),
      fc.tuple(key, anyName()),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(pair, { maxLength: 4 }), async (pairs) => {
        const query = pairs.map(([k, v]) => `${encode(k)}=${encode(v)}`).join('&');
        const res = await app.inject({ method: 'GET', url: `/users/1/profile?${query}` });
        const what = `?${query}`;
        const values = (name: string) => pairs.filter(([k]) => k === name).map(([, v]) => v);
        const waits = values('wait');
        const afters = values('after');
        const badWait =
          waits.length > 1 || (waits.length === 1 && !(WAIT.test(waits[0] as string) && Number(waits[0]) <= 10_000));
        // An entry id's two parts are unsigned 64-bit numbers, as Redis has them.
        const fits64 = (part: string) => BigInt(part) <= 18446744073709551615n;
        const goodAfter = (v: string) => {
          const [, stream, ms, seq] = /^(.+):(\d{1,20})-(\d{1,20})$/.exec(v) ?? [];
          return (
            (stream === setup.streams.updates || stream === setup.streams.activity) &&
            fits64(ms ?? '') &&
            fits64(seq ?? '')
          );
        };
        const badAfter = afters.length > 1 || (afters.length === 1 && !goodAfter(afters[0] as string));
        // A valid `after` here names an entry at or below the cursor, or one far ahead with some wait: 200 or 504.
        expectDocumented(res, badWait || badAfter ? [400] : afters.length === 1 ? [200, 504] : [200], what);
      }),
      { numRuns: 300, interruptAfterTimeLimit: 30_000 },
    );
  }, 45_000);

  it('any headers (If-None-Match and x-request-id included): 200 or 304 with the documented shape, a safe request id echoed', async () => {
    const token = fc
      .stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}$/)
      .filter(
        (n) =>
          !['host', 'content-length', 'transfer-encoding', 'connection', 'expect', 'upgrade'].includes(n.toLowerCase()),
      );
    const value = fc.stringMatching(/^[\t\x20-\x7e\x80-\xff]{0,200}$/).map((v) => v.trim());
    const header = fc.oneof(
      fc.tuple(token, value),
      fc.tuple(
        fc.constantFrom(
          'if-none-match',
          'x-request-id',
          'accept',
          'accept-encoding',
          'content-type',
          'origin',
          'x-forwarded-for',
          'cookie',
          'authorization',
        ),
        value,
      ),
    );
    const first = await app.inject({ method: 'GET', url: '/users/1/profile' });
    const etag = String(first.headers['etag']);
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(header, { selector: ([n]) => n.toLowerCase(), maxLength: 6 }),
        fc.boolean(),
        async (pairs, withTag) => {
          const headers: Record<string, string> = Object.create(null) as Record<string, string>;
          for (const [n, v] of pairs) headers[n] = v;
          if (withTag) headers['if-none-match'] = etag;
          const res = await app.inject({ method: 'GET', url: '/users/1/profile', headers });
          const what = JSON.stringify(headers);
          const noneMatch = headers['if-none-match'];
          const hits =
            noneMatch !== undefined &&
            (noneMatch.trim() === '*' ||
              noneMatch
                .split(',')
                .map((t) => t.trim())
                .includes(etag));
          expectDocumented(res, hits ? [304] : [200, 304], what);
          const given = Object.keys(headers).find((n) => n.toLowerCase() === 'x-request-id');
          const echoed = String(res.headers['x-request-id']);
          if (given && /^[A-Za-z0-9._:-]{1,128}$/.test(headers[given] as string))
            expect(echoed, what).toBe(headers[given]);
          else expect(echoed, what).toMatch(/^[0-9a-f-]{36}$/);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('any method on any path: a documented status, errors in the documented shape, never a 500', async () => {
    const segment = fc.oneof(
      fc.constantFrom('users', '1', 'profile', 'docs', 'healthz', 'readyz', 'metrics', 'dashboard', '..', ''),
      anyBytes(8).map(percent),
      fc.stringMatching(/^[A-Za-z0-9._~-]{0,12}$/),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'),
        fc.array(segment, { minLength: 1, maxLength: 4 }),
        fc.option(fc.string({ maxLength: 50 })),
        async (method, segments, body) => {
          const url = `/${segments.join('/')}`;
          const res = await app.inject({
            method,
            url,
            ...(body === null ? {} : { payload: body, headers: { 'content-type': 'application/json' } }),
          });
          if (method === 'HEAD') expect(res.statusCode, `${method} ${url}`).not.toBe(500);
          else
            expectDocumented(
              res,
              [200, 204, 301, 302, 304, 400, 404, 405, 415, 503],
              `${method} ${url} ${String(body)}`,
            );
        },
      ),
      { numRuns: 300 },
    );
  });
});

/** Percent-encodes every byte that is not unreserved (a lone surrogate, which encodeURIComponent refuses, as U+FFFD). */
function encode(text: string): string {
  return percent(Buffer.from(text, 'utf8')).replace(
    /%([46][1-9A-F]|[57][0-9A]|3[0-9]|2D|2E|5F|7E)/g,
    (_, hex: string) => String.fromCharCode(parseInt(hex, 16)),
  );
}
