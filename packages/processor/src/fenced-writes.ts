import { readFileSync } from 'node:fs';
import type { Redis, Result } from 'ioredis';
import type { ApplyBatchInput, ApplyBatchResult, SnapshotStore } from '@redsource/snapshot-store';
import { RebuildLeaseLostError } from './errors.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceRenewRebuildLease(lease: string, token: string, leaseMs: number): Result<number, Context>;
    redsourceReleaseRebuildLease(lease: string, token: string): Result<number, Context>;
    redsourceFencedSet(lease: string, key: string, token: string, value: string): Result<string, Context>;
    redsourceFencedHset(lease: string, key: string, token: string, ...fieldsAndValues: (string | number)[]): Result<string, Context>;
    redsourceSwitchSnapshot(lease: string, shadow: string, live: string, token: string, rebuildId: string): Result<number, Context>;
    redsourceUnlinkSnapshot(lease: string, key: string, token: string, keepMark: string): Result<number, Context>;
  }
}

const script = (name: string) => readFileSync(new URL(`./scripts/${name}`, import.meta.url), 'utf8');
const scripts = {
  redsourceRenewRebuildLease: { numberOfKeys: 1, lua: script('renew-rebuild-lease-1.lua') },
  redsourceReleaseRebuildLease: { numberOfKeys: 1, lua: script('release-rebuild-lease-1.lua') },
  redsourceFencedSet: { numberOfKeys: 2, lua: script('fenced-set-2.lua') },
  redsourceFencedHset: { numberOfKeys: 2, lua: script('fenced-hset-2.lua') },
  redsourceSwitchSnapshot: { numberOfKeys: 3, lua: script('switch-snapshot-3.lua') },
  redsourceUnlinkSnapshot: { numberOfKeys: 2, lua: script('unlink-snapshot-2.lua') },
} as const;

/** The lease key and the fencing token a rebuild's writes must still hold. */
export interface Fence {
  readonly key: string;
  readonly token: string;
}

/** The reply prefix of every fenced script that found its token no longer holding the lease. */
const LEASE_LOST = 'RS_REBUILD_LEASE_LOST';

/**
 * Every write a rebuild makes, each one a script that checks in Redis, atomically with the write,
 * that the rebuild's fencing token still holds the lease. A rebuild that lost its lease (paused past
 * it, cut off until it expired, taken over) gets RebuildLeaseLostError and nothing is written: a
 * check in the process before the write could not promise that, as the process may stop between.
 */
export class FencedWrites {
  constructor(
    private readonly redis: Redis,
    readonly fence: Fence,
  ) {
    for (const [name, definition] of Object.entries(scripts)) {
      if (typeof (redis as unknown as Record<string, unknown>)[name] !== 'function') redis.defineCommand(name, definition);
    }
  }

  /** SET `key` to `value`; an empty value DELetes it. */
  async set(key: string, value: string): Promise<void> {
    await this.fenced(this.redis.redsourceFencedSet(this.fence.key, key, this.fence.token, value));
  }

  async hset(key: string, fields: Readonly<Record<string, string | number>>): Promise<void> {
    await this.fenced(this.redis.redsourceFencedHset(this.fence.key, key, this.fence.token, ...Object.entries(fields).flat()));
  }

  /** Marks each shadow hash with the rebuild id and RENAMEs it over its live key; returns how many were switched. */
  async switchSnapshots(pairs: readonly (readonly [shadow: string, live: string])[], rebuildId: string): Promise<number> {
    const pipeline = this.redis.pipeline();
    for (const [shadow, live] of pairs) pipeline.redsourceSwitchSnapshot(this.fence.key, shadow, live, this.fence.token, rebuildId);
    return (await this.pipelined(pipeline.exec())).reduce<number>((n, switched) => n + Number(switched), 0);
  }

  /** UNLINKs each snapshot hash, except those marked by `keepRebuildId` (undefined: all of them). */
  async unlinkSnapshots(keys: readonly string[], keepRebuildId: string | undefined): Promise<void> {
    const pipeline = this.redis.pipeline();
    for (const key of keys) pipeline.redsourceUnlinkSnapshot(this.fence.key, key, this.fence.token, keepRebuildId ?? '');
    await this.pipelined(pipeline.exec());
  }

  /** Applies a batch to the shadow snapshots; apply-batch.lua checks the fence before its first write. */
  async applyBatch(store: SnapshotStore<unknown>, input: ApplyBatchInput): Promise<ApplyBatchResult> {
    return this.fenced(store.applyBatch({ ...input, fence: this.fence }));
  }

  /** Extends the lease; false when this token no longer holds it. */
  async renew(leaseMs: number): Promise<boolean> {
    if (!(leaseMs > 0)) throw new RangeError(`renew needs a lease time above 0 ms, got ${leaseMs}: release() gives the lease back`);
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

  /** A pipeline's results, with any refused write turned into RebuildLeaseLostError (ioredis does not reject a pipeline for one failed command). */
  private async pipelined(replies: Promise<[Error | null, unknown][] | null>): Promise<unknown[]> {
    const results: unknown[] = [];
    for (const [error, result] of (await this.fenced(replies)) ?? []) {
      if (error) throw isLeaseLost(error) ? new RebuildLeaseLostError(this.fence.key, this.fence.token) : error;
      results.push(result);
    }
    return results;
  }
}

function isLeaseLost(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith(LEASE_LOST);
}
