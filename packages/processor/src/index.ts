export { StreamProcessor, type StreamProcessorOptions } from './stream-processor.ts';
export { HandlerRegistry, type Handler } from './handlers.ts';
export { replay, type ReplayOptions, type ReplayProgress } from './replay.ts';
export { processorSettingsSchema, parseProcessorSettings, type ProcessorSettings, type ProcessorSettingsInput } from './options.ts';
export { processorKeys } from './keys.ts';
export type { StreamStats } from './stats.ts';
export { silentLogger, type Logger } from './logger.ts';
export { ProcessorError, InvalidProcessorOptionsError, DuplicateHandlerError, ProcessorStateError } from './errors.ts';
export { DeadLetters, type DeadLetter } from './dead-letters.ts';
