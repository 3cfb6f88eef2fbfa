import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { RedisEventStore, scanKeys } from '@redsource/event-store';
import {
  HandlerRegistry,
  processorKeys,
  rebuildState,
  RebuildRunningError,
  replay,
  StreamProcessor,
  type ReplayOptions,
} from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../../../apps/profile-api/src/domain/handlers.ts';
import { FencedWrites } from '../src/fenced-writes.ts';
import { tryAcquireRebuildLease } from '../src/rebuild-lease.ts';
import { RebuildKeyPrefixError } from '../src/errors.ts';
import { shadowNaming } from '../src/replay.ts';
import { keySlot, useTestCluster } from '../../../test/support/cluster.ts';
import { cursorsAtEnd } from '../../../test/support/backlog.ts';
import { eventually, unique } from '../../../test/support/redis.ts';
import { prng, randomCommands, referenceFold, type RawCommand } from '../../../test/support/model.ts';
import { rejection } from '../../../test/support/rejection.ts';
import { RebuildLeaseLostError } from '../src/errors.ts';

/**
 * `replay` on a 3-master Redis Cluster with an ioredis Cluster client, while a StreamProcessor (on a
 * Cluster client too) keeps applying appends: the zero-downtime rebuild ends with every snapshot
 * equal to the pure fold, as on one Redis. Shadow hashes share their live keys' slots (the RENAME),
 * SCAN covers every master, and the fencing that one script checks on one Redis is checked per
 * slot: a rebuild that lost its lease and was taken over changes nothing.
 */
const ctx = useTestCluster();
const processors: StreamProcessor[] = [];
const children: ReturnType<typeof spawn>[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await exited;
    }
  }
  await Promise.all(processors.splice(0).map((p) => p.stop()));
});

const client = () => ctx.cluster.client() as unknown as Redis;

function clusterSetup(setup: { keyPrefix?: string } = {}) {
  const redis = client();
  const streams: ProfileStreams = {
    updates: unique('user_updates'),
    activity: unique('user_activity'),
    friends: unique('user_friends'),
  };
  const keyPrefix = setup.keyPrefix ?? `${unique('user_snapshot')}_`;
  const eventStore = new RedisEventStore({ redis, catalog: profileCatalog(streams) });
  const snapshots = new SnapshotStore({ redis, keyPrefix, projection: 'profiles' });
  const handlers = profileHandlers(streams);
  const group = unique('group');
  const partitioning = { group, partitions: 12 };
  const startProcessor = async () => {
    const own = client();
    const processor = new StreamProcessor({
      redis: own,
      eventStore: new RedisEventStore({ redis: own, catalog: profileCatalog(streams) }),
      snapshots: new SnapshotStore({ redis: own, keyPrefix, projection: 'profiles' }),
      handlers,
      group,
      blockMs: 100,
      gapFillAfterMs: 200,
      partitions: partitioning.partitions,
    });
    processors.push(processor);
    await processor.start();
    return processor;
  };
  const differences = async () => profileDifferences(snapshots, await referenceFold(eventStore, streams));
  const settled = async () => (await differences()).length === 0;
  const quiet = () =>
    cursorsAtEnd(redis, snapshots, [streams.updates, streams.activity, streams.friends], partitioning.partitions);
  const options = (extra: Partial<ReplayOptions> = {}): ReplayOptions => ({
    redis,
    eventStore,
    snapshots,
    handlers,
    pageSize: 50,
    partitioning,
    ...extra,
  });
  const allStreams = [streams.updates, streams.activity, streams.friends];
  return {
    redis,
    streams,
    allStreams,
    keyPrefix,
    eventStore,
    snapshots,
    handlers,
    group,
    startProcessor,
    differences,
    settled,
    quiet,
    options,
  };
}
type Setup = ReturnType<typeof clusterSetup>;

