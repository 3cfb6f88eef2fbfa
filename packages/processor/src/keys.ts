/** Every key the processor writes besides snapshots and cursors. */
export const processorKeys = {
  /** Entries that could not be applied, with the reason. Shares the stream's cluster slot. */
  deadLetters: (stream: string) => `redsource:{${stream}}:dead`,
  /** entry id → failed handler attempts of the group on it (REDSOURCE_MAX_DELIVERIES counts these); a field goes when its entry is handled. */
  attempts: (stream: string, group: string) => `redsource:{${stream}}:attempts:${group}`,
  /** consumer name → last heartbeat (ms since epoch). Shares the group's slot (see partitionKeys). */
  heartbeats: (group: string) => `redsource:{group:${group}}:heartbeats`,
  /** consumer name → JSON of its per-stream counters, refreshed with each heartbeat. */
  consumerStats: (group: string) => `redsource:{group:${group}}:stats`,
  /** Set by retention: entries below this id were trimmed, so the stream no longer starts at its first event. */
  trimmedBelow: (stream: string) => `redsource:{${stream}}:trimmed-below`,
  /**
   * State of a running rebuild of the snapshots under a prefix: phase, progress, its id, which users.
   * The state, the lease and the fencing counter share one hash tag, `{rebuild:<projection>:<keyPrefix>}`
   * (one Redis Cluster slot), so a fenced write of the state checks the lease in the same script.
   */
  rebuild: (projection: string, keyPrefix: string) => `redsource:{rebuild:${projection}:${keyPrefix}}:state`,
  /** The lease of the one rebuild of those snapshots allowed at a time: `<fencing token> <holder JSON>`, expiring unless renewed. */
  rebuildLease: (projection: string, keyPrefix: string) => `redsource:{rebuild:${projection}:${keyPrefix}}:lease`,
  /** The last fencing token given to a rebuild of those snapshots: only grows, so a newer holder always has a higher one. Never delete it. */
  rebuildFence: (projection: string, keyPrefix: string) => `redsource:{rebuild:${projection}:${keyPrefix}}:fence`,
  /**
   * On a Redis Cluster, the rebuild lease's token copied into a stream's slot (the lease is in
   * another): the highest token of a rebuild of those snapshots that wrote there. Every rebuild write
   * to the stream's keys (hold, cursors, totals, shadow applies) checks it in the same script. Only
   * grows, never deleted.
   */
  rebuildEpoch: (stream: string, projection: string, keyPrefix: string) =>
    `redsource:{${stream}}:rebuild-epoch:${projection}:${keyPrefix}`,
} as const;
