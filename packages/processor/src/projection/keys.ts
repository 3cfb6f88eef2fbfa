import { snapshotKeys } from '@redsource/snapshot-store';
import { processorKeys } from '../keys.ts';
import { partitionKeys } from '../partitions/keys.ts';

/** Who a projection is in Redis: its name (cursors, totals, rebuilds), snapshot key prefix and consumer group. */
export interface ProjectionIdentity {
  readonly name: string;
  readonly keyPrefix: string;
  readonly group: string;
}

/**
 * Every key a projection owns, in one place, named by what it is for (the key builders themselves
 * live beside the code that writes them: snapshotKeys, processorKeys, partitionKeys). Removing a
 * projection deletes exactly these, plus its snapshot hashes (`<keyPrefix><id>`) and a rebuild's
 * shadow hashes of them, found by SCAN. Not the projection's: the streams, the event store's keys
 * (versions, event ids), and a stream's dead letters and dead-lettered ids, which every projection
 * of the stream shares.
 */
export function projectionKeys(projection: ProjectionIdentity) {
  const { name, keyPrefix, group } = projection;
  const shadow = `${name}:rebuild`;
  return {
    /** Per stream, in the stream's slot: with `partitions`, every partition's cursor and epoch. */
    ofStream(stream: string, partitions: number) {
      return {
        /** The partition count the group splits the stream into. */
        partitionCount: partitionKeys.count(stream, group),
        /** Per partition: how far it is applied, and its holder's fencing token. */
        partitionCursors: Array.from({ length: partitions }, (_, p) => snapshotKeys.cursor(stream, name, p)),
        partitionEpochs: Array.from({ length: partitions }, (_, p) => partitionKeys.epoch(stream, group, p)),
        /** How far the stream is applied, for projections applied before partitions (adopted once, then gone). */
        streamCursor: snapshotKeys.cursor(stream, name),
        /** Applied / skipped / dead-lettered counts, over every processor. */
        totals: snapshotKeys.totals(stream, name),
        /** Set while a rebuild switches the snapshots over: nothing is applied meanwhile. */
        hold: snapshotKeys.hold(stream, name),
        /** A rebuild's own cursor, totals and hold, beside the live ones. */
        rebuild: [
          snapshotKeys.cursor(stream, shadow),
          snapshotKeys.totals(stream, shadow),
          snapshotKeys.hold(stream, shadow),
        ],
        /** On a cluster, the rebuild lease's token copied into the stream's slot. */
        rebuildEpoch: processorKeys.rebuildEpoch(stream, name, keyPrefix),
        /** Failed handler attempts per entry. */
        attempts: processorKeys.attempts(stream, group),
      };
    },
    /** The group's ownership and liveness keys (members, leases, fencing counters, heartbeats, stats) all start with this, in the group's slot. */
    groupKeyPrefix: `redsource:{group:${group}}:`,
    /** The one rebuild allowed at a time: its state, lease and fencing counter. */
    rebuild: [
      processorKeys.rebuild(name, keyPrefix),
      processorKeys.rebuildLease(name, keyPrefix),
      processorKeys.rebuildFence(name, keyPrefix),
    ],
  };
}

/** All keys of one stream's record, flat. */
export function streamKeysOf(keys: ReturnType<ReturnType<typeof projectionKeys>['ofStream']>): string[] {
  return [
    keys.partitionCount,
    ...keys.partitionCursors,
    ...keys.partitionEpochs,
    keys.streamCursor,
    keys.totals,
    keys.hold,
    ...keys.rebuild,
    keys.rebuildEpoch,
    keys.attempts,
  ];
}
