import { ReplyError, type Redis, type Result } from 'ioredis';
import type { z } from 'zod';
import { compareEntryIds } from './entry-ids.ts';
import {
  CorruptSnapshotError,
  InvalidMutationError,
  InvalidSnapshotIdError,
  InvalidSnapshotStoreOptionsError,
  SnapshotStoreError,
} from './errors.ts';
import { SNAPSHOT_ID, snapshotKeys } from './keys.ts';
import { decodeHash, type Snapshot, type SnapshotVersion } from './layout.ts';
import { encodeMutations, type SnapshotChange } from './mutations.ts';
import { keySlot } from './cluster-slot.ts';
import { loadScript } from './scripts.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceApplyBatch(
      numKeys: number,
      ...keysAndArgs: (string | number)[]
    ): Result<[number, number, number, string, string, number], Context>;
    redsourceCheckBatch(
      numKeys: number,
      ...keysAndArgs: (string | number)[]
    ): Result<[number, string, string, ...string[]], Context>;
    redsourceApplySnapshots(
      numKeys: number,
      ...keysAndArgs: (string | number)[]
    ): Result<[number, ...string[]], Context>;
    redsourceApplyPartitions(numKeys: number, ...keysAndArgs: (string | number)[]): Result<unknown[], Context>;
  }
}

const ENTRY_ID = /^\d+-\d+$/;

const scripts = {
  redsourceApplyBatch: loadScript('apply-batch.lua'),
  redsourceCheckBatch: loadScript('check-batch.lua'),
  redsourceApplySnapshots: loadScript('apply-snapshots.lua'),
  redsourceApplyPartitions: loadScript('apply-partitions.lua'),
};

/**
 * Partition batches asked for in the same turn of the event loop go out as one script call
 * (apply-partitions.lua) while they hold this many entries together: a processor's read hands it
 * a batch per partition, and at a steady rate each holds a few entries, so a call each would cost
 * Redis and the processor more in fixed costs than in entries. Larger batches go alone: one call
 * holds Redis for its whole run.
 */
const SHARED_CALL_MAX_ENTRIES = 500;

/** A partition batch waiting for the others of its turn. */
interface WaitingBatch {
  readonly input: ApplyBatchInput;
  readonly entries: readonly BatchEntry[];
  readonly resolve: (result: ApplyBatchResult) => void;
  readonly reject: (error: unknown) => void;
}

/** One stream entry in a batch: its changes to snapshots, or why it goes to the dead-letter stream. */
export type BatchEntry =
  | { readonly entryId: string; readonly changes: readonly SnapshotChange[] }
  | { readonly entryId: string; readonly deadLetter: { readonly reason: string; readonly fields: readonly string[] } };

export interface ApplyBatchInput {
  readonly stream: string;
  readonly entries: readonly BatchEntry[];
  readonly deadLetterStream: string;
  /** XACK the handled entries in this group, in the same atomic step. Omit for a replay. */
  readonly ackGroup?: string;
  /** The consumer group a dead letter names (default ackGroup): a partitioned processor's, which acks nothing here. */
  readonly group?: string;
  /**
   * The entries are consecutive entries of the stream (as one XREADGROUP `>` or XRANGE returns them),
   * so the script checks for an unapplied predecessor once instead of per entry. Default false.
   */
  readonly contiguous?: boolean;
  /**
   * The entries are one partition's entries of the stream after `readFrom` up to `readThrough`, as
   * its holder read them from the stream (entries of other partitions left out; none is fine). The
   * partition's cursor (all of its entries up to it are applied) must not be below `readFrom`
   * (else RS_PARTITION_GAP, nothing written: read again from the cursor); entries at or below it
   * are skipped as applied; afterwards it is at least `readThrough`.
   */
  readonly partition?: { readonly index: number; readonly readFrom: string; readonly readThrough: string };
  /**
   * A fencing token and the key that must hold it (a rebuild's lease, a partition's epoch): the
   * script checks it before any write and fails with `code` (default RS_REBUILD_LEASE_LOST),
   * writing nothing, when the key holds another token.
   */
  readonly fence?: { readonly key: string; readonly token: string; readonly code?: string };
}

