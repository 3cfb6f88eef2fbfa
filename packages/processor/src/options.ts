import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { InvalidProcessorOptionsError } from './errors.ts';

const entryId = z.string().regex(/^\d+-\d+$/, 'an entry id like 1700000000000-0');

/** Every processor setting with its default: the one place defaults are written. */
export const processorSettingsSchema = z.object({
  /** Consumer group; several processes in one group share the work. */
  group: z.string().min(1).default('redsource'),
  /** This process's name in the group. Unique by default; give a stable name to resume its own pending entries after a restart. */
  consumer: z.string().min(1).default(() => `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`),
  /** Where a new group starts: every entry, only new ones, or after an id. */
  start: z.union([z.literal('beginning'), z.literal('latest'), z.object({ after: entryId })]).default('beginning'),
  /** Most entries per XREADGROUP per stream. */
  batchSize: z.number().int().min(1).max(10_000).default(500),
  /** How long one XREADGROUP waits for new entries (ms). */
  blockMs: z.number().int().min(1).max(60_000).default(2_000),
  /** A pending entry idle this long belongs to a consumer presumed dead: the living claim it (ms). */
  claimTimeoutMs: z.number().int().min(100).default(30_000),
  /** How often the living look for entries to claim and dead consumers to remove (ms). */
  claimIntervalMs: z.number().int().min(50).default(5_000),
  /** Heartbeat period (ms); a consumer silent for claimTimeoutMs is removed once it has no pending entries. */
  heartbeatMs: z.number().int().min(50).default(2_000),
  /**
   * Failed handler attempts allowed on an entry before it is dead-lettered, counted in Redis across
   * restarts and claims. How often Redis delivered the entry does not count, nor does Redis refusing
   * writes (the processor waits for it); undecodable or schema-invalid entries are dead-lettered at once.
   */
  maxDeliveries: z.number().int().min(1).max(1_000).default(5),
  /** First retry delay of a failing handler (ms); doubles each attempt, capped at 5 s. */
  retryBackoffMs: z.number().int().min(0).default(100),
  /** A batch waiting this long for an earlier entry held elsewhere applies that entry itself from the stream (ms). */
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
});

export type ProcessorSettings = z.output<typeof processorSettingsSchema>;
export type ProcessorSettingsInput = z.input<typeof processorSettingsSchema>;

export function parseProcessorSettings(input: ProcessorSettingsInput): ProcessorSettings {
  const result = processorSettingsSchema.safeParse(input);
  if (!result.success) {
    throw new InvalidProcessorOptionsError(result.error.issues.map((i) => `${i.path.join('.') || '(options)'}: ${i.message}`).join('; '));
  }
  return result.data;
}
