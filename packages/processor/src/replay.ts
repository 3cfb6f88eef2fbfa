import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { RedisEventStore } from '@redsource/event-store';
import type { StreamEntry } from '@redsource/event-store';
import { compareEntryIds, SNAPSHOT_ID, snapshotKeys, SnapshotStore, type BatchEntry } from '@redsource/snapshot-store';
import { BatchBuilder } from './batch-builder.ts';
import { ProcessorStateError, RebuildLeaseLostError, ReplayImpossibleError } from './errors.ts';
import { discoverStreams } from './discovery.ts';
import type { FencedWrites } from './fenced-writes.ts';
import type { HandlerRegistry } from './handlers.ts';
import { processorKeys } from './keys.ts';
import { processorSettingsSchema } from './options.ts';
import { partitionOfEntry } from './partitions/subject.ts';
import { silentLogger, type Logger } from './logger.ts';
import { parseRebuildLeaseSettings, RebuildLease, type RebuildLeaseSettingsInput, type RunningRebuild } from './rebuild-lease.ts';

export interface ReplayProgress {
  readonly phase: 'building' | 'catching-up' | 'switching' | 'done';
  readonly stream: string;
  /** Entries folded into the shadow snapshots so far, over all streams (including an earlier, interrupted run). */
  readonly done: number;
  /** Entries in the streams up to where the live snapshots were when the rebuild started. */
  readonly total: number;
  /** Entries applied by this run; with `only`, the entries that changed one of those snapshots. */
  readonly applied: number;
  /** Entries that cannot be applied (undecodable, invalid, handler failing): dead-lettered, once per entry whoever meets it first. */
  readonly stepped: number;
  /** Of `stepped`, the entries already dead-lettered before (by a processor or an earlier rebuild): counted, not logged. */
  readonly deadLetteredBefore: number;
  /** Snapshots switched over to the rebuilt version. */
  readonly switched: number;
  readonly elapsedMs: number;
}

export interface ReplayOptions {
  readonly redis: Redis;
  readonly eventStore: RedisEventStore;
  /** The live snapshots: they keep being served (and updated) until the switch. */
  readonly snapshots: SnapshotStore<unknown>;
  readonly handlers: HandlerRegistry;
  readonly streams?: readonly string[];
  /**
   * Rebuild only these snapshot ids (the others are left as they are). Such a rebuild stops at the
   * live cursor; a full one folds to the end of the streams and moves the live cursor there.
   */
  readonly only?: readonly string[];
  readonly pageSize?: number;
  readonly maxDeliveries?: number;
  readonly onProgress?: (progress: ReplayProgress) => void;
  readonly logger?: Logger;
  /**
   * When another rebuild of these snapshots is running, wait for it to end (then run) instead of
   * throwing RebuildRunningError at once.
   */
  readonly wait?: boolean;
  /** Called when this replay starts waiting for a running rebuild (with `wait`). */
  readonly onWaiting?: (running: RunningRebuild) => void;
  /** The rebuild lease's timing: `leaseMs` (10 s), `renewMs` (2 s), `waitPollMs` (1 s); see rebuildLeaseSettingsSchema. */
  readonly lease?: RebuildLeaseSettingsInput;
  /**
   * How the live processors apply these snapshots: their group and partition count (default: the
   * processor's defaults). The switch moves each partition's cursor; `only` stops at each one.
   */
  readonly partitioning?: { readonly group: string; readonly partitions: number };
}

const SWITCH_BATCH = 500;

/**
 * Rebuilds snapshots from the streams with no downtime. The fold runs into shadow hashes (another
 * key prefix and cursor) while the live snapshots keep being served and updated. Then the live
 * streams are held for a moment, the shadow catches up with the live cursor if it is behind, every
 * shadow hash is RENAMEd over its live key (atomic per key: a reader sees the old or the new
 * snapshot, never none and never half), live snapshots the fold does not produce are deleted, the
 * live cursor moves to the shadow's if that is ahead, and the hold is released: the live processors
 * go on from exactly where the snapshots are, so nothing is missed or applied twice. Memory is bounded by one page; an interrupted rebuild resumes from its
 * shadow cursors when run again.
 *
 * One rebuild of a projection runs at a time: it holds a lease (RebuildRunningError for a second
 * one, or `wait`), and every write it makes carries its fencing token, checked by Redis, so a rebuild
 * paused or cut off past its lease writes nothing (RebuildLeaseLostError) while the next one resumes.
 */
