/** Snapshot ids are what follows the key prefix; this keeps any id from naming another key. */
export const SNAPSHOT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Every key name the snapshot store uses. `{<stream>}` shares the stream's cluster slot. */
export const snapshotKeys = {
  snapshot: (prefix: string, id: string) => `${prefix}${id}`,
  cursor: (stream: string, projection: string) => `redsource:{${stream}}:applied:${projection}`,
  totals: (stream: string, projection: string) => `redsource:{${stream}}:totals:${projection}`,
  hold: (stream: string, projection: string) => `redsource:{${stream}}:hold:${projection}`,
  deadLettered: (stream: string) => `redsource:{${stream}}:dead-lettered-ids`,
} as const;