/** XADDs in chunks sent together (one stream's entries keep their order: one connection per node), pausing between chunks. */
async function append(redis: Redis, commands: readonly RawCommand[], { chunk = 200, pauseMs = 0 } = {}): Promise<void> {
  for (let i = 0; i < commands.length; i += chunk) {
    await Promise.all(commands.slice(i, i + chunk).map(([stream, ...fields]) => redis.xadd(stream, '*', ...fields)));
    if (pauseMs > 0) await sleep(pauseMs);
  }
}

/** Activity and friend events only: they never change whether a profile is visible. */
function visibilityKeepingCommands(streams: ProfileStreams, count: number, seed: number): RawCommand[] {
  const r = prng(seed);
  return Array.from({ length: count }, (_, i): RawCommand =>
    r.next() < 0.6
      ? [
          streams.activity,
          'user_id',
          String(1 + r.int(50)),
          'command',
          r.pick(['like', 'unlike', 'kick']),
          'object',
          r.pick(['p1', 'p2', 'p3']),
        ]
      : [
          streams.friends,
          'user_id',
          String(1 + r.int(50)),
          'command',
          r.pick(['add', 'remove']),
          'friend_id',
          String(100 + (i % 7)),
        ],
  );
}

/** As model.ts snapshotDifferences, reading one snapshot at a time (a pipeline cannot span the cluster's nodes). */
async function profileDifferences(snapshots: SnapshotStore, expected: Map<string, unknown>): Promise<string[]> {
  const differences: string[] = [];
  for (const [id, want] of expected) {
    const got = await snapshots.read(id);
    const normalised = got
      ? {
          exists: got.exists,
          fields: got.fields,
          friends: got.sets['friends'] ?? [],
          likedPages: got.sets['likedPages'] ?? [],
          activity: got.counters,
        }
      : { exists: false, fields: {}, friends: [], likedPages: [], activity: {} };
    const [wantJson, gotJson] = [JSON.stringify(sortKeys(want)), JSON.stringify(sortKeys(normalised))];
    if (wantJson !== gotJson) differences.push(`user ${id}: want ${wantJson} got ${gotJson}`);
  }
  return differences;
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object')
    return Object.fromEntries(
      Object.entries(value)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => [k, sortKeys(v)]),
    );
  return value;
}

/** The same handlers, pausing `ms` every `everyNth` events: a rebuild long enough to overlap another. */
function slowed(handlers: HandlerRegistry, everyNth: number, ms: number): HandlerRegistry {
  let calls = 0;
  const slow = Object.create(handlers) as HandlerRegistry;
  slow.run = (event) => {
    const changes = handlers.run(event);
    return ++calls % everyNth === 0 ? sleep(ms).then(() => changes) : changes;
  };
  return slow;
}

/** Every shadow hash of these snapshots left in the cluster (any generation). */
async function shadowHashes(s: Setup): Promise<string[]> {
  const naming = shadowNaming(s.keyPrefix, 'g0', true);
  const found: string[] = [];
  for (const match of naming.patterns)
    for await (const keys of scanKeys(s.redis, { match, type: 'hash' }))
      found.push(...keys.filter((k) => naming.isShadow(k)));
  return found.sort();
}

/** Every key on every master with its value, but the group's (heartbeats and stats tick). */
async function fingerprint(redis: Redis): Promise<Map<string, string>> {
  const values = new Map<string, string>();
  for await (const keys of scanKeys(redis, { count: 1_000 })) {
    for (const key of keys) {
      if (key.startsWith('redsource:{group:')) continue;
      const type = await redis.type(key);
      const value =
        type === 'hash'
          ? JSON.stringify(Object.entries(await redis.hgetall(key)).sort())
          : type === 'string'
            ? String(await redis.get(key))
            : type === 'set'
              ? JSON.stringify((await redis.smembers(key)).sort())
              : type === 'stream'
                ? `${await redis.xlen(key)} ${JSON.stringify(await redis.xrevrange(key, '+', '-', 'COUNT', 1))}`
                : type;
      values.set(key, value);
    }
  }
  return values;
}

const changedKeys = (before: Map<string, string>, after: Map<string, string>) =>
  [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k)).sort();

