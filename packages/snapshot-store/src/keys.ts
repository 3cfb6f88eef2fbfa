/** Snapshot ids are what follows the key prefix; this keeps any id from naming another key. */
export const SNAPSHOT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Every key name the snapshot store uses. `{<stream>}` shares the stream's cluster slot. */
export const snapshotKeys = {
  snapshot: (prefix: string, id: string) => `${prefix}${id}`,
  /** Last applied entry id: of the stream, or of one of its partitions (a partitioned processor's). */
  cursor: (stream: string, projection: string, partition?: number) =>
    `redsource:{${stream}}:applied:${projection}${partition === undefined ? '' : `:p${partition}`}`,
  totals: (stream: string, projection: string) => `redsource:{${stream}}:totals:${projection}`,
  hold: (stream: string, projection: string) => `redsource:{${stream}}:hold:${projection}`,
  deadLettered: (stream: string) => `redsource:{${stream}}:dead-lettered-ids`,
} as const;
