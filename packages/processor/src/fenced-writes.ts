import type { Redis, Result } from 'ioredis';
import { isCluster } from '@redsource/event-store';
import type { ApplyBatchInput, ApplyBatchResult, SnapshotStore } from '@redsource/snapshot-store';
import { processorScript } from './scripts.ts';
import { RebuildLeaseLostError } from './errors.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceRenewRebuildLease(lease: string, token: string, leaseMs: number): Result<number, Context>;
    redsourceReleaseRebuildLease(lease: string, token: string): Result<number, Context>;
    redsourceTakeRebuildEpoch(epoch: string, token: string): Result<string, Context>;
    redsourceFencedSet(fence: string, key: string, token: string, value: string): Result<string, Context>;
    redsourceFencedHset(
      fence: string,
      key: string,
      token: string,
      ...fieldsAndValues: (string | number)[]
    ): Result<string, Context>;
    redsourceSwitchSnapshot(numKeys: number, ...keysAndArgs: (string | number)[]): Result<number, Context>;
    redsourceUnlinkSnapshot(numKeys: number, ...keysAndArgs: (string | number)[]): Result<number, Context>;
  }
}

const script = processorScript;
const scripts = {
  redsourceRenewRebuildLease: { numberOfKeys: 1, lua: script('renew-rebuild-lease-1.lua') },
  redsourceReleaseRebuildLease: { numberOfKeys: 1, lua: script('release-rebuild-lease-1.lua') },
  redsourceTakeRebuildEpoch: { numberOfKeys: 1, lua: script('take-rebuild-epoch-1.lua') },
  redsourceFencedSet: { numberOfKeys: 2, lua: script('fenced-set-2.lua') },
  redsourceFencedHset: { numberOfKeys: 2, lua: script('fenced-hset-2.lua') },
  // 2 keys on a Redis Cluster, 3 (the lease too) on one Redis: the key count is the first argument.
  redsourceSwitchSnapshot: { lua: script('switch-snapshot.lua') },
  redsourceUnlinkSnapshot: { lua: script('unlink-snapshot.lua') },
} as const;

/** The lease key and the fencing token a rebuild's writes must still hold. */
export interface Fence {
  readonly key: string;
  readonly token: string;
}

export interface FencedWritesOptions {
  /**
   * On a Redis Cluster: the key in a stream's slot that holds the rebuild's token there (its epoch;
   * the lease is in another slot). Needed for writes to a stream's keys on a cluster.
   */
  readonly epochKey?: (stream: string) => string;
  /**
   * Called before every write: throws RebuildLeaseLostError when the process knows the lease may be
   * lost (its renewals failed for a lease time). On a cluster, where most scripts cannot see the
   * lease, it stops a rebuild thawed after a pause before it sends anything new.
   */
  readonly guard?: () => void;
}

/**
 * Markers in snapshot hashes the switch and the deletions look at on a Redis Cluster (see
 * switch-snapshot.lua, unlink-snapshot.lua); none on one Redis, where no apply writes them.
 */
export interface SnapshotMarkers {
  /** The marker fields the rebuild's shadow applies write (`_at:<stream>`), one per stream. */
  readonly rebuild: readonly string[];
  /**
   * The live processors' marker fields (`_at:<stream>:p<n>`), each with the entry id the switch left
   * that partition at: a live snapshot marked beyond it was applied to after the switch (deletions only).
   */
  readonly live: readonly (readonly [field: string, upTo: string])[];
}

export const NO_MARKERS: SnapshotMarkers = { rebuild: [], live: [] };

/** The reply prefix of every fenced script that found its token no longer holding the lease. */
const LEASE_LOST = 'RS_REBUILD_LEASE_LOST';

/**
 * Every write a rebuild makes, each one a script that checks in Redis, atomically with the write,
 * that the rebuild's fencing token still holds the lease. A rebuild that lost its lease (paused past
 * it, cut off until it expired, taken over) gets RebuildLeaseLostError and nothing is written: a
 * check in the process before the write could not promise that, as the process may stop between.
 *
 * One Redis: every script checks the lease itself (`fence.key`), and nothing else decides.
 *
 * Redis Cluster: a script can only read keys of its own slot, and the lease shares a slot only with
 * the rebuild's state (and fencing counter). So:
 * - the state: checked against the lease, as on one Redis;
 * - a stream's keys (hold, live and shadow cursors, shadow totals; the shadow applies' bookkeeping
 *   and their check-batch): checked against the stream's rebuild epoch, into which the rebuild
 *   copies its token right after taking the lease (claimStreams; refused if a later token is
 *   there). A successor copies its higher token there before its first write, so from then on the
 *   former holder writes nothing to that stream. Unlike on one Redis, a lease that expired with no
 *   successor yet does not stop such a write by itself (`guard` does, in the process);
 * - snapshot hashes (shadow applies, the switch, deletions): the slot holds no lease or epoch, so
 *   the checks are on what the hashes hold: the shadow applies' markers (apply-snapshots.lua
 *   refuses a lower token than the marker's), and the markers and `_rebuild` marks the switch and
 *   the deletions read (switch-snapshot.lua, unlink-snapshot.lua). A former holder thawed after a
 *   takeover may still land the snapshot writes it had started (an apply's per-slot writes after
 *   its check-batch, a batch of switches or deletions already sent): each is either refused there
 *   or changes nothing the successor relies on (same-rebuild shadow writes are the same fold and
 *   skipped by the markers; a shadow hash re-created after its switch is an orphan of its
 *   generation, never switched and deleted by the next switch or fresh start).
 */
export class FencedWrites {
  private readonly cluster: boolean;

