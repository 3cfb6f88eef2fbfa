import type { RunningRebuild } from './rebuild-lease.ts';

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

/** Another process is rebuilding the same snapshots: at most one rebuild of a projection runs at a time. */
export class RebuildRunningError extends ProcessorError {
  constructor(
    readonly running: RunningRebuild,
    target: { readonly projection: string; readonly keyPrefix: string },
    leaseMs: number,
  ) {
    super(
      'RS_REBUILD_RUNNING',
      `A rebuild of '${target.keyPrefix}*' (projection '${target.projection}') is already running: host ${running.host}, pid ${running.pid}, ` +
        `started ${new Date(running.startedAt).toISOString()}, phase ${running.phase}. Wait for it (replay --wait); ` +
        `if that process is gone, its lease expires within ${leaseMs} ms and the next replay resumes its rebuild.`,
    );
  }
}

/**
 * The rebuild's lease expired or was taken over (its process was paused or cut off from Redis for
 * longer than the lease): it stopped, and Redis refused every write it tried after that.
 */
export class RebuildLeaseLostError extends ProcessorError {
  constructor(leaseKey: string, token: string) {
    super(
      'RS_REBUILD_LEASE_LOST',
      `This rebuild lost its lease ('${leaseKey}', fencing token ${token}): it was paused or cut off from Redis for longer than the lease, ` +
        'so another replay may have taken over. It stopped and wrote nothing more; run replay again to resume the rebuild if none is running.',
    );
  }
}

/** A snapshot key prefix the rebuild cannot give a same-slot shadow on a Redis Cluster (a `}` without a hash tag, or too long). */
export class RebuildKeyPrefixError extends ProcessorError {
  constructor(keyPrefix: string, why: string) {
    super('RS_REBUILD_KEY_PREFIX', `Cannot rebuild the snapshots under '${keyPrefix}' on a Redis Cluster: ${why}.`);
  }
}
