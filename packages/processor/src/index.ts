export { StreamProcessor, type StreamProcessorOptions } from './stream-processor.ts';
export { HandlerRegistry, type Handler } from './handlers.ts';
export { replay, rebuildState, type ReplayOptions, type ReplayProgress } from './replay.ts';
export {
  rebuildLeaseSettingsSchema,
  type RebuildLeaseSettings,
  type RebuildLeaseSettingsInput,
  type RunningRebuild,
} from './rebuild-lease.ts';
export {
  processorSettingsSchema,
  parseProcessorSettings,
  type ProcessorSettings,
  type ProcessorSettingsInput,
} from './options.ts';
export { processorKeys } from './keys.ts';
export type { StreamStats } from './stats.ts';
export { silentLogger, type Logger } from './logger.ts';
export {
  ProcessorError,
  InvalidProcessorOptionsError,
  DuplicateHandlerError,
  ProcessorStateError,
  ReplayImpossibleError,
  RebuildRunningError,
  RebuildLeaseLostError,
  RebuildKeyPrefixError,
  ProcessorLoopError,
  ProcessorStartError,
  InvalidProjectionError,
  ProjectionInUseError,
  type StartFailure,
} from './errors.ts';
export type { ProcessorEvents, BatchEvent, DeadLetterEvent, PartitionsChangedEvent } from './events.ts';
export {
  defineProjection,
  Projection,
  type ProjectionDefinition,
  type ProjectionHandler,
  type ProjectionHandlers,
  type HandlerResult,
} from './projection/define.ts';
export {
  createProcessor,
  ProjectionProcessor,
  type ProjectionProcessorOptions,
  type StartOptions,
} from './projection/processor.ts';
export { removeProjection, type RemoveProjectionOptions, type RemovedProjection } from './projection/remove.ts';
export { DeadLetters, type DeadLetter } from './dead-letters.ts';
export {
  streamStatus,
  type StreamStatus,
  type StreamWaiting,
  type ConsumerStatus,
  type StatusOptions,
  type PartitionStatus,
} from './status.ts';
export type { WaitingOnRedis } from './redis-wait.ts';
export { trimApplied } from './retention.ts';
export { discoverStreams } from './discovery.ts';
export { partitionKeys } from './partitions/keys.ts';
export { projectionKeys, type ProjectionIdentity } from './projection/keys.ts';
export { partitionOfSubject, partitionOfEntry, subjectOfEntry } from './partitions/subject.ts';
export {
  AppliedPositions,
  type AppliedThrough,
  type AppliedPositionsPartitioning,
} from './partitions/applied-through.ts';
export type { HeldPartitionInfo } from './stream-processor.ts';
export type { PartitionUnit } from './partitions/ownership.ts';
