export { RedisEventStore, type EventStoreOptions, type ReadOptions, type SubscribeOptions } from './event-store.ts';
export {
  EventCatalog,
  type EventSchemas,
  type StreamDefinition,
  type StreamDefinitions,
  type EventTypeOf,
  type EventDataOf,
} from './catalog.ts';
export { EventCodec, DEFAULT_TYPE_FIELDS, nestingDepth, type CodecOptions } from './codec.ts';
export { eventStoreKeys } from './keys.ts';
export { idempotencySettingsSchema, type IdempotencySettings, type IdempotencySettingsInput } from './options.ts';
export { parseXReadReply, toStreamEntries } from './replies.ts';
export {
  EventStoreError,
  EventValidationError,
  UndecodableEntryError,
  UnknownEventTypeError,
  UnknownStreamError,
  VersionConflictError,
  AppendNotConfirmedError,
  AppendRejectedError,
  InvalidEventStoreOptionsError,
  isVersionConflictError,
  type FieldIssue,
} from './errors.ts';
export type {
  AppendOptions,
  AppendResult,
  EventInput,
  ExpectedVersion,
  RecordedEvent,
  StartPosition,
  StreamEntry,
  WireFormat,
} from './types.ts';
export {
  isRedisUnavailable,
  redisUnavailableKind,
  describeRedisUnavailable,
  type RedisUnavailableKind,
} from './redis-errors.ts';
export { scanKeys, globEscape, isCluster, type ScanKeysOptions } from './scan.ts';