export interface ApplyBatchResult {
  /** Entries whose changes were applied now. */
  readonly applied: number;
  /** Entries applied before (redelivered): recognised by the cursor and not applied again. */
  readonly skipped: number;
  readonly deadLettered: number;
  /** First entry not handled because an earlier entry of the stream is not applied yet; retry from it. */
  readonly blockedAt: string | undefined;
  /** Entries handled (applied, skipped or dead-lettered), a prefix of the input in id order. */
  readonly handled: number;
  /** Last applied entry id of the stream after this batch. */
  readonly cursor: string;
  /** True when nothing was applied because a rebuild holds the stream (see hold()). */
  readonly held: boolean;
}

export interface SnapshotStoreOptions<Fields> {
  readonly redis: Redis;
  /** Snapshot key = prefix + id (+ keySuffix), e.g. `user_snapshot_` for `user_snapshot_1`. */
  readonly keyPrefix: string;
  /**
   * Text after the id in every snapshot key (default none): a rebuild's shadow keys end in their
   * generation, and wrap the live key in a hash tag to share its Redis Cluster slot.
   */
  readonly keySuffix?: string;
  /** Names the applied-position cursors; a rebuild uses a second projection beside the live one. */
  readonly projection?: string;
  /** Validates the fields of every snapshot read. */
  readonly fieldsSchema?: z.ZodType<Fields>;
}

/** Snapshot hashes: read them, and apply batches of entries to them exactly once. */
export class SnapshotStore<Fields = Record<string, unknown>> {
  readonly keyPrefix: string;
  readonly keySuffix: string;
  readonly projection: string;
  /** Its connection: the processor re-reads an entry's exact bytes through it (RS_NOT_UTF8). */
  readonly redis: Redis;
  private readonly fieldsSchema: z.ZodType<Fields> | undefined;
  private waitingBatches: WaitingBatch[] = [];

  constructor(options: SnapshotStoreOptions<Fields>) {
    this.redis = options.redis;
    if (!/^[A-Za-z0-9_:.{}-]{1,256}$/.test(options.keyPrefix)) {
      throw new InvalidSnapshotStoreOptionsError(
        `keyPrefix '${options.keyPrefix}' must be 1-256 characters from A-Z a-z 0-9 _ : . - { }`,
      );
    }
    this.keyPrefix = options.keyPrefix;
    this.keySuffix = options.keySuffix ?? '';
    if (!/^[A-Za-z0-9_:.{}-]{0,64}$/.test(this.keySuffix)) {
      throw new InvalidSnapshotStoreOptionsError(
        `keySuffix '${this.keySuffix}' must be 0-64 characters from A-Z a-z 0-9 _ : . - { }`,
      );
    }
    this.projection = options.projection ?? 'snapshots';
    this.fieldsSchema = options.fieldsSchema;
    for (const [name, lua] of Object.entries(scripts)) {
      if (typeof (this.redis as unknown as Record<string, unknown>)[name] !== 'function')
        this.redis.defineCommand(name, { lua });
    }
  }

  key(id: string): string {
    if (!SNAPSHOT_ID.test(id)) throw new InvalidSnapshotIdError(id);
    return snapshotKeys.snapshot(this.keyPrefix, id) + this.keySuffix;
  }

  /** A SCAN MATCH glob that every snapshot key of this store matches (check each key found with snapshotIdOf). */
  keyPattern(): string {
    const glob = (text: string) => text.replace(/[*?[\]\\]/g, '\\$&');
    return `${glob(this.keyPrefix)}*${glob(this.keySuffix)}`;
  }

  /** The snapshot id of one of this store's snapshot keys (prefix + valid id + suffix); undefined for any other key. */
  snapshotIdOf(key: string): string | undefined {
    if (
      !key.startsWith(this.keyPrefix) ||
      !key.endsWith(this.keySuffix) ||
      key.length < this.keyPrefix.length + this.keySuffix.length
    )
      return undefined;
    const id = key.slice(this.keyPrefix.length, key.length - this.keySuffix.length);
    return SNAPSHOT_ID.test(id) ? id : undefined;
  }

