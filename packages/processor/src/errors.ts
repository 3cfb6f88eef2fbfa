/** Every error the processor throws; `code` is stable, grep for it. */
export class ProcessorError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class InvalidProcessorOptionsError extends ProcessorError {
  constructor(detail: string) {
    super('RS_PROCESSOR_OPTIONS_INVALID', `Invalid processor options: ${detail}.`);
  }
}

export class DuplicateHandlerError extends ProcessorError {
  constructor(stream: string, type: string) {
    super('RS_HANDLER_DUPLICATE', `A handler for '${type}' on stream '${stream}' is already registered; register one handler per stream and type.`);
  }
}

export class ProcessorStateError extends ProcessorError {
  constructor(detail: string) {
    super('RS_PROCESSOR_STATE', detail);
  }
}

/** Retention trimmed the stream: its first events are gone, so snapshots cannot be rebuilt from it. */
export class ReplayImpossibleError extends ProcessorError {
  constructor(stream: string, trimmedBelow: string) {
    super(
      'RS_REPLAY_TRIMMED',
      `Cannot rebuild from '${stream}': retention trimmed it below ${trimmedBelow}, so its first events are gone. ` +
        'Rebuilding needs the whole log; keep retention off for streams you may need to replay.',
    );
  }
}