describe('replay on a Redis Cluster', () => {
  it("a full rebuild while a processor keeps applying appends: every snapshot equals the fold, each shadow in its live key's slot, nothing left behind", async () => {
    const s = clusterSetup();
    await append(s.redis, randomCommands(s.streams, 2_000, 50, 51));
    await s.startProcessor();
    expect(await eventually(s.settled, 30_000), (await s.differences()).slice(0, 3).join('\n')).toBe(true);
    const ids = [...(await referenceFold(s.eventStore, s.streams)).keys()];
    // The snapshots are on all three masters: the rebuild works across slots and nodes.
    expect(new Set(await Promise.all(ids.map((id) => ctx.cluster.nodeForKey(s.snapshots.key(id))))).size).toBe(3);
    const visible = (await Promise.all(ids.map((id) => s.snapshots.read(id)))).flatMap((snapshot) =>
      snapshot?.exists ? [snapshot.id] : [],
    );
    expect(visible.length).toBeGreaterThan(10);

    // Readers: a visible profile never disappears, its activity total never goes back (no half-built snapshot).
    let reading = true;
    let reads = 0;
    const problems: string[] = [];
    const lastTotal = new Map<string, number>();
    const readers = (async () => {
      while (reading) {
        for (const id of visible) {
          const snapshot = await s.snapshots.read(id);
          if (!snapshot?.exists) problems.push(`user ${id} not visible during the rebuild`);
          const total = Object.values(snapshot?.counters ?? {}).reduce((a, b) => a + b, 0);
          if (total < (lastTotal.get(id) ?? 0))
            problems.push(`user ${id} went back from ${lastTotal.get(id)} to ${total} events`);
          lastTotal.set(id, total);
        }
        reads++;
      }
    })();
    const appending = append(s.redis, visibilityKeepingCommands(s.streams, 1_500, 52), { chunk: 20, pauseMs: 25 });
    const phases: string[] = [];
    let shadowsSeen: Promise<string[]> | undefined;
    const result = await replay(
      s.options({
        // A fold of a second or two, so the appends go on through every phase.
        handlers: slowed(s.handlers, 50, 20),
        onProgress: (p) => {
          if (phases.at(-1) !== p.phase) phases.push(p.phase);
          // While catching up, the shadow hashes are all there: each must be in its live key's slot.
          if (p.phase === 'catching-up') shadowsSeen ??= shadowHashes(s);
        },
      }),
    );
    await appending;
    expect(await eventually(s.settled, 30_000), (await s.differences()).slice(0, 3).join('\n')).toBe(true);
    reading = false;
    await readers;

    expect(problems.slice(0, 5)).toEqual([]);
    expect(reads).toBeGreaterThan(3);
    expect(phases).toEqual(['building', 'catching-up', 'switching', 'done']);
    expect(result.switched).toBeGreaterThanOrEqual(visible.length);
    const shadows = (await shadowsSeen) ?? [];
    expect(shadows.length).toBeGreaterThanOrEqual(visible.length);
    for (const key of shadows) {
      const id = /\{.*_([0-9]+)\}:g\d+$/.exec(key)?.[1] as string;
      expect(keySlot(key), key).toBe(keySlot(s.snapshots.key(id)));
    }
    // The lease, its fencing counter and the state share a slot.
    const slots = ['rebuild', 'rebuildLease', 'rebuildFence'].map((k) =>
      keySlot(processorKeys[k as 'rebuild'](s.snapshots.projection, s.keyPrefix)),
    );
    expect(new Set(slots).size).toBe(1);
    expect(await rebuildState(s.redis, s.snapshots)).toBeUndefined();
    for (const stream of s.allStreams) expect(await s.snapshots.isHeld(stream), stream).toBe(false);
    expect(await shadowHashes(s)).toEqual([]);
    expect(await s.redis.exists(processorKeys.rebuildLease(s.snapshots.projection, s.keyPrefix))).toBe(0);
    // Each stream's epoch holds the rebuild's token (the fencing counter's last), in the stream's slot; it stays.
    const token = await s.redis.get(processorKeys.rebuildFence(s.snapshots.projection, s.keyPrefix));
    for (const stream of s.allStreams) {
      const epoch = processorKeys.rebuildEpoch(stream, s.snapshots.projection, s.keyPrefix);
      expect(keySlot(epoch)).toBe(keySlot(stream));
      expect(await s.redis.get(epoch)).toBe(token);
    }
  }, 90_000);

  it('a live prefix with a hash tag: shadows keep the tag; a prefix with a "}" and no valid tag is refused (RS_REBUILD_KEY_PREFIX)', async () => {
    const s = clusterSetup({ keyPrefix: `{${unique('users')}}:snap_` });
    await append(s.redis, randomCommands(s.streams, 600, 30, 53));
    await s.startProcessor();
    expect(await eventually(s.settled, 30_000)).toBe(true);
    const appending = append(s.redis, visibilityKeepingCommands(s.streams, 300, 54), { chunk: 20, pauseMs: 10 });
    expect((await replay(s.options())).phase).toBe('done');
    await appending;
    expect(await eventually(s.settled, 30_000), (await s.differences()).slice(0, 3).join('\n')).toBe(true);
    const naming = shadowNaming(s.keyPrefix, 'g7', true);
    expect(naming.keyPrefix).toBe(`redsource:rebuild:${s.keyPrefix}`);
    expect(keySlot(`${naming.keyPrefix}1${naming.keySuffix}`)).toBe(keySlot(s.snapshots.key('1')));

    const bad = clusterSetup({ keyPrefix: `${unique('user')}}snap_` });
    const error = await rejection(replay(bad.options()));
    expect(error).toBeInstanceOf(RebuildKeyPrefixError);
    expect((error as RebuildKeyPrefixError).code).toBe('RS_REBUILD_KEY_PREFIX');
    // Refused before the lease was taken.
    expect(await bad.redis.exists(processorKeys.rebuildLease('profiles', bad.keyPrefix))).toBe(0);
  }, 60_000);

  it('rebuilds only the users asked for (--users), while appends go on; the others are left as they are', async () => {
    const s = clusterSetup();
    await append(s.redis, randomCommands(s.streams, 1_500, 50, 55));
    await s.startProcessor();
    expect(await eventually(s.settled, 30_000)).toBe(true);
    // Corrupt two snapshots: only the one asked for is repaired.
    await s.redis.hset(s.snapshots.key('1'), 'c:bogus', '99');
    await s.redis.hset(s.snapshots.key('2'), 'c:bogus', '99');
    const appending = append(s.redis, visibilityKeepingCommands(s.streams, 600, 56), { chunk: 20, pauseMs: 10 });
    await replay(s.options({ only: ['1'] }));
    await appending;
    const onlyTwoDiffers = async () => {
      const differences = await s.differences();
      return differences.length === 1 && differences[0]?.startsWith('user 2:') === true;
    };
    expect(await eventually(onlyTwoDiffers, 30_000), (await s.differences()).slice(0, 3).join('\n')).toBe(true);
    expect(await s.redis.hget(s.snapshots.key('1'), 'c:bogus')).toBeNull();
    expect(await s.redis.hget(s.snapshots.key('2'), 'c:bogus')).toBe('99');
    expect(await shadowHashes(s)).toEqual([]);
  }, 60_000);

  it('a second replay while one runs is refused at once (RebuildRunningError); the first ends equal to the fold', async () => {
    const s = clusterSetup();
    await append(s.redis, randomCommands(s.streams, 2_000, 50, 57));
    await s.startProcessor();
    expect(await eventually(s.settled, 30_000)).toBe(true);
    const appending = append(s.redis, randomCommands(s.streams, 600, 50, 58), { chunk: 20, pauseMs: 20 });
    const first = replay(s.options({ handlers: slowed(s.handlers, 50, 25) }));
    expect(
      await eventually(async () => (await rebuildState(s.redis, s.snapshots))?.phase === 'building', 10_000, 5),
    ).toBe(true);
    const error = await rejection(replay(s.options()));
    expect(error).toBeInstanceOf(RebuildRunningError);
    expect((error as RebuildRunningError).code).toBe('RS_REBUILD_RUNNING');
    expect((await first).phase).toBe('done');
    await appending;
    expect(await eventually(s.settled, 30_000), (await s.differences()).slice(0, 3).join('\n')).toBe(true);
  }, 60_000);

  it('a replay frozen (SIGSTOP) past its lease is taken over; thawed, it exits RS_REBUILD_LEASE_LOST and changes nothing', async () => {
    const s = clusterSetup();
    await append(s.redis, randomCommands(s.streams, 4_000, 50, 59));
    await s.startProcessor();
    expect(await eventually(s.settled, 30_000)).toBe(true);
    let appending = append(s.redis, randomCommands(s.streams, 400, 50, 60), { chunk: 20, pauseMs: 20 });

    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(new URL('./fixtures/cluster-replay.ts', import.meta.url))],
      {
        cwd: fileURLToPath(new URL('../../../', import.meta.url)),
        env: {
          ...process.env,
          CLUSTER_PORTS: (await ctx.cluster.masters()).join(','),
          PROFILE_STREAMS: JSON.stringify(s.streams),
          SNAPSHOT_PREFIX: s.keyPrefix,
          GROUP: s.group,
          LEASE_MS: '1500',
          RENEW_MS: '300',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(child);
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const building = async () => ((await rebuildState(s.redis, s.snapshots))?.done ?? 0) > 500;
    expect(await eventually(building, 30_000, 5), output).toBe(true);
    child.kill('SIGSTOP');
    try {
      await sleep(2_500);
      // The lease has expired: the next replay takes the rebuild over and finishes it.
      const taken = await replay(s.options());
      expect(taken.phase).toBe('done');
      await appending;
      appending = append(s.redis, visibilityKeepingCommands(s.streams, 200, 61), { chunk: 20, pauseMs: 5 });
      await appending;
      expect(await eventually(s.settled, 30_000), (await s.differences()).slice(0, 3).join('\n')).toBe(true);
      // The live processor writes its idle partitions' cursors once a read finds nothing new: let it, before the fingerprint.
      expect(await eventually(s.quiet, 10_000)).toBe(true);

      const before = await fingerprint(s.redis);
      child.kill('SIGCONT');
      const code = await exited;
      console.log(`[frozen replay] exit ${code}: ${output.trim().split('\n').slice(-2).join(' | ')}`);
      expect(code, output).toBe(1);
      expect(output).toContain('RS_REBUILD_LEASE_LOST');
      await sleep(500);
      const after = await fingerprint(s.redis);
      // At most a write it had already started lands: a shadow hash of its own generation, never switched.
      const naming = shadowNaming(s.keyPrefix, 'g0', true);
      expect(changedKeys(before, after).filter((k) => !naming.isShadow(k))).toEqual([]);
      expect(await s.differences()).toEqual([]);
    } finally {
      child.kill('SIGCONT');
    }
    // The next rebuild starts afresh and clears any such shadow hash.
    expect((await replay(s.options())).phase).toBe('done');
    expect(await shadowHashes(s)).toEqual([]);
    expect(await eventually(s.settled, 30_000)).toBe(true);
  }, 120_000);
});

describe('fencing on a Redis Cluster: what each slot checks', () => {
  const holder = { host: 'test-host', pid: 4242, startedAt: 1_700_000_000_000 };

  /** A rebuild taken over: `stale` writes with the first holder's token, `current` with its successor's, each with the streams' epochs claimed. */
  async function takenOver(streams: readonly string[]) {
    const redis = client();
    const target = { projection: 'profiles', keyPrefix: `${unique('user_snapshot')}_` };
    const keys = {
      lease: processorKeys.rebuildLease(target.projection, target.keyPrefix),
      fence: processorKeys.rebuildFence(target.projection, target.keyPrefix),
    };
    const epochKey = (stream: string) => processorKeys.rebuildEpoch(stream, target.projection, target.keyPrefix);
    const first = await tryAcquireRebuildLease(redis, keys, 60_000, holder);
    if (!('token' in first)) throw new Error('the lease was not acquired');
    const stale = new FencedWrites(redis, { key: keys.lease, token: first.token }, { epochKey });
    await stale.claimStreams(streams);
    // As if the first holder were frozen past its lease: it expires and the next rebuild takes it.
    await redis.del(keys.lease);
    const second = await tryAcquireRebuildLease(redis, keys, 60_000, holder);
    if (!('token' in second)) throw new Error('the lease was not acquired');
    const current = new FencedWrites(redis, { key: keys.lease, token: second.token }, { epochKey });
    await current.claimStreams(streams);
    return { redis, target, keys, stale, current, tokens: [first.token, second.token] as const };
  }
  const lost = async (write: Promise<unknown>) => expect(await rejection(write)).toBeInstanceOf(RebuildLeaseLostError);

  it("the streams' keys check the stream's epoch, the state checks the lease; a former holder cannot claim a stream back", async () => {
    const stream = unique('stream');
    const { redis, target, stale, current } = await takenOver([stream]);
    await lost(stale.claimStreams([stream]));
    const cursor = `redsource:{${stream}}:applied:profiles:rebuild`;
    await redis.set(cursor, '5-0');
    await lost(stale.set(cursor, '9-0', stream));
    await lost(stale.set(cursor, '', stream));
    expect(await redis.get(cursor)).toBe('5-0');
    await current.set(cursor, '9-0', stream);
    expect(await redis.get(cursor)).toBe('9-0');
    const state = processorKeys.rebuild(target.projection, target.keyPrefix);
    await lost(stale.hset(state, { phase: 'switching' }));
    expect(await redis.exists(state)).toBe(0);
    await current.hset(state, { phase: 'building' });
    expect(await redis.hget(state, 'phase')).toBe('building');
  });

  it("shadow applies: refused in the stream's slot (epoch) before any snapshot write", async () => {
    const stream = unique('stream');
    const { redis, target, stale, current, tokens } = await takenOver([stream]);
    const naming = shadowNaming(target.keyPrefix, `g${tokens[0]}`, true);
    const shadow = new SnapshotStore({
      redis,
      keyPrefix: naming.keyPrefix,
      keySuffix: naming.keySuffix,
      projection: 'profiles:rebuild',
    });
    const id = String(await redis.xadd(stream, '*', 'n', '1'));
    const batch = {
      stream,
      deadLetterStream: processorKeys.deadLetters(stream),
      entries: [{ entryId: id, changes: [{ snapshotId: 'u1', mutations: [{ op: 'create' as const }] }] }],
    };
    await lost(stale.applyBatch(shadow, batch));
    expect(await redis.exists(shadow.key('u1'))).toBe(0);
    expect(await redis.exists(shadow.cursorKey(stream))).toBe(0);
    expect((await current.applyBatch(shadow, batch)).applied).toBe(1);
    // The marker names the token that wrote it: a former holder's later writes there are refused.
    expect(await redis.hget(shadow.key('u1'), `_at:${stream}`)).toBe(`${tokens[1]} ${id}`);
  });

  it("the switch: refused once a later holder wrote the shadow or a later rebuild switched; keeps the rebuild's markers; a shadow re-created after its switch is an orphan", async () => {
    const stream = unique('stream');
    const { redis, target, stale, current, tokens } = await takenOver([stream]);
    const rebuildId = `g${tokens[0]}`;
    const naming = shadowNaming(target.keyPrefix, rebuildId, true);
    const shadowKey = `${naming.keyPrefix}7${naming.keySuffix}`;
    const liveKey = `${target.keyPrefix}7`;
    expect(keySlot(shadowKey)).toBe(keySlot(liveKey));
    const markers = { rebuild: [`_at:${stream}`] };
    await redis.hset(shadowKey, 'f:name', '"new"', `_at:${stream}`, `${tokens[1]} 900-0`);
    await redis.hset(liveKey, 'f:name', '"old"', `_at:${stream}:p3`, '41 500-0');
    await lost(stale.switchSnapshots([[shadowKey, liveKey]], rebuildId, markers));
    expect(await redis.hget(liveKey, 'f:name')).toBe('"old"');
    expect(await current.switchSnapshots([[shadowKey, liveKey]], rebuildId, markers)).toBe(1);
    // The rebuild's marker goes live with the hash: a live apply delayed past the switch skips what it covers.
    expect(await redis.hgetall(liveKey)).toEqual({
      'f:name': '"new"',
      _rebuild: rebuildId,
      [`_at:${stream}`]: `${tokens[1]} 900-0`,
    });
    expect(await redis.exists(shadowKey)).toBe(0);

    // A late shadow write of a former holder after the switch: not switched, deleted.
    await redis.hset(shadowKey, 'f:name', '"late"', `_at:${stream}`, `${tokens[0]} 950-0`);
    expect(await current.switchSnapshots([[shadowKey, liveKey]], rebuildId, markers)).toBe(0);
    expect(await redis.exists(shadowKey)).toBe(0);
    expect(await redis.hget(liveKey, 'f:name')).toBe('"new"');

    // A live key switched by a rebuild started after the stale one: the stale one's shadow is not switched over it.
    const otherShadow = `${naming.keyPrefix}8${naming.keySuffix}`;
    await redis.hset(otherShadow, 'f:name', '"stale"');
    await redis.hset(`${target.keyPrefix}8`, 'f:name', '"newer"', '_rebuild', `g${tokens[1]}`);
    await lost(stale.switchSnapshots([[otherShadow, `${target.keyPrefix}8`]], rebuildId, markers));
    expect(await redis.hget(`${target.keyPrefix}8`, 'f:name')).toBe('"newer"');
  });

  it('deletions: refused where a later rebuild switched; kept where the live processors applied beyond the switch', async () => {
    const stream = unique('stream');
    const { redis, target, stale, current, tokens } = await takenOver([stream]);
    const live = (id: string) => `${target.keyPrefix}${id}`;
    const markers = { rebuild: [`_at:${stream}`], live: [[`_at:${stream}:p3`, '1000-0'] as const] };
    // Switched by a rebuild started after the stale one.
    await redis.hset(live('1'), '_exists', '1', '_rebuild', `g${tokens[1]}`);
    await lost(stale.unlinkSnapshots([live('1')], `g${tokens[0]}`, markers));
    expect(await redis.exists(live('1'))).toBe(1);
    // Written by a live processor beyond where the switch left that partition: kept. Not beyond: deleted.
    await redis.hset(live('2'), '_exists', '1', `_at:${stream}:p3`, '5 1200-0');
    await redis.hset(live('3'), '_exists', '1', `_at:${stream}:p3`, '5 900-0');
    await current.unlinkSnapshots([live('2'), live('3')], `g${tokens[1]}`, markers);
    expect(await redis.exists(live('2'))).toBe(1);
    expect(await redis.exists(live('3'))).toBe(0);
    // A shadow hash a later holder wrote is not swept by a former one.
    const naming = shadowNaming(target.keyPrefix, `g${tokens[0]}`, true);
    const shadowKey = `${naming.keyPrefix}4${naming.keySuffix}`;
    await redis.hset(shadowKey, '_exists', '1', `_at:${stream}`, `${tokens[1]} 5-0`);
    await lost(stale.unlinkSnapshots([shadowKey], undefined, { rebuild: markers.rebuild, live: [] }));
    expect(await redis.exists(shadowKey)).toBe(1);
    await current.unlinkSnapshots([shadowKey], undefined, { rebuild: markers.rebuild, live: [] });
    expect(await redis.exists(shadowKey)).toBe(0);
  });
});