export async function replay(options: ReplayOptions): Promise<ReplayProgress> {
  const { redis, snapshots: live } = options;
  // Every stream that feeds the projection: a stream left out would have its snapshots' part lost at the switch.
  const streams = options.streams ?? [...new Set([...options.handlers.streams, ...(await discoverStreams(redis, options.handlers.streamPrefixes))])];
  if (streams.length === 0) throw new ProcessorStateError('Nothing to replay: no stream is registered or matches a registered prefix.');
  const settings = parseRebuildLeaseSettings(options.lease ?? {});
  for (const stream of streams) {
    const trimmed = await redis.get(processorKeys.trimmedBelow(stream));
    if (trimmed) throw new ReplayImpossibleError(stream, trimmed);
  }
  const lease = await RebuildLease.acquire(redis, { target: live, settings, wait: options.wait ?? false, onWaiting: options.onWaiting });
  try {
    return await rebuild(options, streams, lease);
  } finally {
    await lease.end();
  }
}

/** The rebuild itself, under the lease: every write through `lease.writes`, so none lands once the lease is lost. */
async function rebuild(options: ReplayOptions, streams: readonly string[], lease: RebuildLease): Promise<ReplayProgress> {
  const { redis, snapshots: live } = options;
  const writes = lease.writes;
  const only = options.only ? new Set(options.only) : undefined;
  const logger = options.logger ?? silentLogger;
  const shadow = new SnapshotStore<unknown>({ redis, keyPrefix: shadowPrefix(live.keyPrefix), projection: `${live.projection}:rebuild` });
  const stateKey = processorKeys.rebuild(live.projection, live.keyPrefix);
  const builder = new BatchBuilder(options.eventStore.codec, options.handlers, shadow, { maxDeliveries: options.maxDeliveries ?? 3, retryBackoffMs: 50 }, logger);
  const started = Date.now();
  const rebuildId = (await redis.hget(stateKey, 'id')) ?? `${started}`;
  const partitions = options.partitioning?.partitions ?? processorSettingsSchema.shape.partitions.parse(undefined);
  const subjectFields = (stream: string) => (options.eventStore.catalog.has(stream) ? options.eventStore.catalog.subjectFields(stream) : []);
  /** The live snapshots' applied position in each partition of a stream. */
  const liveCursors = async (stream: string) => Promise.all(Array.from({ length: partitions }, (_, p) => live.cursor(stream, p)));
  const highest = (ids: readonly string[]) => ids.reduce((a, b) => maxId(a, b), '0-0');

  const asked = only ? [...only].sort().join(',') : '';
  const resumed = await redis.hget(stateKey, 'only');
  if (resumed !== null && resumed !== asked) {
    throw new ProcessorStateError(
      `A rebuild of ${resumed ? `users ${resumed}` : 'every snapshot'} was interrupted; resume it with the same users (or none) before starting another.`,
    );
  }
  const phaseFound = await redis.hget(stateKey, 'phase');
  if (phaseFound === null) {
    // A fresh start: clear what an abandoned shadow may hold. The dead-lettered ids stay (see resetProgress).
    await deleteSnapshotHashes(redis, writes, shadow.keyPrefix);
    for (const stream of streams) {
      await writes.set(shadow.cursorKey(stream), '0-0');
      await writes.set(shadow.totalsKey(stream), '');
    }
  } else if (phaseFound !== 'switching') {
    // Taking over a rebuild that lost its lease while catching up: its holds would stall the live
    // processors through this run's whole fold. Nothing was switched yet; this run holds them again.
    for (const stream of streams) await writes.set(live.holdKey(stream), '');
  }

  const lastId = async (stream: string) => (await redis.xrevrange(stream, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
  let progress: ReplayProgress = { phase: 'building', stream: streams[0] ?? '', done: 0, total: 0, applied: 0, stepped: 0, deadLetteredBefore: 0, switched: 0, elapsedMs: 0 };
  const report = async (update: Partial<ReplayProgress>) => {
    progress = { ...progress, ...update, elapsedMs: Date.now() - started };
    if (progress.phase !== 'done') await writes.hset(stateKey, { phase: progress.phase, done: progress.done, total: progress.total, updatedAt: Date.now() });
    options.onProgress?.(progress);
  };
  // A full rebuild folds to the end of the stream; `only` to where the live partitions are (each
  // entry's own partition decides whether it is in: see keepOnly).
  const target = async (stream: string) => (only ? highest(await liveCursors(stream)) : lastId(stream));
  // The total is known before the first entry is read (XLEN, or a count from the nearer end), so the
  // state's first write already carries it: no "0 of 0" while a long stream would be counted.
  const totals = await Promise.all(streams.map(async (s) => [await countUpTo(redis, s, await target(s)), await countUpTo(redis, s, await shadow.cursor(s))] as const));
  progress = { ...progress, total: totals.reduce((n, [t]) => n + t, 0), done: totals.reduce((n, [, d]) => n + d, 0) };
  if (phaseFound === null) await writes.hset(stateKey, { id: rebuildId, phase: 'building', startedAt: started, only: asked, total: progress.total, done: progress.done });
  await report({});

  const fold = async (stream: string, upTo: () => Promise<string>) => {
    const from = await shadow.cursor(stream);
    const limit = await upTo();
    if (compareEntryIds(from, limit) >= 0) return;
    const cursors = only ? await liveCursors(stream) : [];
    const pages = options.eventStore.readPages(stream, { from: `(${from}`, to: limit, pageSize: options.pageSize ?? 1_000 });
    let next = pages.next();
    for (;;) {
      const { value: page, done } = await next;
      if (done || page.length === 0) return;
      lease.assertHeld();
      // The next page is read while this one is folded and applied.
      next = pages.next();
      next.catch(() => undefined);
      const bad: { entryId: string; reason: string }[] = [];
      const built = await builder.build(stream, page, { onBad: (entryId, reason) => bad.push({ entryId, reason }) });
      const before = await deadLetteredBefore(redis, stream, bad.map((b) => b.entryId));
      // An entry a processor (or an earlier rebuild) dead-lettered is counted, not warned about again.
      for (const b of bad) if (!before.has(b.entryId)) logger.warn({ stream, ...b }, 'entry cannot be applied: dead-lettering it');
      const entries = only
        ? built.map((e, i) => {
            // Applied live only if its partition's cursor is past it: else the live processors apply it after the switch.
            const partition = partitionOfEntry((page[i] as StreamEntry).fields, subjectFields(stream), partitions);
            return keepOnly(e, only, compareEntryIds(e.entryId, cursors[partition] ?? '0-0') <= 0);
          })
        : built;
      const result = await writes.applyBatch(shadow, { stream, entries, deadLetterStream: processorKeys.deadLetters(stream), contiguous: true });
      // With `only`, an entry of another user is applied as an empty change: it moves the cursor, it is not these users' work.
      const applied = only ? Math.min(result.applied, entries.filter((e) => 'changes' in e && e.changes.length > 0).length) : result.applied;
      await report({
        stream,
        done: progress.done + page.length,
        applied: progress.applied + applied,
        stepped: progress.stepped + bad.length,
        deadLetteredBefore: progress.deadLetteredBefore + before.size,
      });
    }
  };

  if ((await redis.hget(stateKey, 'phase')) !== 'switching') {
    // 1. Fold into the shadow while the live processors carry on.
    for (const stream of streams) {
      const end = await target(stream);
      await fold(stream, async () => end);
    }
    // 2. Hold the live streams and catch up with the live cursor where it is ahead; then switch.
    await report({ phase: 'catching-up' });
    for (const stream of streams) await writes.set(live.holdKey(stream), String(Date.now()));
    // Held: no live apply moves now. A full rebuild takes in what arrived meanwhile; `only` what the live partitions applied.
    for (const stream of streams) await fold(stream, async () => (only ? highest(await liveCursors(stream)) : lastId(stream)));
    await writes.hset(stateKey, { phase: 'switching' });
  } else {
    for (const stream of streams) await writes.set(live.holdKey(stream), String(Date.now()));
  }

  // 3. Switch: every shadow hash over its live key, then the live snapshots the fold did not produce.
  await report({ phase: 'switching' });
  try {
    const switched = await switchOver(redis, writes, shadow.keyPrefix, live.keyPrefix, rebuildId);
    await report({ switched });
    await deleteUnswitched(redis, writes, live.keyPrefix, rebuildId, only);
    // The snapshots now hold everything up to the shadow's cursor: each live partition goes on from
    // there (an entry of it at or before that is skipped as applied). `only` leaves them as they are.
    if (!only) {
      for (const stream of streams) {
        const folded = await shadow.cursor(stream);
        const cursors = await liveCursors(stream);
        for (const [p, cursor] of cursors.entries()) {
          if (compareEntryIds(folded, cursor) > 0) await writes.set(live.cursorKey(stream, p), folded);
        }
      }
    }
  } finally {
    // Released also when switching failed. A rebuild that lost its lease cannot: the holds stay for
    // the one that took over, which finishes the switch.
    for (const stream of streams) await writes.set(live.holdKey(stream), '').catch(unlessLeaseLost);
  }
  for (const stream of streams) {
    await writes.set(shadow.cursorKey(stream), '');
    await writes.set(shadow.totalsKey(stream), '');
  }
  await report({ phase: 'done' });
  await writes.set(stateKey, '');
  logger.info({ ...progress }, 'rebuild switched over');
  return progress;
}

/** The rebuild running now, if any: what the dashboard and status show. */
export async function rebuildState(redis: Redis, snapshots: Pick<SnapshotStore<unknown>, 'projection' | 'keyPrefix'>): Promise<{ phase: string; done: number; total: number; startedAt: number; updatedAt: number } | undefined> {
  const state = await redis.hgetall(processorKeys.rebuild(snapshots.projection, snapshots.keyPrefix));
  if (!state['phase']) return undefined;
  return { phase: state['phase'], done: Number(state['done'] ?? 0), total: Number(state['total'] ?? 0), startedAt: Number(state['startedAt'] ?? 0), updatedAt: Number(state['updatedAt'] ?? 0) };
}

/** The shadow's key prefix; a long live prefix is hashed so the shadow's stays within the allowed length. */
function shadowPrefix(livePrefix: string): string {
  const plain = `redsource:rebuild:${livePrefix}`;
  return plain.length <= 256 ? plain : `redsource:rebuild:${createHash('sha1').update(livePrefix).digest('hex')}:`;
}

/** The entry's changes to those snapshots, if the live snapshots have it applied; else none (it still moves the shadow's cursor). */
function keepOnly(entry: BatchEntry, only: ReadonlySet<string>, appliedLive: boolean): BatchEntry {
  if (!('changes' in entry)) return entry;
  return { entryId: entry.entryId, changes: appliedLive ? entry.changes.filter((c) => only.has(c.snapshotId)) : [] };
}

const maxId = (a: string, b: string) => (compareEntryIds(a, b) >= 0 ? a : b);

/** Those of `entryIds` already in the stream's dead-lettered set. */
async function deadLetteredBefore(redis: Redis, stream: string, entryIds: readonly string[]): Promise<Set<string>> {
  if (entryIds.length === 0) return new Set();
  const found = (await redis.call('SMISMEMBER', snapshotKeys.deadLettered(stream), ...entryIds)) as number[];
  return new Set(entryIds.filter((_, i) => found[i] === 1));
}

const COUNT_PAGE = 10_000;

/**
 * Entries of a stream up to an id, inclusive, without reading them all (Redis 7.0 has no XCOUNT):
 * XLEN with the last id in one MULTI; for an id before the end, pages are read from both ends in
 * turn and the nearer end answers (a live cursor is near the end, a resumed shadow's anywhere).
 */
async function countUpTo(redis: Redis, stream: string, id: string): Promise<number> {
  if (!/^\d+-\d+$/.test(id) || id === '0-0') return 0;
  const replies = (await redis.multi().xlen(stream).xrevrange(stream, '+', '-', 'COUNT', 1).exec()) ?? [];
  for (const [error] of replies) if (error) throw error;
  const length = Number(replies[0]?.[1] ?? 0);
  const last = (replies[1]?.[1] as [string, string[]][] | undefined)?.[0]?.[0];
  if (last === undefined || compareEntryIds(id, last) >= 0) return length;
  let before = 0;
  let after = 0;
  let forwardFrom = '-';
  let backwardFrom = last;
  for (;;) {
    const forward = await redis.xrange(stream, forwardFrom, id, 'COUNT', COUNT_PAGE);
    before += forward.length;
    if (forward.length < COUNT_PAGE) return before;
    forwardFrom = `(${forward[forward.length - 1]?.[0] ?? ''}`;
    const backward = await redis.xrevrange(stream, backwardFrom, `(${id}`, 'COUNT', COUNT_PAGE);
    after += backward.length;
    if (backward.length < COUNT_PAGE) return length - after;
    backwardFrom = `(${backward[backward.length - 1]?.[0] ?? ''}`;
  }
}

/** RENAMEs each shadow hash over its live key (marking it with the rebuild id first); returns how many. */
async function switchOver(redis: Redis, writes: FencedWrites, shadowPrefix: string, livePrefix: string, rebuildId: string): Promise<number> {
  let switched = 0;
  for await (const keys of scanSnapshotHashes(redis, shadowPrefix)) {
    switched += await writes.switchSnapshots(keys.map((key) => [key, `${livePrefix}${key.slice(shadowPrefix.length)}`] as const), rebuildId);
  }
  return switched;
}

/** Deletes live snapshots that this rebuild did not write (the fold of the streams has no such snapshot). */
async function deleteUnswitched(redis: Redis, writes: FencedWrites, livePrefix: string, rebuildId: string, only: ReadonlySet<string> | undefined): Promise<void> {
  for await (const keys of scanSnapshotHashes(redis, livePrefix)) {
    const candidates = only ? keys.filter((k) => only.has(k.slice(livePrefix.length))) : keys;
    if (candidates.length > 0) await writes.unlinkSnapshots(candidates, rebuildId);
  }
}

/** Deletes every snapshot hash under a prefix. */
async function deleteSnapshotHashes(redis: Redis, writes: FencedWrites, prefix: string): Promise<void> {
  for await (const keys of scanSnapshotHashes(redis, prefix)) await writes.unlinkSnapshots(keys, undefined);
}

/** For clean-up after a failure: a lost lease is expected there, anything else is not. */
function unlessLeaseLost(error: unknown): void {
  if (!(error instanceof RebuildLeaseLostError)) throw error;
}

/**
 * Snapshot hashes under a prefix: keys that are the prefix plus a valid snapshot id and hold a hash
 * (never a stream or anything else that happens to share the prefix). SCAN, never KEYS.
 */
async function* scanSnapshotHashes(redis: Redis, prefix: string): AsyncGenerator<string[]> {
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  const isSnapshotKey = (key: string) => key.startsWith(prefix) && SNAPSHOT_ID.test(key.slice(prefix.length));
  let cursor = '0';
  do {
    const [next, keys] = (await redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', SWITCH_BATCH, 'TYPE', 'hash')) as [string, string[]];
    const found = keys.filter(isSnapshotKey);
    if (found.length > 0) yield found;
    cursor = next;
  } while (cursor !== '0');
}
