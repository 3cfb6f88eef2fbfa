/**
 * The keys of partitioned processing. A stream's partition keys carry the stream's hash tag, so they
 * share its cluster slot (the apply script checks the epoch with its bookkeeping); a group's
 * ownership keys carry the group's, so one script sees every lease of the group.
 */
export const partitionKeys = {
  /** The fencing token of the partition's current holder; every apply of the partition checks it. */
  epoch: (stream: string, group: string, partition: number) => `redsource:{${stream}}:epoch:${group}:${partition}`,
  /** How many partitions the group splits the stream into; fixed when the first processor prepares the stream. */
  count: (stream: string, group: string) => `redsource:{${stream}}:partitions:${group}`,
  /** Live processors of the group: name → expiry (ms), a sorted set. */
  members: (group: string) => `redsource:{group:${group}}:members`,
  /**
   * Who holds a partition of a stream: `<fencing token> <processor>`, expiring unless renewed. The
   * unit of ownership is a stream's partition, so a processor reads only the streams it holds
   * partitions of (the stream last: its name may hold any character).
   */
  lease: (group: string, stream: string, partition: number) =>
    `redsource:{group:${group}}:lease:${partition}:${stream}`,
  /** How redsource 0.2 leased a partition of every stream at once; a round takes nothing while one exists. */
  olderLease: (group: string, partition: number) => `redsource:{group:${group}}:lease:${partition}`,
  /**
   * The last fencing token given for a partition, whichever stream's: only grows, so the tokens of
   * each stream's partition grow too (and epochs written by earlier versions stay below them).
   */
  fence: (group: string, partition: number) => `redsource:{group:${group}}:fence:${partition}`,
} as const;

/** A group name becomes part of hash-tagged keys: braces would move them to another slot. */
export const GROUP_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;
