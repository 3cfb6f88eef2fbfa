import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { globEscape, isCluster, scanKeys, type RedisEventStore, type StreamEntry } from '@redsource/event-store';
import { compareEntryIds, snapshotKeys, SnapshotStore, type BatchEntry } from '@redsource/snapshot-store';
import { BatchBuilder } from './batch-builder.ts';
import { ProcessorStateError, RebuildKeyPrefixError, RebuildLeaseLostError, ReplayImpossibleError } from './errors.ts';
import { discoverStreams } from './discovery.ts';
import { NO_MARKERS, type FencedWrites, type SnapshotMarkers } from './fenced-writes.ts';
import type { HandlerRegistry } from './handlers.ts';
import { processorKeys } from './keys.ts';
import { processorSettingsSchema } from './options.ts';
import { partitionKeys } from './partitions/keys.ts';
import { partitionOfEntry } from './partitions/subject.ts';
import { silentLogger, type Logger } from './logger.ts';
import {
  parseRebuildLeaseSettings,
  RebuildLease,
  type RebuildLeaseSettingsInput,
  type RunningRebuild,
} from './rebuild-lease.ts';

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
 * The live key prefix cannot be rebuilt on a Redis Cluster: a shadow key in the same slot as each
 * live key cannot be named for it (a `}` with no valid hash tag before it), or it is too long.
 */

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
 *
 * On a Redis Cluster (an ioredis Cluster client, passed as `redis`) the same steps run. What holds
 * there, and how it differs from one Redis:
 * - the RENAME: each shadow hash shares its live key's slot (shadowNaming), so it is one atomic
 *   step per snapshot, as on one Redis; SCAN runs on every master (scanKeys), and the switch scans
 *   again until none is left, as a reshard can hide a key from one scan;
 * - one rebuild at a time: the lease, its fencing counter and the state share a slot, so taking
 *   the lease (RebuildRunningError) and writing the state are checked as on one Redis;
 * - fencing: every other write is checked against what its own slot holds (see FencedWrites):
 *   a stream's keys against the stream's rebuild epoch (the token copied there right after the
 *   lease was taken), snapshot hashes against their markers and `_rebuild` marks. A rebuild that
 *   lost its lease and was taken over is refused by the first check in a slot its successor has
 *   written, and stops in the process before any new write (`guard`). Where one Redis writes
 *   nothing at all, a cluster may still land a write the former holder had already started, and
 *   none of those changes the outcome: the snapshot writes of an apply whose check passed (the
 *   same fold of the same entries, skipped by the successor through the markers, or a shadow
 *   hash of its own generation re-created after the switch: never switched, deleted by the next
 *   fresh start), or switches and deletions already sent (refused where the successor has
 *   written, no-ops where it switched). Unlike one Redis, a lease that expired with no successor
 *   yet does not by itself stop the stream writes (nothing else wrote there; `guard` stops the
 *   rebuild);
 * - an entry's changes to snapshots in different slots are applied each exactly once, not together
 *   (SnapshotStore.applyBatch), and readers see each snapshot switched on its own, as on one Redis;
 * - the hold: the live processors' bookkeeping is held atomically (apply-batch.lua), but the
 *   snapshot writes of a live apply whose check passed just before the hold can land later, after
 *   the switch. The rebuilt hash keeps the rebuild's markers (`_at:<stream>`, the last entry folded
 *   into it), and a live apply skips what they cover (apply-snapshots.lua), so such a late write
 *   applies nothing twice; one that lands before the switch is replaced by it.
 */
export async function replay(options: ReplayOptions): Promise<ReplayProgress> {
  const { redis, snapshots: live } = options;
  // Every stream that feeds the projection: a stream left out would have its snapshots' part lost at the switch.
  const streams = options.streams ?? [
    ...new Set([...options.handlers.streams, ...(await discoverStreams(redis, options.handlers.streamPrefixes))]),
  ];
  if (streams.length === 0)
    throw new ProcessorStateError('Nothing to replay: no stream is registered or matches a registered prefix.');
  const settings = parseRebuildLeaseSettings(options.lease ?? {});
  // A live prefix no shadow can be named for on a cluster is refused before the lease is taken.
  shadowNaming(live.keyPrefix, 'g0', isCluster(redis));
  for (const stream of streams) {
    const trimmed = await redis.get(processorKeys.trimmedBelow(stream));
    if (trimmed) throw new ReplayImpossibleError(stream, trimmed);
  }
  const lease = await RebuildLease.acquire(redis, {
    target: live,
    settings,
    wait: options.wait ?? false,
    onWaiting: options.onWaiting,
  });
  try {
    return await rebuild(options, streams, lease);
  } finally {
    await lease.end();
  }
}