  cursorKey(stream: string, partition?: number): string {
    return snapshotKeys.cursor(stream, this.projection, partition);
  }

  totalsKey(stream: string): string {
    return snapshotKeys.totals(stream, this.projection);
  }

  /** Entries of the stream applied, skipped as already applied, and dead-lettered, by every process together. */
  async totals(stream: string): Promise<{ applied: number; skipped: number; deadLettered: number }> {
    const hash = await this.redis.hgetall(this.totalsKey(stream));
    return {
      applied: Number(hash['applied'] ?? 0),
      skipped: Number(hash['skipped'] ?? 0),
      deadLettered: Number(hash['deadLettered'] ?? 0),
    };
  }

  holdKey(stream: string): string {
    return snapshotKeys.hold(stream, this.projection);
  }

  /**
   * Stops every apply of the stream (they report `held` and wait) until release(): a rebuild
   * switches snapshots over while nothing moves. The flag is atomic with the apply script.
   */
  async hold(stream: string): Promise<void> {
    await this.redis.set(this.holdKey(stream), String(Date.now()));
  }

  async release(stream: string): Promise<void> {
    await this.redis.del(this.holdKey(stream));
  }

  async isHeld(stream: string): Promise<boolean> {
    return (await this.redis.exists(this.holdKey(stream))) === 1;
  }

  /** Forgets what was applied (cursor and totals): the stream is applied again from its first entry. */
  async resetProgress(stream: string): Promise<void> {
    // The set of dead-lettered ids stays: what was dead-lettered once is not dead-lettered again by the new pass.
    await this.redis.multi().set(this.cursorKey(stream), '0-0').del(this.totalsKey(stream)).exec();
  }

  /** The last entry id of the stream (or of one of its partitions) applied to the snapshots (`0-0` = none). */
  async cursor(stream: string, partition?: number): Promise<string> {
    return (await this.redis.get(this.cursorKey(stream, partition))) ?? '0-0';
  }

  /** Moves the cursor (used by a rebuild's switch-over, while the stream is held). */
  async setCursor(stream: string, entryId: string): Promise<void> {
    await this.redis.set(this.cursorKey(stream), entryId);
  }

  /** Sets the cursor only if none exists: a projection that starts at `latest` must not wait for older entries. */
  async initCursor(stream: string, entryId: string): Promise<void> {
    await this.redis.set(this.cursorKey(stream), entryId, 'NX');
  }

  async read(id: string): Promise<Snapshot<Fields> | undefined> {
    return (await this.readVersioned(id))?.snapshot;
  }

  /**
   * A snapshot with its version, read in one step: what a reader caching a rendering of it keys
   * the cache by (see version()).
   */
  async readVersioned(id: string): Promise<{ snapshot: Snapshot<Fields>; version: SnapshotVersion } | undefined> {
    const key = this.key(id);
    const hash = await this.redis.hgetall(key);
    const snapshot = this.decode(id, key, hash);
    return snapshot && { snapshot, version: { incarnation: hash['_inc'], revision: hash['_rev'] ?? '0' } };
  }

  /**
   * Which content of the snapshot is stored now, without reading it: the same version always means the
   * same content. `_rev` alone does not (a rebuild or a deleted and recreated snapshot can repeat it):
   * with the hash's incarnation it does. Hashes written before incarnations existed have none, so no
   * version of theirs ever matches: callers must not cache those.
   */
  async version(id: string): Promise<SnapshotVersion | undefined> {
    const [incarnation, revision] = await this.redis.hmget(this.key(id), '_inc', '_rev');
    return revision === null || revision === undefined
      ? undefined
      : { incarnation: incarnation ?? undefined, revision };
  }

