import type { Redis } from 'ioredis';
import { globEscape, isCluster, scanKeys } from '@redsource/event-store';
import { keySlot, SNAPSHOT_ID, snapshotKeys } from '@redsource/snapshot-store';
import { discoverStreams } from '../discovery.ts';
import { InvalidProjectionError, ProjectionInUseError } from '../errors.ts';
import { processorKeys } from '../keys.ts';
import { processorSettingsSchema } from '../options.ts';
import { GROUP_NAME, partitionKeys } from '../partitions/keys.ts';
import { projectionKeys, streamKeysOf } from './keys.ts';
import { shadowNaming } from '../replay.ts';

export interface RemoveProjectionOptions {
  /** The consumer group its processors used (default: the projection's name, as `createProcessor`'s). */
  readonly group?: string;
  /** Streams it was fed from (default: its streams by name, plus those that exist now for its `<prefix>*` streams). */
  readonly streams?: readonly string[];
  /** Remove even while processors of its group are alive or a rebuild of it runs (they write again: stop them). */
  readonly force?: boolean;
}

export interface RemovedProjection {
  /** Keys deleted. */
  readonly deleted: number;
  /** Streams whose consumer group was destroyed. */
  readonly groupsDestroyed: readonly string[];
  /** Streams whose dead letters and dead-lettered ids were kept: another consumer group still reads them. */
  readonly sharedKept: readonly string[];
}

/** What removal needs of a projection. */
interface Removable {
  readonly name: string;
  readonly keyPrefix: string;
  readonly streams: readonly string[];
  readonly streamPrefixes: readonly string[];
}

/** Keys per UNLINK: one call stays short. */
const CHUNK = 500;

/**
 * Deletes every key a projection owns (the list is projectionKeys, in ./keys.ts): its snapshots
 * (SCAN by its key prefix: only `<prefix><id>` hashes, on every master of a cluster) and a
 * rebuild's shadow snapshots; per stream its cursors, totals, hold, epochs and partition count,
 * handler attempts and rebuild epoch, and its consumer group (XGROUP DESTROY); its group's members,
 * leases, fencing counters, heartbeats and stats; its rebuild state, lease and fencing counter. A stream's dead letters and dead-lettered ids
 * are shared by every projection of the stream: deleted only when no other consumer group is left on it.
 * The streams themselves and the event store's keys stay. Refused with ProjectionInUseError while a
 * processor of the group is alive (its membership has not expired) or a rebuild holds its lease, unless `force`.
 */
export async function removeProjection(
  redis: Redis,
  projection: Removable,
  options: RemoveProjectionOptions = {},
): Promise<RemovedProjection> {
  const group = options.group ?? projection.name;
  if (!GROUP_NAME.test(group))
    throw new InvalidProjectionError(`group '${group}' must be 1-128 characters from A-Z a-z 0-9 _ . : -`);
  const { name, keyPrefix } = projection;
  if (options.force !== true) await refuseIfInUse(redis, projection, group);

  const streams = [
    ...new Set([
      ...(options.streams ?? projection.streams),
      ...(options.streams ? [] : await discoverStreams(redis, projection.streamPrefixes)),
    ]),
  ];
  const owned = projectionKeys({ name, keyPrefix, group });
  const groupKeys = await scanAll(redis, `${globEscape(owned.groupKeyPrefix)}*`);
  const partitions = await partitionsUsed(redis, streams, group, groupKeys);

  const keys = [...groupKeys, ...owned.rebuild];
  const groupsDestroyed: string[] = [];
  const sharedKept: string[] = [];
  for (const stream of streams) {
    keys.push(...streamKeysOf(owned.ofStream(stream, partitions)));
    if ((await redis.type(stream)) !== 'stream') continue;
    if (Number(await redis.xgroup('DESTROY', stream, group)) === 1) groupsDestroyed.push(stream);
    const others = (await redis.xinfo('GROUPS', stream)) as unknown[];
    if (others.length > 0) sharedKept.push(stream);
    else keys.push(snapshotKeys.deadLettered(stream), processorKeys.deadLetters(stream));
  }
  let deleted = await unlink(redis, keys);
  deleted += await unlink(redis, await snapshotKeysOf(redis, keyPrefix));
  return { deleted, groupsDestroyed, sharedKept };
}

async function refuseIfInUse(redis: Redis, projection: Removable, group: string): Promise<void> {
  const [seconds, micros] = await redis.time();
  const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  // Members are scored by when their membership expires: a later score is a processor still alive.
  const alive = await redis.zrangebyscore(partitionKeys.members(group), `(${now}`, '+inf');
  const rebuilding = (await redis.exists(processorKeys.rebuildLease(projection.name, projection.keyPrefix))) === 1;
  if (alive.length > 0 || rebuilding) throw new ProjectionInUseError(projection.name, group, alive, rebuilding);
}

/**
 * How many partitions to delete the keys of: the most any processor of the group used. The fencing
 * counters are never deleted while the group lives, so one per partition ever taken is there.
 */
async function partitionsUsed(
  redis: Redis,
  streams: readonly string[],
  group: string,
  groupKeys: readonly string[],
): Promise<number> {
  let most = processorSettingsSchema.shape.partitions.parse(undefined);
  const numbered = new RegExp(`^${escapeRegex(`redsource:{group:${group}}:`)}(?:lease|fence):(\\d+)$`);
  for (const key of groupKeys) most = Math.max(most, Number(numbered.exec(key)?.[1] ?? -1) + 1);
  for (const stream of streams)
    most = Math.max(most, Number((await redis.get(partitionKeys.count(stream, group))) ?? 0));
  return most;
}

/** The projection's snapshot hashes (`<prefix><id>`) and a rebuild's shadow hashes of them, of any generation. */
async function snapshotKeysOf(redis: Redis, keyPrefix: string): Promise<string[]> {
  const found = new Set<string>();
  for (const key of await scanAll(redis, `${globEscape(keyPrefix)}*`, 'hash')) {
    if (SNAPSHOT_ID.test(key.slice(keyPrefix.length))) found.add(key);
  }
  const shadows = shadowNaming(keyPrefix, 'g0', isCluster(redis));
  for (const pattern of shadows.patterns) {
    for (const key of await scanAll(redis, pattern, 'hash')) if (shadows.isShadow(key)) found.add(key);
  }
  return [...found];
}

async function scanAll(redis: Redis, match: string, type?: string): Promise<string[]> {
  const found = new Set<string>();
  for await (const keys of scanKeys(redis, { match, ...(type === undefined ? {} : { type }) }))
    for (const key of keys) found.add(key);
  return [...found];
}

/** UNLINKs the keys, a slot's keys per call on a cluster (a command's keys must share a slot there). */
async function unlink(redis: Redis, keys: readonly string[]): Promise<number> {
  const groups = new Map<number, string[]>();
  const cluster = isCluster(redis);
  for (const key of new Set(keys)) {
    const slot = cluster ? keySlot(key) : 0;
    let group = groups.get(slot);
    if (!group) groups.set(slot, (group = []));
    group.push(key);
  }
  let deleted = 0;
  for (const group of groups.values()) {
    for (let i = 0; i < group.length; i += CHUNK) deleted += await redis.unlink(...group.slice(i, i + CHUNK));
  }
  return deleted;
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
