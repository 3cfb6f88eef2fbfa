import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis, Result } from 'ioredis';
import { z } from 'zod';
import { InvalidProcessorOptionsError, RebuildLeaseLostError, RebuildRunningError } from './errors.ts';
import { FencedWrites } from './fenced-writes.ts';
import { processorKeys } from './keys.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceAcquireRebuildLease(
      lease: string,
      fence: string,
      leaseMs: number,
      holder: string,
    ): Result<[number, string], Context>;
  }
}

const acquireSource = readFileSync(new URL('./scripts/acquire-rebuild-lease-2.lua', import.meta.url), 'utf8');

/** The rebuild lease's settings with their defaults: the one place they are written. */
export const rebuildLeaseSettingsSchema = z
  .object({
    /** How long the lease outlives its last renewal (ms): a rebuild whose process died is taken over after this. */
    leaseMs: z.number().int().min(100).max(3_600_000).default(10_000),
    /** How often a working rebuild renews its lease (ms): every 2 s, or a fifth of a shorter lease. */
    renewMs: z.number().int().min(10).optional(),
    /** How often a replay told to wait looks whether the running rebuild has finished (ms). */
    waitPollMs: z.number().int().min(10).default(1_000),
  })
  .transform((s) => ({ ...s, renewMs: s.renewMs ?? Math.min(2_000, Math.floor(s.leaseMs / 5)) }))
  .refine((s) => s.renewMs * 3 <= s.leaseMs, {
    path: ['renewMs'],
    message: 'must be at most a third of leaseMs, so one or two late renewals do not lose the lease',
  });

export type RebuildLeaseSettings = z.output<typeof rebuildLeaseSettingsSchema>;
export type RebuildLeaseSettingsInput = z.input<typeof rebuildLeaseSettingsSchema>;

export function parseRebuildLeaseSettings(input: RebuildLeaseSettingsInput): RebuildLeaseSettings {
  const result = rebuildLeaseSettingsSchema.safeParse(input);
  if (!result.success) {
    throw new InvalidProcessorOptionsError(
      result.error.issues.map((i) => `lease.${i.path.join('.')}: ${i.message}`).join('; '),
    );
  }
  return result.data;
}

/** Which process holds (or held) a rebuild's lease: what a second replay names. */
export interface RebuildHolder {
  readonly host: string;
  readonly pid: number;
  /** When that process took the lease (ms since epoch). */
  readonly startedAt: number;
}

export interface LeaseHolder extends RebuildHolder {
  readonly token: string;
}

/** The rebuild that holds the lease now, with the phase its state records. */
export interface RunningRebuild extends LeaseHolder {
  readonly phase: string;
}

const holderSchema = z.object({ host: z.string(), pid: z.number(), startedAt: z.number() });

/** One attempt at the lease (SET NX PX, with the next fencing token): the token, or who holds it. */
export async function tryAcquireRebuildLease(
  redis: Redis,
  keys: { readonly lease: string; readonly fence: string },
  leaseMs: number,
  holder: RebuildHolder,
): Promise<{ token: string } | { heldBy: LeaseHolder }> {
  if (typeof (redis as Partial<Redis>).redsourceAcquireRebuildLease !== 'function') {
    redis.defineCommand('redsourceAcquireRebuildLease', { numberOfKeys: 2, lua: acquireSource });
  }
  const [taken, value] = await redis.redsourceAcquireRebuildLease(
    keys.lease,
    keys.fence,
    leaseMs,
    JSON.stringify(holder),
  );
  if (taken === 1) return { token: value };
  const space = value.indexOf(' ');
  const parsed = holderSchema.safeParse(safeJson(value.slice(space + 1)));
  const known = parsed.success ? parsed.data : { host: 'unknown', pid: 0, startedAt: 0 };
  return { heldBy: { ...known, token: value.slice(0, space) } };
}

export interface AcquireOptions {
  readonly target: { readonly projection: string; readonly keyPrefix: string };
  readonly settings: RebuildLeaseSettings;
  /** Wait for the running rebuild to end (polling) instead of throwing RebuildRunningError. */
  readonly wait: boolean;
  /** Called when this replay starts waiting for a running rebuild (again if another one takes its place). */
  readonly onWaiting?: ((running: RunningRebuild) => void) | undefined;
}