  /**
   * Several snapshots in one round trip; `undefined` where none exists. On a Redis Cluster the
   * snapshots live on several nodes, and ioredis refuses a pipeline across nodes: one pipeline per
   * slot then (its keys are on one node, even while the slot moves), all sent at once.
   */
  async readMany(ids: readonly string[]): Promise<(Snapshot<Fields> | undefined)[]> {
    if (ids.length === 0) return [];
    const keys = ids.map((id) => this.key(id));
    const cluster = isCluster(this.redis);
    const groups = new Map<number, number[]>();
    keys.forEach((key, i) => {
      const slot = cluster ? keySlot(key) : 0;
      const group = groups.get(slot);
      if (group) group.push(i);
      else groups.set(slot, [i]);
    });
    const replies: [Error | null, unknown][] = [];
    await Promise.all(
      [...groups.values()].map(async (indexes) => {
        const pipeline = this.redis.pipeline();
        for (const i of indexes) pipeline.hgetall(keys[i] as string);
        const answered = (await pipeline.exec()) ?? [];
        indexes.forEach((i, n) => (replies[i] = answered[n] ?? [new Error('no reply'), null]));
      }),
    );
    return ids.map((id, i) => {
      const [error, hash] = replies[i] ?? [new Error('no reply'), null];
      if (error) throw error;
      return this.decode(id, keys[i] as string, hash as Record<string, string>);
    });
  }

  /**
   * Applies entries of one stream in one script call: each entry exactly once, in stream order,
   * atomically with the cursor, dead-lettering and (optionally) the XACK.
   */
  async applyBatch(input: ApplyBatchInput): Promise<ApplyBatchResult> {
    for (const entry of input.entries) {
      if (!ENTRY_ID.test(entry.entryId))
        throw new InvalidMutationError(`entry id '${entry.entryId}' is not a stream id like 1700000000000-0`);
    }
    const entries = isSorted(input.entries)
      ? input.entries
      : [...input.entries].sort((a, b) => compareEntryIds(a.entryId, b.entryId));
    // The scripts take each entry past the cursor as new: one given twice would be applied twice.
    for (let i = 1; i < entries.length; i++) {
      const id = (entries[i] as BatchEntry).entryId;
      if (id === (entries[i - 1] as BatchEntry).entryId)
        throw new InvalidMutationError(`entry id '${id}' is in the batch twice: give each entry once`);
    }
    if (entries.length === 0 && !input.partition) {
      return {
        applied: 0,
        skipped: 0,
        deadLettered: 0,
        blockedAt: undefined,
        handled: 0,
        cursor: await this.cursor(input.stream),
        held: false,
      };
    }
    if (isCluster(this.redis)) return this.applyAcrossSlots(input, entries);
    // Every partition batch waits for the turn's end, the large ones too (they go in a call of their own):
    // so the calls of a turn reach Redis in the order they were asked for.
    if (input.partition && input.fence && input.ackGroup === undefined) return this.applyWithOthers(input, entries);
    return this.applyInOneScript(input, entries);
  }

  /** Queues a partition batch for the shared call of this turn (see SHARED_CALL_MAX_ENTRIES). */
  private applyWithOthers(input: ApplyBatchInput, entries: readonly BatchEntry[]): Promise<ApplyBatchResult> {
    return new Promise((resolve, reject) => {
      if (this.waitingBatches.length === 0) setImmediate(() => this.sendWaitingBatches());
      this.waitingBatches.push({ input, entries, resolve, reject });
    });
  }

