/** Snapshot ids are what follows the key prefix; this keeps any id from naming another key. */
export const SNAPSHOT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Every key name the snapshot store uses. `{<stream>}` shares the stream's cluster slot. */
export const snapshotKeys = {
  snapshot: (prefix: string, id: string) => `${prefix}${id}`,
  /**
   * How far the stream is applied: every entry up to this id. With a partition: every entry of that
   * partition up to this id (the id may be another partition's: where its holder read through).
   */
  cursor: (stream: string, projection: string, partition?: number) =>
    `redsource:{${stream}}:applied:${projection}${partition === undefined ? '' : `:p${partition}`}`,
  totals: (stream: string, projection: string) => `redsource:{${stream}}:totals:${projection}`,
  hold: (stream: string, projection: string) => `redsource:{${stream}}:hold:${projection}`,
  deadLettered: (stream: string) => `redsource:{${stream}}:dead-lettered-ids`,
} as const;
