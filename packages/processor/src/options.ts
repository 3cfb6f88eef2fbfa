import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { InvalidProcessorOptionsError } from './errors.ts';

const entryId = z.string().regex(/^\d+-\d+$/, 'an entry id like 1700000000000-0');

/** Every processor setting with its default: the one place defaults are written. */
export const processorSettingsSchema = z.object({
  /** Consumer group; several processes in one group share the work. */
  group: z
    .string()
    .regex(
      /^[A-Za-z0-9_.:-]{1,128}$/,
      '1-128 characters from A-Z a-z 0-9 _ . : - (it is part of hash-tagged key names)',
    )
    .default('redsource'),
  /** This process's name in the group. Unique by default; give a stable name to resume its own pending entries after a restart. */
  consumer: z
    .string()
    .min(1)
    .default(() => `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`),
  /** Where a new group starts on a stream: every entry, only new ones, or after an id. */
  start: z.union([z.literal('beginning'), z.literal('latest'), z.object({ after: entryId })]).default('beginning'),
  /** Most entries per read of one partition of one stream. */
  batchSize: z.number().int().min(1).max(10_000).default(500),
  /** How long one blocking read waits for new entries (ms). */
  blockMs: z.number().int().min(1).max(60_000).default(2_000),
  /**
   * Partitions per stream: the unit of order and ownership. Each subject (user) belongs to one, one
   * processor holds each, so up to this many processors apply in parallel. 12 shares evenly among
   * 1, 2, 3, 4 or 6 processors. Fixed once a processor of the group has prepared a stream: see the README on changing it.
   */
  partitions: z.number().int().min(1).max(1_024).default(12),
  /**
   * A partition lease (and group membership) lasts this long unless renewed (ms): a processor that
   * dies is replaced on its partitions within it (plus one rebalance interval).
   */
  leaseMs: z.number().int().min(200).max(600_000).default(10_000),
  /** How often a processor renews its leases and takes or gives back partitions (ms); well under leaseMs. */
  rebalanceIntervalMs: z.number().int().min(20).max(60_000).default(1_000),
  /** How often a processor publishes its counters for `status` (ms). */
  heartbeatMs: z.number().int().min(50).default(2_000),
  /**
   * Failed handler attempts allowed on an entry before it is dead-lettered, counted in Redis across
   * restarts and claims. How often Redis delivered the entry does not count, nor does Redis refusing
   * writes (the processor waits for it); undecodable or schema-invalid entries are dead-lettered at once.
   */
  maxDeliveries: z.number().int().min(1).max(1_000).default(5),
  /** First retry delay of a failing handler (ms); doubles each attempt, capped at 5 s. */
  retryBackoffMs: z.number().int().min(0).default(100),
  /** Deprecated, no effect: a partition's batch never waits on an entry another processor holds. Accepted so older configurations still start. */
  gapFillAfterMs: z.number().int().min(0).default(1_000),
  /** How often streams matching a registered prefix (`orders:*`) are looked for (ms). */
  discoverIntervalMs: z.number().int().min(50).default(5_000),
  /**
   * Trim each stream below the point every consumer group has acknowledged and the snapshots have
   * applied (never during a rebuild). Off by default: a trimmed stream can no longer be replayed from
   * its first event.
   */
  retention: z.boolean().default(false),
  /** How long stop() waits for the batch in hand before leaving it pending (ms). */
  shutdownTimeoutMs: z.number().int().min(0).default(10_000),
  /**
   * How long `ready()` (and a projection processor's `start()`) waits for the processor to be ready
   * while Redis cannot be reached or refuses writes, before it rejects (ms).
   */
  startTimeoutMs: z.number().int().min(1).max(600_000).default(30_000),
});

export type ProcessorSettings = z.output<typeof processorSettingsSchema>;
export type ProcessorSettingsInput = z.input<typeof processorSettingsSchema>;

export function parseProcessorSettings(input: ProcessorSettingsInput): ProcessorSettings {
  const result = processorSettingsSchema
    .refine((s) => s.rebalanceIntervalMs * 2 <= s.leaseMs, {
      message: 'must be at most half of leaseMs, or leases run out between renewals',
      path: ['rebalanceIntervalMs'],
    })
    .safeParse(input);
  if (!result.success) {
    throw new InvalidProcessorOptionsError(
      result.error.issues.map((i) => `${i.path.join('.') || '(options)'}: ${i.message}`).join('; '),
    );
  }
  return result.data;
}