  /**
   * Sends the batches of this turn: those of one stream (same dead-letter stream, group and fence
   * code) together, in the order they were asked for, a partition at most once per call (a second
   * batch of it goes in a later call, which Redis runs after).
   */
  private sendWaitingBatches(): void {
    const waiting = this.waitingBatches;
    this.waitingBatches = [];
    const calls: WaitingBatch[][] = [];
    const open = new Map<string, { batches: WaitingBatch[]; entries: number; cursors: Set<string> }>();
    for (const batch of waiting) {
      const { input } = batch;
      const sharing = JSON.stringify([
        input.stream,
        input.deadLetterStream,
        input.group ?? '',
        input.fence?.code ?? '',
      ]);
      const cursorKey = this.cursorKey(input.stream, input.partition?.index);
      let call = open.get(sharing);
      if (!call || call.cursors.has(cursorKey) || call.entries + batch.entries.length > SHARED_CALL_MAX_ENTRIES) {
        call = { batches: [], entries: 0, cursors: new Set() };
        open.set(sharing, call);
        calls.push(call.batches);
      }
      call.batches.push(batch);
      call.entries += batch.entries.length;
      call.cursors.add(cursorKey);
    }
    for (const batches of calls) {
      const [only] = batches;
      const sent =
        batches.length === 1 && only
          ? this.applyInOneScript(only.input, only.entries).then((result) => [result])
          : this.applyPartitionsInOneScript(batches).catch(() =>
              // The whole call failed (a script error in one batch, a value that cannot be sent, Redis
              // not answering): each batch again in a call of its own, so a failure stays its batch's;
              // the batches the call did apply are found applied (skipped).
              Promise.all(
                batches.map(({ input, entries }) =>
                  this.applyInOneScript(input, entries).catch((error: unknown) =>
                    error instanceof Error ? error : new Error(String(error)),
                  ),
                ),
              ),
            );
      sent.then(
        (results) => batches.forEach((batch, i) => settle(batch, results[i])),
        (error: unknown) => batches.forEach((batch) => batch.reject(error)),
      );
    }
  }

  /** Several partitions' batches of one stream in one call of apply-partitions.lua; a batch's own failure as its Error. */
  private async applyPartitionsInOneScript(batches: readonly WaitingBatch[]): Promise<(ApplyBatchResult | Error)[]> {
    const first = (batches[0] as WaitingBatch).input;
    const keyIndex = new Map<string, number>();
    const args: (string | number)[] = [];
    const perBatch: (string | number)[] = [];
    const batchKeys: string[] = [];
    // A batch that cannot be encoded (a bad snapshot id) throws here: the call is then sent again one
    // call per batch (sendWaitingBatches), where it fails alone.
    for (const { input, entries } of batches) {
      const partition = input.partition as NonNullable<ApplyBatchInput['partition']>;
      const fence = input.fence as NonNullable<ApplyBatchInput['fence']>;
      perBatch.push(args.length + 1, entries.length, fence.token, partition.readFrom, partition.readThrough);
      this.encodeEntries(entries, keyIndex, args);
      batchKeys.push(this.cursorKey(input.stream, partition.index), fence.key);
    }
    const keys = [
      first.stream,
      first.deadLetterStream,
      this.totalsKey(first.stream),
      this.holdKey(first.stream),
      snapshotKeys.deadLettered(first.stream),
      ...batchKeys,
      ...keyIndex.keys(),
    ];
    const reply = await this.redis.redsourceApplyPartitions(
      keys.length,
      ...keys,
      batches.length,
      packEntries(args),
      first.group ?? '',
      first.fence?.code ?? 'RS_REBUILD_LEASE_LOST',
      ...perBatch,
    );
    return batches.map((_, i) => {
      const [applied, skipped, deadLettered, blockedAt, cursor, held, error] = reply.slice(i * 7, i * 7 + 7) as [
        number,
        number,
        number,
        string,
        string,
        number,
        string,
      ];
      // The error apply-batch.lua would have replied, as Redis' own error replies are thrown.
      if (error !== '') return new (ReplyError as new (message: string) => Error)(error);
      return applyResult(applied, skipped, deadLettered, blockedAt, cursor, held);
    });
  }

