import { z } from 'zod';
import { InvalidEventStoreOptionsError } from './errors.ts';

/**
 * How long the store remembers appended event ids (`metadata.id`), which is what makes a resend
 * idempotent. Like Kafka's idempotent producer, it remembers only recent ones: an id is recognised
 * while it is both younger than `windowMs` and among the newest `maxIds` ids of its stream. A
 * resend outside that is appended again, as a new entry. Defaults are written here only.
 */
export const idempotencySettingsSchema = z
  .object({
    /** An id is forgotten this long after its append (ms, by Redis' clock). Default 24 h. */
    windowMs: z
      .number()
      .int()
      .min(1_000)
      .max(365 * 86_400_000)
      .default(86_400_000),
    /** At most this many ids per stream are remembered, the newest. Default 100,000 (about 20 MB). */
    maxIds: z.number().int().min(1).max(100_000_000).default(100_000),
  })
  .strict();

export type IdempotencySettings = z.output<typeof idempotencySettingsSchema>;
export type IdempotencySettingsInput = z.input<typeof idempotencySettingsSchema>;

export function parseIdempotencySettings(input: IdempotencySettingsInput = {}): IdempotencySettings {
  const result = idempotencySettingsSchema.safeParse(input);
  if (!result.success) {
    throw new InvalidEventStoreOptionsError(
      result.error.issues.map((i) => `idempotency.${i.path.join('.')}: ${i.message}`).join('; '),
    );
  }
  return result.data;
}
