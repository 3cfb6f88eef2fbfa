export {
  SnapshotStore,
  type ApplyBatchInput,
  type ApplyBatchResult,
  type BatchEntry,
  type SnapshotStoreOptions,
} from './snapshot-store.ts';
export type { Snapshot, SnapshotVersion } from './layout.ts';
export { checkMutations, encodeMutations, type Mutation, type SnapshotChange } from './mutations.ts';
export { compareEntryIds } from './entry-ids.ts';
export { SNAPSHOT_ID, snapshotKeys } from './keys.ts';
export {
  SnapshotStoreError,
  InvalidMutationError,
  CorruptSnapshotError,
  InvalidSnapshotIdError,
  InvalidSnapshotStoreOptionsError,
} from './errors.ts';
export { keySlot } from './cluster-slot.ts';
export { withLuaIncludes } from './scripts.ts';