  /** Appends the script's encoding of entries (see apply-batch.lua, ARGV[4]) to `args`, numbering new snapshot keys in `keyIndex`. */
  private encodeEntries(
    entries: readonly BatchEntry[],
    keyIndex: Map<string, number>,
    args: (string | number)[],
  ): void {
    for (const entry of entries) {
      if ('deadLetter' in entry) {
        args.push(entry.entryId, 'D', entry.deadLetter.reason, JSON.stringify(entry.deadLetter.fields));
        continue;
      }
      const start = args.length;
      try {
        args.push(entry.entryId, 'A', entry.changes.length);
        for (const change of entry.changes) {
          const key = this.key(change.snapshotId);
          let index = keyIndex.get(key);
          if (index === undefined) keyIndex.set(key, (index = keyIndex.size + 1));
          const countAt = args.length + 1;
          args.push(index, 0);
          args[countAt] = encodeMutations(change.mutations, args);
        }
      } catch (error) {
        // Bad names and ids are the caller's mistake: reported. A value JSON cannot hold (a BigInt, a
        // cycle) only shows here: that entry is dead-lettered alone and the rest of the batch goes on.
        if (error instanceof SnapshotStoreError) throw error;
        args.length = start;
        args.push(
          entry.entryId,
          'D',
          `RS_MUTATION_INVALID: a field value cannot be stored as JSON (${String(error)})`,
          '[]',
        );
      }
    }
  }

  /** One script call: the snapshot writes and the bookkeeping together, atomically (one Redis, or one slot). */
  private async applyInOneScript(input: ApplyBatchInput, entries: readonly BatchEntry[]): Promise<ApplyBatchResult> {
    const keyIndex = new Map<string, number>();
    const args: (string | number)[] = [];
    this.encodeEntries(entries, keyIndex, args);
    const keys = [
      input.stream,
      this.cursorKey(input.stream, input.partition?.index),
      input.deadLetterStream,
      this.totalsKey(input.stream),
      this.holdKey(input.stream),
      snapshotKeys.deadLettered(input.stream),
      ...keyIndex.keys(),
    ];
    if (input.fence) keys.push(input.fence.key);
    const [applied, skipped, deadLettered, blockedAt, cursor, held] = await this.redis.redsourceApplyBatch(
      keys.length,
      ...keys,
      input.ackGroup ?? '',
      entries.length,
      input.contiguous ? '1' : '0',
      packEntries(args),
      input.fence?.token ?? '',
      input.fence?.code ?? '',
      input.partition?.readFrom ?? '',
      input.partition?.readThrough ?? '',
      input.group ?? '',
    );
    return applyResult(applied, skipped, deadLettered, blockedAt, cursor, held);
  }

