/**
 * Every key the event store writes besides the streams themselves. The hash tag `{<stream>}`
 * hashes exactly like the stream's own name, so these keys share the stream's Redis Cluster slot
 * and one script can touch them together.
 */
export const eventStoreKeys = {
  versions: (stream: string) => `redsource:{${stream}}:versions`,
  /** Caller-given event id -> entry id, for the ids inside the idempotency window. */
  eventIds: (stream: string) => `redsource:{${stream}}:event-ids`,
  /** The same ids by age (score: the entry id as ms + seq / 2048), so the window is trimmed oldest first. */
  eventIdsByAge: (stream: string) => `redsource:{${stream}}:event-ids-by-age`,
} as const;