/** The rebuild itself, under the lease: every write through `lease.writes`, so none lands once the lease is lost. */
async function rebuild(
  options: ReplayOptions,
  streams: readonly string[],
  lease: RebuildLease,
): Promise<ReplayProgress> {
  const { redis, snapshots: live } = options;
  const writes = lease.writes;
  const only = options.only ? new Set(options.only) : undefined;
  const logger = options.logger ?? silentLogger;
  const cluster = isCluster(redis);
  const stateKey = processorKeys.rebuild(live.projection, live.keyPrefix);
  const started = Date.now();
  const state = await redis.hgetall(stateKey);
  const phaseFound = state['phase'] ?? null;
  // A rebuild's id names its shadow's generation: 'g' and the token of the holder that started it
  // (a rebuild taken over keeps it). A fresh start never meets what an earlier one left (see shadowNaming).
  const rebuildId = phaseFound === null ? `g${lease.token}` : (state['id'] ?? '');
  if (!/^g\d+$/.test(rebuildId))
    throw new ProcessorStateError(
      `The rebuild state '${stateKey}' has no valid id ('${rebuildId}'): delete that key to start the rebuild over.`,
    );
  const naming = shadowNaming(live.keyPrefix, rebuildId, cluster);
  const shadow = new SnapshotStore<unknown>({
    redis,
    keyPrefix: naming.keyPrefix,
    keySuffix: naming.keySuffix,
    projection: `${live.projection}:rebuild`,
  });
  const builder = new BatchBuilder(
    options.eventStore.codec,
    options.handlers,
    shadow,
    { maxDeliveries: options.maxDeliveries ?? 3, retryBackoffMs: 50 },
    logger,
  );
  // The count the group processes the stream with wins (stored when a processor prepares it); then the option, then the default.
  const configured = options.partitioning?.partitions ?? processorSettingsSchema.shape.partitions.parse(undefined);
  const stored = options.partitioning
    ? await redis.get(partitionKeys.count(streams[0] ?? '', options.partitioning.group))
    : null;
  const partitions = stored !== null && /^\d+$/.test(stored) ? Number(stored) : configured;
  const subjectFields = (stream: string) =>
    options.eventStore.catalog.has(stream) ? options.eventStore.catalog.subjectFields(stream) : [];
  /** The live snapshots' applied position in each partition of a stream. */
  const liveCursors = async (stream: string) =>
    Promise.all(Array.from({ length: partitions }, (_, p) => live.cursor(stream, p)));
  const highest = (ids: readonly string[]) => ids.reduce((a, b) => maxId(a, b), '0-0');

  const asked = only ? [...only].sort().join(',') : '';
  const resumed = state['only'];
  if (resumed !== undefined && resumed !== asked) {
    throw new ProcessorStateError(
      `A rebuild of ${resumed ? `users ${resumed}` : 'every snapshot'} was interrupted; resume it with the same users (or none) before starting another.`,
    );
  }
  // On a cluster: this rebuild's token into each stream's epoch, before any write to the stream's keys.
  await writes.claimStreams(streams);
  // The markers a shadow apply writes on a cluster (apply-snapshots.lua: `_at:<stream>`, no partition).
  const rebuildMarkers: SnapshotMarkers = cluster ? { rebuild: streams.map((s) => `_at:${s}`), live: [] } : NO_MARKERS;
  if (phaseFound === null) {
    // A fresh start: clear what an abandoned shadow may hold. The dead-lettered ids stay (see resetProgress).
    await deleteShadows(redis, writes, naming, rebuildMarkers);
    for (const stream of streams) {
      await writes.set(shadow.cursorKey(stream), '0-0', stream);
      await writes.set(shadow.totalsKey(stream), '', stream);
    }
  }
  // Taking over an `only` rebuild that was catching up: its holds stay (set again), so the live
  // cursors stay where its catch-up saw them and this run leaves out the same entries it did (a
  // write of it that lands late, on a cluster, is then the same as this run's).
  const resumedHeld = only !== undefined && phaseFound === 'catching-up';
  if (resumedHeld) {
    for (const stream of streams) await writes.set(live.holdKey(stream), String(Date.now()), stream);
  } else if (phaseFound !== null && phaseFound !== 'switching') {
    // Taking over a rebuild that lost its lease while catching up: its holds would stall the live
    // processors through this run's whole fold. Nothing was switched yet; this run holds them again.
    for (const stream of streams) await writes.set(live.holdKey(stream), '', stream);
  }

  const lastId = async (stream: string) => (await redis.xrevrange(stream, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0';
  let progress: ReplayProgress = {
    phase: 'building',
    stream: streams[0] ?? '',
    done: 0,
    total: 0,
    applied: 0,
    stepped: 0,
    deadLetteredBefore: 0,
    switched: 0,
    elapsedMs: 0,
  };
  const report = async (update: Partial<ReplayProgress>) => {
    progress = { ...progress, ...update, elapsedMs: Date.now() - started };
    if (progress.phase !== 'done')
      await writes.hset(stateKey, {
        phase: progress.phase,
        done: progress.done,
        total: progress.total,
        updatedAt: Date.now(),
      });
    options.onProgress?.(progress);
  };
  // A full rebuild folds to the end of the stream; `only` to where the live partitions are (each
  // entry's own partition decides whether it is in: see keepOnly).
  const target = async (stream: string) => (only ? highest(await liveCursors(stream)) : lastId(stream));
  // The total is known before the first entry is read (XLEN, or a count from the nearer end), so the
  // state's first write already carries it: no "0 of 0" while a long stream would be counted.
  const totals = await Promise.all(
    streams.map(
      async (s) =>
        [await countUpTo(redis, s, await target(s)), await countUpTo(redis, s, await shadow.cursor(s))] as const,
    ),
  );
  progress = { ...progress, total: totals.reduce((n, [t]) => n + t, 0), done: totals.reduce((n, [, d]) => n + d, 0) };
  if (phaseFound === null)
    await writes.hset(stateKey, {
      id: rebuildId,
      phase: 'building',
      startedAt: started,
      only: asked,
      total: progress.total,
      done: progress.done,
    });
  await report({});

  /**
   * Folds the stream into the shadow from its cursor up to `upTo`. `stopAtUnapplied` (`only`, before
   * the hold): stops before the first entry its live partition has not applied yet, as the live
   * cursors still move then; under the hold each entry beyond its partition's cursor is decided.
   */
  const fold = async (stream: string, upTo: () => Promise<string>, stopAtUnapplied = false) => {
    const from = await shadow.cursor(stream);
    const limit = await upTo();
    if (compareEntryIds(from, limit) >= 0) return;
    const cursors = only ? await liveCursors(stream) : [];
    const partitionOf = (entry: StreamEntry) => partitionOfEntry(entry.fields, subjectFields(stream), partitions);
    const pages = options.eventStore.readPages(stream, {
      from: `(${from}`,
      to: limit,
      pageSize: options.pageSize ?? 1_000,
    });
    // The generator returns nothing: its done result carries no value.
    let next: Promise<IteratorResult<StreamEntry[], void>> = pages.next();
    for (;;) {
      const { value: read, done } = await next;
      if (done || read.length === 0) return;
      lease.assertHeld();
      // The next page is read while this one is folded and applied.
      next = pages.next();
      next.catch(() => undefined);
      const cut = stopAtUnapplied
        ? read.findIndex((entry) => compareEntryIds(entry.id, cursors[partitionOf(entry)] ?? '0-0') > 0)
        : -1;
      const page = cut < 0 ? read : read.slice(0, cut);
      if (page.length === 0) return;
      const bad: { entryId: string; reason: string }[] = [];
      const built = await builder.build(stream, page, { onBad: (entryId, reason) => bad.push({ entryId, reason }) });
      const before = await deadLetteredBefore(
        redis,
        stream,
        bad.map((b) => b.entryId),
      );
      // An entry a processor (or an earlier rebuild) dead-lettered is counted, not warned about again.
      for (const b of bad)
        if (!before.has(b.entryId)) logger.warn({ stream, ...b }, 'entry cannot be applied: dead-lettering it');
      const entries = only
        ? built.map((e, i) => {
            // Applied live only if its partition's cursor is past it: else the live processors apply it after the switch.
            return keepOnly(
              e,
              only,
              compareEntryIds(e.entryId, cursors[partitionOf(page[i] as StreamEntry)] ?? '0-0') <= 0,
            );
          })
        : built;
      const result = await writes.applyBatch(shadow, {
        stream,
        entries,
        deadLetterStream: processorKeys.deadLetters(stream),
        contiguous: true,
      });
      // With `only`, an entry of another user is applied as an empty change: it moves the cursor, it is not these users' work.
      const applied = only
        ? Math.min(result.applied, entries.filter((e) => 'changes' in e && e.changes.length > 0).length)
        : result.applied;
      await report({
        stream,
        done: progress.done + page.length,
        applied: progress.applied + applied,
        stepped: progress.stepped + bad.length,
        deadLetteredBefore: progress.deadLetteredBefore + before.size,
      });
      if (cut >= 0) return;
    }
  };

  if ((await redis.hget(stateKey, 'phase')) !== 'switching') {
    // 1. Fold into the shadow while the live processors carry on. `only`: up to the first entry not
    // applied live yet (an entry left out of the shadow now could be applied live before the hold).
    if (!resumedHeld) {
      for (const stream of streams) {
        const end = await target(stream);
        await fold(stream, async () => end, only !== undefined);
      }
    }
    // 2. Hold the live streams and catch up with the live cursor where it is ahead; then switch.
    await report({ phase: 'catching-up' });
    if (!resumedHeld) for (const stream of streams) await writes.set(live.holdKey(stream), String(Date.now()), stream);
    // Held: no live apply moves now. A full rebuild takes in what arrived meanwhile; `only` what the live partitions applied.
    for (const stream of streams)
      await fold(stream, async () => (only ? highest(await liveCursors(stream)) : lastId(stream)));
    await writes.hset(stateKey, { phase: 'switching' });
  } else {
    for (const stream of streams) await writes.set(live.holdKey(stream), String(Date.now()), stream);
  }

  // 3. Switch: every shadow hash over its live key, then the live snapshots the fold did not produce.
  await report({ phase: 'switching' });
  try {
    // Where each live partition stands once switched: everything up to the shadow's cursor (a full
    // rebuild), or up to the partition's own cursor (`only`). Read under the hold, so it stays put.
    const switchedAt = new Map<string, string[]>();
    for (const stream of streams) {
      const folded = await shadow.cursor(stream);
      switchedAt.set(
        stream,
        (await liveCursors(stream)).map((cursor) => (only ? cursor : maxId(folded, cursor))),
      );
    }
    // On a cluster the switch and the deletions read the snapshots' markers (see FencedWrites):
    // the live processors' are `_at:<stream>:p<n>` (SnapshotStore.applyBatch on a cluster).
    const markers: SnapshotMarkers = cluster
      ? {
          rebuild: rebuildMarkers.rebuild,
          live: streams.flatMap((s) => (switchedAt.get(s) ?? []).map((at, p) => [`_at:${s}:p${p}`, at] as const)),
        }
      : NO_MARKERS;
    const switched = await switchOver(redis, writes, shadow, live, rebuildId, markers);
    await report({ switched });
    await deleteUnswitched(redis, writes, live, rebuildId, only, markers);
    // The snapshots now hold everything up to the shadow's cursor: each live partition goes on from
    // there (an entry of it at or before that is skipped as applied). `only` leaves them as they are.
    if (!only) {
      for (const stream of streams) {
        const cursors = await liveCursors(stream);
        for (const [p, cursor] of cursors.entries()) {
          const at = switchedAt.get(stream)?.[p] ?? cursor;
          if (compareEntryIds(at, cursor) > 0) await writes.set(live.cursorKey(stream, p), at, stream);
        }
      }
    }
  } finally {
    // Released also when switching failed. A rebuild that lost its lease cannot: the holds stay for
    // the one that took over, which finishes the switch.
    for (const stream of streams) await writes.set(live.holdKey(stream), '', stream).catch(unlessLeaseLost);
  }
  for (const stream of streams) {
    await writes.set(shadow.cursorKey(stream), '', stream);
    await writes.set(shadow.totalsKey(stream), '', stream);
  }
  await report({ phase: 'done' });
  await writes.set(stateKey, '');
  logger.info({ ...progress }, 'rebuild switched over');
  return progress;
}

/** The rebuild running now, if any: what the dashboard and status show. */
export async function rebuildState(
  redis: Redis,
  snapshots: Pick<SnapshotStore<unknown>, 'projection' | 'keyPrefix'>,
): Promise<{ phase: string; done: number; total: number; startedAt: number; updatedAt: number } | undefined> {
  const state = await redis.hgetall(processorKeys.rebuild(snapshots.projection, snapshots.keyPrefix));
  if (!state['phase']) return undefined;
  return {
    phase: state['phase'],
    done: Number(state['done'] ?? 0),
    total: Number(state['total'] ?? 0),
    startedAt: Number(state['startedAt'] ?? 0),
    updatedAt: Number(state['updatedAt'] ?? 0),
  };
}

const SHADOW = 'redsource:rebuild:';
const MAX_PREFIX = 256;
const ID_PATTERN = '[A-Za-z0-9_-]{1,64}';

/** How a rebuild names its shadow hashes: the shadow store's key prefix and suffix, and how to find every shadow hash of these snapshots. */
export interface ShadowNaming {
  readonly keyPrefix: string;
  /** Ends in the rebuild's id (its generation). */
  readonly keySuffix: string;
  /** SCAN MATCH globs that every shadow hash of these snapshots matches, of any generation or of the naming before generations. */
  readonly patterns: readonly string[];
  /** Whether a key is a shadow hash of these snapshots, of any generation (this one included) or of the naming before generations. */
  isShadow(key: string): boolean;
}

/**
 * The shadow's key naming. Each shadow hash shares its live key's Redis Cluster slot, so the switch
 * RENAMEs within one slot: with a hash tag in the live prefix (`{users}:user_`), the shadow key is
 * `redsource:rebuild:` + live key (the same tag); without one, the live key is wrapped in a tag,
 * `redsource:rebuild:{` + live key + `}` (the tag is the whole live key, which is what Redis hashes
 * for it). Then `:` and the rebuild id, `g<n>`: a shadow hash written late by a rebuild that lost its
 * lease (a write it had already started; on a cluster nothing in the hash's slot can refuse that)
 * lands in its own generation, never in the shadow of a rebuild started after it. The same naming on
 * one Redis. Refused on a cluster (RebuildKeyPrefixError): a live prefix with a `}` and no valid tag
 * before it (no shadow key can share its slot), or one too long for the shadow prefix (256); on one
 * Redis such a long one is hashed.
 */
export function shadowNaming(livePrefix: string, rebuildId: string, cluster: boolean): ShadowNaming {
  const tag = hashTag(livePrefix);
  if (cluster && tag === undefined && livePrefix.includes('}')) {
    throw new RebuildKeyPrefixError(
      livePrefix,
      "it has a '}' with no valid hash tag ('{…}', not empty) before it, so no shadow key can be named in each live key's slot",
    );
  }
  let keyPrefix = tag === undefined ? `${SHADOW}{${livePrefix}` : `${SHADOW}${livePrefix}`;
  let beforeId = tag === undefined ? '}:' : ':';
  const hashed = createHash('sha1').update(livePrefix).digest('hex');
  if (keyPrefix.length > MAX_PREFIX) {
    beforeId = ':';
    if (!cluster) keyPrefix = `${SHADOW}${hashed}:`;
    else if (tag !== undefined && `${SHADOW}{${tag}}:${hashed}:`.length <= MAX_PREFIX)
      keyPrefix = `${SHADOW}{${tag}}:${hashed}:`;
    else
      throw new RebuildKeyPrefixError(
        livePrefix,
        `the shadow key prefix would be longer than ${MAX_PREFIX} characters`,
      );
  }
  // Before generations: `redsource:rebuild:` + live prefix (hashed when long) + id, nothing after.
  const legacyPrefix = `${SHADOW}${livePrefix}`.length <= MAX_PREFIX ? `${SHADOW}${livePrefix}` : `${SHADOW}${hashed}:`;
  const generations = new RegExp(`^${regexEscape(keyPrefix)}${ID_PATTERN}${regexEscape(beforeId)}g\\d+$`);
  const legacy = new RegExp(`^${regexEscape(legacyPrefix)}${ID_PATTERN}$`);
  return {
    keyPrefix,
    keySuffix: `${beforeId}${rebuildId}`,
    patterns: [...new Set([`${globEscape(keyPrefix)}*`, `${globEscape(legacyPrefix)}*`])],
    isShadow: (key) => generations.test(key) || legacy.test(key),
  };
}

/** A key's hash tag as Redis Cluster finds it: between the first `{` and the next `}`, if not empty. */
function hashTag(key: string): string | undefined {
  const open = key.indexOf('{');
  const close = open < 0 ? -1 : key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : undefined;
}

function regexEscape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
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

/**
 * RENAMEs each shadow hash of this rebuild over its live key (marking it with the rebuild id first);
 * returns how many. Scans again until a whole scan finds none left: on a cluster a key whose slot
 * moves to a master already scanned (a reshard meanwhile) is missed by that scan, and a live
 * snapshot whose shadow was not switched would be deleted next.
 */
async function switchOver(
  redis: Redis,
  writes: FencedWrites,
  shadow: SnapshotStore<unknown>,
  live: SnapshotStore<unknown>,
  rebuildId: string,
  markers: SnapshotMarkers,
): Promise<number> {
  let switched = 0;
  for (let found = true; found;) {
    found = false;
    for await (const keys of scanKeys(redis, { match: shadow.keyPattern(), type: 'hash', count: SWITCH_BATCH })) {
      const pairs = keys.flatMap((key) => {
        const id = shadow.snapshotIdOf(key);
        return id === undefined ? [] : [[key, live.key(id)] as const];
      });
      if (pairs.length === 0) continue;
      found = true;
      switched += await writes.switchSnapshots(pairs, rebuildId, markers);
    }
  }
  return switched;
}

/** Deletes live snapshots that this rebuild did not write (the fold of the streams has no such snapshot). */
async function deleteUnswitched(
  redis: Redis,
  writes: FencedWrites,
  live: SnapshotStore<unknown>,
  rebuildId: string,
  only: ReadonlySet<string> | undefined,
  markers: SnapshotMarkers,
): Promise<void> {
  for await (const keys of scanKeys(redis, { match: live.keyPattern(), type: 'hash', count: SWITCH_BATCH })) {
    const candidates = keys.filter((key) => {
      const id = live.snapshotIdOf(key);
      return id !== undefined && (!only || only.has(id));
    });
    if (candidates.length > 0) await writes.unlinkSnapshots(candidates, rebuildId, markers);
  }
}

/** Deletes every shadow hash of these snapshots: every generation, and the naming before generations. */
async function deleteShadows(
  redis: Redis,
  writes: FencedWrites,
  naming: ShadowNaming,
  markers: SnapshotMarkers,
): Promise<void> {
  for (const match of naming.patterns) {
    for await (const keys of scanKeys(redis, { match, type: 'hash', count: SWITCH_BATCH })) {
      const doomed = keys.filter((key) => naming.isShadow(key));
      if (doomed.length > 0) await writes.unlinkSnapshots(doomed, undefined, markers);
    }
  }
}

/** For clean-up after a failure: a lost lease is expected there, anything else is not. */
function unlessLeaseLost(error: unknown): void {
  if (!(error instanceof RebuildLeaseLostError)) throw error;
}