  /**
   * On a Redis Cluster the snapshot hashes are in other slots than the stream's bookkeeping, and one
   * script cannot span slots. So: check-batch.lua reads what may be applied now (fence, hold, cursor,
   * order, dead-lettered ids); apply-snapshots.lua writes each slot's snapshots, skipping what a
   * snapshot's marker says it has (a retry, or a former holder) and refusing a stale fencing token;
   * then apply-batch.lua records the batch (cursor, totals, dead letters, ack) with no snapshot
   * writes left. A crash between the steps leaves markers ahead of the cursor: the retry skips those.
   * An entry's changes to snapshots in different slots are each applied exactly once, not atomically together.
   */
  private async applyAcrossSlots(input: ApplyBatchInput, entries: readonly BatchEntry[]): Promise<ApplyBatchResult> {
    const checkKeys = [
      input.stream,
      this.cursorKey(input.stream, input.partition?.index),
      this.holdKey(input.stream),
      snapshotKeys.deadLettered(input.stream),
    ];
    if (input.fence) checkKeys.push(input.fence.key);
    const [held, cursor, blockedAt, ...deadLetteredBefore] = await this.redis.redsourceCheckBatch(
      checkKeys.length,
      ...checkKeys,
      JSON.stringify(entries.map((e) => e.entryId)),
      input.contiguous ? '1' : '0',
      input.fence?.token ?? '',
      input.fence?.code ?? 'RS_REBUILD_LEASE_LOST',
      input.partition?.readFrom ?? '',
    );
    if (held === 1)
      return {
        applied: 0,
        skipped: 0,
        deadLettered: 0,
        blockedAt: entries[0]?.entryId,
        handled: 0,
        cursor,
        held: true,
      };
    const skip = new Set(deadLetteredBefore);
    // Each new entry's changes, encoded once with their key's slot: sent per node (or per slot).
    const writes: { entryId: string; changes: { slot: number; key: string; encoded: (string | number)[] }[] }[] = [];
    const recorded: BatchEntry[] = [];
    for (const entry of entries) {
      const isNew = compareEntryIds(entry.entryId, cursor) > 0;
      if (blockedAt !== '' && compareEntryIds(entry.entryId, blockedAt) >= 0) break;
      if (!('changes' in entry)) {
        recorded.push(entry);
        continue;
      }
      // Applied before, or dead-lettered before: apply-batch.lua counts it so; no snapshot write (no key in its call).
      if (!isNew || skip.has(entry.entryId)) {
        recorded.push({ entryId: entry.entryId, changes: [] });
        continue;
      }
      // A value JSON cannot hold dead-letters the entry alone (as in one script).
      const changes: { slot: number; key: string; encoded: (string | number)[] }[] = [];
      try {
        for (const change of entry.changes) {
          const key = this.key(change.snapshotId);
          const encoded: (string | number)[] = [0];
          encoded[0] = encodeMutations(change.mutations, encoded);
          JSON.stringify(encoded);
          changes.push({ slot: keySlot(key), key, encoded });
        }
      } catch (error) {
        if (error instanceof SnapshotStoreError) throw error;
        recorded.push({
          entryId: entry.entryId,
          deadLetter: {
            reason: `RS_MUTATION_INVALID: a field value cannot be stored as JSON (${String(error)})`,
            fields: [],
          },
        });
        continue;
      }
      if (changes.length > 0) writes.push({ entryId: entry.entryId, changes });
      recorded.push({ entryId: entry.entryId, changes: [] });
    }
    const marker = `_at:${input.stream}${input.partition ? `:p${input.partition.index}` : ''}`;
    // Entries a node would not write (a key of another type, a write Redis refused): dead-lettered by the bookkeeping.
    const refusals = new Map<string, string>();
    /** One apply-snapshots call for the snapshots of `slots` (one slot, or every slot of one node: then only the first key routes it). */
    const applyIn = async (slots: ReadonlySet<number>) => {
      const keys = new Map<string, number>();
      const args: (string | number)[] = [];
      let count = 0;
      for (const write of writes) {
        const mine = write.changes.filter((c) => slots.has(c.slot));
        if (mine.length === 0) continue;
        args.push(write.entryId, mine.length);
        for (const change of mine) {
          let index = keys.get(change.key);
          if (index === undefined) keys.set(change.key, (index = keys.size + 1));
          args.push(index, ...change.encoded);
        }
        count++;
      }
      const list = [...keys.keys()];
      const rest = [
        marker,
        input.fence?.token ?? '0',
        count,
        packEntries(args),
        input.fence?.code ?? 'RS_REBUILD_LEASE_LOST',
        input.partition ? `_at:${input.stream}` : '',
      ];
      const [, ...refused] =
        slots.size === 1
          ? await this.redis.redsourceApplySnapshots(list.length, ...list, ...rest, '', cursor)
          : await this.redis.redsourceApplySnapshots(1, list[0] as string, ...rest, JSON.stringify(list), cursor);
      for (let i = 0; i + 3 < refused.length; i += 4) {
        const [kind, entryId, key, detail] = refused.slice(i, i + 4) as [string, string, string, string];
        // An entry with changes on several nodes can be refused by more than one: the first reason is kept.
        if (refusals.has(entryId)) continue;
        refusals.set(
          entryId,
          kind === 'W' ? `RS_SNAPSHOT_KEY_WRONGTYPE: ${key} is a ${detail}, not a hash` : `RS_APPLY_FAILED: ${detail}`,
        );
      }
    };
    // One call per node for the slots it serves (as the client's slot map says); where a slot has
    // moved meanwhile, the call fails before any write and its slots go one by one (ioredis then
    // follows MOVED and ASK for each).
    const slotsByNode = new Map<string, Set<number>>();
    for (const write of writes) {
      for (const { slot } of write.changes) {
        const node = nodeServing(this.redis, slot);
        let slots = slotsByNode.get(node);
        if (!slots) slotsByNode.set(node, (slots = new Set()));
        slots.add(slot);
      }
    }
    await Promise.all(
      [...slotsByNode.values()].map(async (slots) => {
        try {
          await applyIn(slots);
        } catch (error) {
          if (slots.size === 1 || !isSlotMoved(error)) throw error;
          await Promise.all([...slots].map((slot) => applyIn(new Set([slot]))));
        }
      }),
    );
    const bookkeeping = recorded.map((e) => {
      const reason = refusals.get(e.entryId);
      return reason === undefined ? e : { entryId: e.entryId, deadLetter: { reason, fields: [] } };
    });
    const result = await this.applyInOneScript(input, bookkeeping);
    // The entries from the blocked one on were not sent: say so, as the one script would.
    return result.blockedAt === undefined && blockedAt !== '' ? { ...result, blockedAt } : result;
  }