/**
 * The exclusive right to rebuild one projection: a lease in Redis that expires unless renewed (so a
 * dead holder's rebuild is taken over) and a fencing token every write of the rebuild checks (so a
 * holder that was paused past its lease writes nothing). Renewed on a timer while the rebuild works.
 * The lease, the fencing counter and the rebuild's state share one Redis Cluster slot; how the
 * writes elsewhere are fenced on a cluster is told at FencedWrites.
 */
export class RebuildLease {
  readonly writes: FencedWrites;
  private lostError: RebuildLeaseLostError | undefined;
  /** When the last renewal that succeeded was sent: the lease holds at least leaseMs from then. */
  private confirmedAt: number;
  private renewing = false;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    redis: Redis,
    lease: { key: string; token: string; requestedAt: number },
    target: { readonly projection: string; readonly keyPrefix: string },
    private readonly settings: RebuildLeaseSettings,
  ) {
    this.writes = new FencedWrites(
      redis,
      { key: lease.key, token: lease.token },
      // On a Redis Cluster the stream's keys are fenced by the stream's epoch (see FencedWrites).
      {
        epochKey: (stream) => processorKeys.rebuildEpoch(stream, target.projection, target.keyPrefix),
        guard: () => this.assertHeld(),
      },
    );
    this.confirmedAt = lease.requestedAt;
    this.timer = setInterval(() => void this.renew(), settings.renewMs);
  }

  /** Takes the lease, or throws RebuildRunningError naming its holder, or (with `wait`) waits until it is free. */
  static async acquire(redis: Redis, options: AcquireOptions): Promise<RebuildLease> {
    const { target, settings } = options;
    const keys = {
      lease: processorKeys.rebuildLease(target.projection, target.keyPrefix),
      fence: processorKeys.rebuildFence(target.projection, target.keyPrefix),
    };
    const holder = { host: hostname(), pid: process.pid };
    let reportedToken: string | undefined;
    for (;;) {
      const requestedAt = Date.now();
      const attempt = await tryAcquireRebuildLease(redis, keys, settings.leaseMs, {
        ...holder,
        startedAt: requestedAt,
      });
      if ('token' in attempt)
        return new RebuildLease(redis, { key: keys.lease, token: attempt.token, requestedAt }, target, settings);
      const phase =
        (await redis.hget(processorKeys.rebuild(target.projection, target.keyPrefix), 'phase')) ?? 'starting';
      const running: RunningRebuild = { ...attempt.heldBy, phase };
      if (!options.wait) throw new RebuildRunningError(running, target, settings.leaseMs);
      if (reportedToken !== running.token) options.onWaiting?.(running);
      reportedToken = running.token;
      await sleep(settings.waitPollMs);
    }
  }

  get token(): string {
    return this.writes.fence.token;
  }

  get lost(): boolean {
    this.checkExpiry();
    return this.lostError !== undefined;
  }

  /** Throws RebuildLeaseLostError once a renewal found the lease gone or taken, or it may have expired unrenewed. */
  assertHeld(): void {
    this.checkExpiry();
    if (this.lostError) throw this.lostError;
  }

  /** Stops renewing and gives the lease back (if still held), so the next replay need not wait for it to expire. */
  async end(): Promise<void> {
    clearInterval(this.timer);
    if (!this.lost) await this.writes.release().catch(() => false);
  }

  private async renew(): Promise<void> {
    this.checkExpiry();
    if (this.renewing || this.lostError) return;
    this.renewing = true;
    const requestedAt = Date.now();
    try {
      if (await this.writes.renew(this.settings.leaseMs)) this.confirmedAt = requestedAt;
      else this.lose();
    } catch {
      // Redis did not answer: the lease may still hold. It counts as lost once it may have expired.
    } finally {
      this.renewing = false;
    }
  }

  /** A process paused (or cut off) past its lease learns it here first, before any reply from Redis. */
  private checkExpiry(): void {
    if (!this.lostError && Date.now() - this.confirmedAt >= this.settings.leaseMs) this.lose();
  }

  private lose(): void {
    this.lostError ??= new RebuildLeaseLostError(this.writes.fence.key, this.writes.fence.token);
    clearInterval(this.timer);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