  constructor(
    private readonly redis: Redis,
    readonly fence: Fence,
    private readonly options: FencedWritesOptions = {},
  ) {
    this.cluster = isCluster(redis);
    for (const [name, definition] of Object.entries(scripts)) {
      if (typeof (redis as unknown as Record<string, unknown>)[name] !== 'function')
        redis.defineCommand(name, definition);
    }
  }

  /**
   * The key whose token guards a write in a stream's slot (undefined: in the lease's slot, the
   * rebuild's state): the lease on one Redis, the stream's rebuild epoch on a cluster.
   */
  fenceFor(stream: string | undefined): Fence {
    if (!this.cluster || stream === undefined) return this.fence;
    if (!this.options.epochKey)
      throw new Error("FencedWrites on a Redis Cluster needs an epochKey for writes to a stream's keys");
    return { key: this.options.epochKey(stream), token: this.fence.token };
  }

  /** On a Redis Cluster, copies the token into each stream's epoch: before any write to the stream's keys. No-op on one Redis. */
  async claimStreams(streams: readonly string[]): Promise<void> {
    if (!this.cluster) return;
    this.options.guard?.();
    await this.settled(
      streams.map((stream) => this.redis.redsourceTakeRebuildEpoch(this.fenceFor(stream).key, this.fence.token)),
    );
  }

  /** SET `key` to `value`; an empty value DELetes it. `stream`: the stream whose slot `key` is in (none: the state, in the lease's). */
  async set(key: string, value: string, stream?: string): Promise<void> {
    this.options.guard?.();
    await this.fenced(this.redis.redsourceFencedSet(this.fenceFor(stream).key, key, this.fence.token, value));
  }

  async hset(key: string, fields: Readonly<Record<string, string | number>>, stream?: string): Promise<void> {
    this.options.guard?.();
    await this.fenced(
      this.redis.redsourceFencedHset(
        this.fenceFor(stream).key,
        key,
        this.fence.token,
        ...Object.entries(fields).flat(),
      ),
    );
  }

  /** Marks each shadow hash with the rebuild id and RENAMEs it over its live key; returns how many were switched. */
  async switchSnapshots(
    pairs: readonly (readonly [shadow: string, live: string])[],
    rebuildId: string,
    markers: Pick<SnapshotMarkers, 'rebuild'> = NO_MARKERS,
  ): Promise<number> {
    this.options.guard?.();
    const args = [this.fence.token, rebuildId, markers.rebuild.length, ...markers.rebuild];
    const replies = await this.settled(
      pairs.map(([shadow, live]) =>
        this.cluster
          ? this.redis.redsourceSwitchSnapshot(2, shadow, live, ...args)
          : this.redis.redsourceSwitchSnapshot(3, shadow, live, this.fence.key, ...args),
      ),
    );
    return replies.reduce<number>((n, switched) => n + Number(switched), 0);
  }

  /** UNLINKs each snapshot hash, except those marked by `keepRebuildId` (undefined: all of them) and, on a cluster, those the markers keep. */
  async unlinkSnapshots(
    keys: readonly string[],
    keepRebuildId: string | undefined,
    markers: SnapshotMarkers = NO_MARKERS,
  ): Promise<void> {
    this.options.guard?.();
    const args = [
      this.fence.token,
      keepRebuildId ?? '',
      markers.rebuild.length,
      ...markers.rebuild,
      ...markers.live.flat(),
    ];
    await this.settled(
      keys.map((key) =>
        this.cluster
          ? this.redis.redsourceUnlinkSnapshot(1, key, ...args)
          : this.redis.redsourceUnlinkSnapshot(2, key, this.fence.key, ...args),
      ),
    );
  }

  /**
   * Applies a batch to the shadow snapshots; the apply scripts check the fence (the lease, or on a
   * cluster the stream's epoch, and the token against each snapshot's marker) before their writes.
   */
  async applyBatch(store: SnapshotStore<unknown>, input: ApplyBatchInput): Promise<ApplyBatchResult> {
    this.options.guard?.();
    return this.fenced(store.applyBatch({ ...input, fence: this.fenceFor(input.stream) }));
  }

  /** Extends the lease; false when this token no longer holds it. */
  async renew(leaseMs: number): Promise<boolean> {
    if (!(leaseMs > 0))
      throw new RangeError(`renew needs a lease time above 0 ms, got ${leaseMs}: release() gives the lease back`);
    return (await this.redis.redsourceRenewRebuildLease(this.fence.key, this.fence.token, leaseMs)) === 1;
  }

  /** Gives the lease back; false when this token no longer held it (and nothing was done). */
  async release(): Promise<boolean> {
    return (await this.redis.redsourceReleaseRebuildLease(this.fence.key, this.fence.token)) === 1;
  }

  private async fenced<T>(write: Promise<T>): Promise<T> {
    try {
      return await write;
    } catch (error) {
      throw isLeaseLost(error) ? new RebuildLeaseLostError(this.fence.key, this.fence.token) : error;
    }
  }

  /**
   * Writes sent together (one command each: on a cluster each goes to its own slot's node), all
   * awaited; a refused one turns into RebuildLeaseLostError, else the first error is thrown.
   */
  private async settled<T>(writes: readonly Promise<T>[]): Promise<T[]> {
    const outcomes = await Promise.allSettled(writes);
    const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as unknown] : []));
    if (failures.some(isLeaseLost)) throw new RebuildLeaseLostError(this.fence.key, this.fence.token);
    if (failures.length > 0) throw failures[0];
    return outcomes.map((o) => (o as PromiseFulfilledResult<T>).value);
  }
}

function isLeaseLost(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith(LEASE_LOST);
}
