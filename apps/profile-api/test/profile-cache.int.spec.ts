import { describe, expect, it } from 'vitest';
import { useTestRedis } from '../../../test/support/redis.ts';
import { ProfileCache } from '../src/http/profile-cache.ts';
import { useProfileApps } from './app-harness.ts';

const ctx = useTestRedis();
const apps = useProfileApps(ctx);

let users = 0;
const newUser = () => `c${process.pid}_${++users}_${Date.now() % 100_000}`;

const startProcessor = () => apps.startProcessor();

/** XADDs a flat entry and returns the read-your-writes query that waits for it. */
async function append(stream: string, ...fields: string[]): Promise<string> {
  return `?after=${stream}:${String(await ctx.redis.xadd(stream, '*', ...fields))}`;
}

describe('rendered profiles kept by the API (PROFILE_CACHE_SIZE)', () => {
  it('sends a kept rendering while the snapshot version holds, and reads anew after a change, a rebuild or a recreation', async () => {
    const { streams, snapshots } = apps.setup;
    const id = newUser();
    const key = snapshots.key(id);
    const processor = await startProcessor();
    const app = await apps.app();
    const get = async (query = '') => {
      const res = await app.inject(`/users/${id}/profile${query}`);
      return { status: res.statusCode, name: (res.json<{ name?: string }>() ?? {}).name, etag: res.headers['etag'] };
    };

    const registered = await get(await append(streams.updates, 'user_id', id, 'command', 'register', 'name', 'First'));
    expect(registered).toMatchObject({ status: 200, name: 'First' });
    const [incarnation, revision] = await ctx.redis.hmget(key, '_inc', '_rev');
    expect(incarnation).toMatch(/^\d+\.\d+$/);
    expect(revision).toBe('1');

    // Written behind redsource's back (no new revision): the kept rendering is what is sent, which is
    // how this test tells it is kept at all.
    await ctx.redis.hset(key, 'f:name', '"Sneaked"');
    expect(await get()).toEqual(registered);

    // 1. A change through an event: a new revision, read anew.
    const updated = await get(await append(streams.updates, 'user_id', id, 'command', 'update', 'name', 'Second'));
    expect(updated).toMatchObject({ status: 200, name: 'Second' });
    expect(updated.etag).not.toBe(registered.etag);
    expect(await ctx.redis.hget(key, '_inc')).toBe(incarnation);

    // 2. A rebuild switches in another hash (RENAME, as switch-snapshot.lua) with the same revision
    // and other content: its own incarnation tells them apart.
    const shadow = `${key}_shadow_test`;
    await ctx.redis.hset(
      shadow,
      '_exists',
      '1',
      '_rev',
      String(await ctx.redis.hget(key, '_rev')),
      'f:name',
      '"Rebuilt"',
    );
    await ctx.redis.hset(shadow, '_inc', 'rebuilt.1');
    await ctx.redis.rename(shadow, key);
    expect(await get()).toMatchObject({ status: 200, name: 'Rebuilt' });

    // 3. Deleted (a rebuild's unlink, projection.remove) and made anew from revision 1, while the
    // rendering of another revision 1 is kept: the new hash's new incarnation tells them apart.
    const other = newUser();
    const otherKey = snapshots.key(other);
    const first = await app.inject(
      `/users/${other}/profile${await append(streams.updates, 'user_id', other, 'command', 'register', 'name', 'Before')}`,
    );
    expect(first.json()).toMatchObject({ name: 'Before' });
    const before = await ctx.redis.hmget(otherKey, '_inc', '_rev');
    await ctx.redis.del(otherKey);
    expect((await app.inject(`/users/${other}/profile`)).statusCode).toBe(404);
    const again = await app.inject(
      `/users/${other}/profile${await append(streams.updates, 'user_id', other, 'command', 'register', 'name', 'After')}`,
    );
    expect(again.json()).toMatchObject({ name: 'After' });
    const after = await ctx.redis.hmget(otherKey, '_inc', '_rev');
    expect(after[1]).toBe(before[1]);
    expect(after[0]).toMatch(/^\d+\.\d+$/);
    expect(after[0]).not.toBe(before[0]);
    await processor.stop();
  });

  it('never keeps the rendering of a hash without an incarnation (written before incarnations existed)', async () => {
    const id = newUser();
    const key = apps.setup.snapshots.key(id);
    await ctx.redis.hset(key, '_exists', '1', '_rev', '4', 'f:name', '"Old"');
    const app = await apps.app();
    expect((await app.inject(`/users/${id}/profile`)).json()).toMatchObject({ name: 'Old' });
    await ctx.redis.hset(key, 'f:name', '"Older"');
    expect((await app.inject(`/users/${id}/profile`)).json()).toMatchObject({ name: 'Older' });
  });

  it('keeps nothing with a size of 0', async () => {
    const id = newUser();
    const key = apps.setup.snapshots.key(id);
    await ctx.redis.hset(key, '_exists', '1', '_rev', '1', '_inc', 'x.1', 'f:name', '"A"');
    const app = await apps.app({ profileCacheMb: 0 });
    expect((await app.inject(`/users/${id}/profile`)).json()).toMatchObject({ name: 'A' });
    await ctx.redis.hset(key, 'f:name', '"B"');
    expect((await app.inject(`/users/${id}/profile`)).json()).toMatchObject({ name: 'B' });
  });
});

describe('ProfileCache', () => {
  const version = (incarnation: string | undefined, revision = '1') => ({ incarnation, revision });
  const rendered = (body: string) => ({ body, etag: `W/"${body}"` });

  it('gives a rendering back for exactly the version it was made from', () => {
    const cache = new ProfileCache(1_000);
    cache.set('a', version('i.1', '3'), rendered('A'));
    expect(cache.holds('a')).toBe(true);
    expect(cache.holds('b')).toBe(false);
    expect(cache.get('a', version('i.1', '3'))).toMatchObject(rendered('A'));
    expect(cache.get('a', version('i.1', '4'))).toBeUndefined();
    expect(cache.get('a', version('i.2', '3'))).toBeUndefined();
    expect(cache.get('a', version(undefined, '3'))).toBeUndefined();
    expect(cache.get('b', version('i.1', '3'))).toBeUndefined();
  });

  it('drops the oldest renderings past its bytes, keeps none at 0, no body over an eighth of it, and none without an incarnation', () => {
    const body = (c: string) => c.repeat(100);
    // Each entry: a 100-byte body and its 104-byte etag. Room for 8 of them, no more.
    const cache = new ProfileCache(1_640);
    for (const id of 'abcdefgh') cache.set(id, version('i.1'), rendered(body(id)));
    expect(cache.size).toBe(8);
    cache.set('a', version('i.1', '2'), rendered(body('A')));
    cache.set('i', version('i.1'), rendered(body('i')));
    expect(cache.size).toBe(8);
    expect(cache.keptBytes).toBeLessThanOrEqual(1_640);
    expect(cache.get('b', version('i.1'))).toBeUndefined();
    expect(cache.get('a', version('i.1', '2'))).toMatchObject(rendered(body('A')));
    expect(cache.get('i', version('i.1'))).toMatchObject(rendered(body('i')));
    cache.set('big', version('i.1'), rendered('x'.repeat(300)));
    expect(cache.get('big', version('i.1'))).toBeUndefined();
    cache.set('d', version(undefined), rendered('D'));
    expect(cache.get('d', version(undefined))).toBeUndefined();
    const none = new ProfileCache(0);
    none.set('a', version('i.1'), rendered('A'));
    expect(none.size).toBe(0);
  });
});
