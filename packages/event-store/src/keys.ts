/**
 * Every key the event store writes besides the streams themselves. The hash tag `{<stream>}`
 * hashes exactly like the stream's own name, so these keys share the stream's Redis Cluster slot
 * and one script can touch them together.
 */
export const eventStoreKeys = {
  versions: (stream: string) => `redsource:{${stream}}:versions`,
  eventIds: (stream: string) => `redsource:{${stream}}:event-ids`,
} as const;