  private decode(id: string, key: string, hash: Record<string, string>): Snapshot<Fields> | undefined {
    if (Object.keys(hash).length === 0) return undefined;
    let snapshot: Snapshot;
    try {
      snapshot = decodeHash(id, hash);
    } catch (error) {
      throw new CorruptSnapshotError(key, error instanceof Error ? error.message : String(error));
    }
    if (!this.fieldsSchema) return snapshot as Snapshot<Fields>;
    const parsed = this.fieldsSchema.safeParse(snapshot.fields);
    if (!parsed.success)
      throw new CorruptSnapshotError(
        key,
        parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      );
    return { ...snapshot, fields: parsed.data };
  }
}

/** The node serving a slot, as an ioredis Cluster client's slot map has it (`host:port`); the slot itself when unknown. */
function nodeServing(redis: Redis, slot: number): string {
  return (redis as unknown as { slots?: (string[] | undefined)[] }).slots?.[slot]?.[0] ?? `slot ${slot}`;
}

/** The node refused a key it does not serve (a slot moving or moved): nothing was written. */
function isSlotMoved(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /non local key|do not hash to the same slot|CROSSSLOT|\bMOVED\b|\bASK\b|TRYAGAIN/.test(message);
}

/** An ioredis Cluster client (it says so itself). */
function isCluster(redis: Redis): boolean {
  return (redis as unknown as { isCluster?: boolean }).isCluster === true;
}

function isSorted(entries: readonly BatchEntry[]): boolean {
  for (let i = 1; i < entries.length; i++) {
    if (compareEntryIds((entries[i - 1] as BatchEntry).entryId, (entries[i] as BatchEntry).entryId) > 0) return false;
  }
  return true;
}

/**
 * The batch as one JSON argument (decoded by cjson in the script): building and sending thousands of
 * separate arguments cost more than the whole fold. JSON.stringify escapes a lone UTF-16 surrogate,
 * which cjson refuses; such strings are made well-formed first (U+FFFD), as UTF-8 encoding would.
 */
function packEntries(args: (string | number)[]): string {
  const packed = JSON.stringify(args);
  if (!/\\ud[89a-f]/i.test(packed)) return packed;
  return JSON.stringify(args.map((a) => (typeof a === 'string' ? a.toWellFormed() : a)));
}

function settle(batch: WaitingBatch, result: ApplyBatchResult | Error | undefined): void {
  if (result === undefined) batch.reject(new Error('redsource: no reply for a partition batch'));
  else if (result instanceof Error) batch.reject(result);
  else batch.resolve(result);
}

/** An apply script's answer for a batch (apply-batch.lua's reply, or a batch's part of apply-partitions.lua's). */
function applyResult(
  applied: number,
  skipped: number,
  deadLettered: number,
  blockedAt: string,
  cursor: string,
  held: number,
): ApplyBatchResult {
  return {
    applied,
    skipped,
    deadLettered,
    blockedAt: blockedAt === '' ? undefined : blockedAt,
    handled: applied + skipped + deadLettered,
    cursor,
    held: held === 1,
  };
}
