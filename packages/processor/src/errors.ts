import type { RunningRebuild } from './rebuild-lease.ts';
import type { WaitingOnRedis } from './redis-wait.ts';

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
    super(
      'RS_HANDLER_DUPLICATE',
      `A handler for '${type}' on stream '${stream}' is already registered; register one handler per stream and type.`,
    );
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

/** The leading code of a Redis error reply (`WRONGTYPE`, `NOAUTH`, `RS_PARTITIONS_MISMATCH`), if the message starts with one. */
export function replyCode(error: unknown): string | undefined {
  const message = error instanceof Error ? error.message : String(error);
  return /^([A-Z][A-Z0-9_]{2,})\b/.exec(message)?.[1];
}

/**
 * A processor loop (read or ownership) failed; it retries with backoff. Emitted as the
 * processor's `error` event: `cause` is what failed, `redisCode` its Redis reply code if it has one,
 * `waiting` why the processor waits when Redis refuses or cannot be reached.
 */
export class ProcessorLoopError extends ProcessorError {
  readonly redisCode: string | undefined;
  constructor(
    readonly loop: 'read' | 'ownership',
    cause: unknown,
    readonly waiting: WaitingOnRedis | undefined,
  ) {
    const message = cause instanceof Error ? cause.message : String(cause);
    super('RS_PROCESSOR_LOOP', `The processor's ${loop} loop failed and retries with backoff: ${message}`, { cause });
    this.redisCode = replyCode(cause);
  }
}

export type StartFailure =
  'WRONGPASS' | 'NOAUTH' | 'NOPERM' | 'WRONGTYPE' | 'RS_PARTITIONS_MISMATCH' | 'TIMEOUT' | 'STOPPED';

const START_ADVICE: Record<StartFailure, string> = {
  WRONGPASS:
    'Redis refused the login: check the user name and password of the connection (REDIS_URL), and that the ACL user is enabled',
  NOAUTH: 'Redis requires a password: give it in the connection options (REDIS_URL: redis://:<password>@host:port)',
  NOPERM:
    "the connection's ACL user lacks a permission the processor needs: grant it the stream, hash, sorted-set and script commands on the projection's keys",
  WRONGTYPE:
    'a key the processor needs holds another type of value (a stream name of the catalog names a key that is not a stream?): rename the stream in the catalog, or delete that key',
  RS_PARTITIONS_MISMATCH:
    'the stream is already processed in another partition count: give every processor of the group that count (`partitions`), or use a new group',
  TIMEOUT: 'check that Redis is reachable at the address of the connection, or raise `startTimeoutMs`',
  STOPPED: 'stop() was called before the processor was ready',
};

/**
 * `start()` could not make the processor ready (groups created, partitions taken):
 * a refusal that retrying cannot cure, or not ready within `startTimeoutMs`. The processor was
 * stopped; fix the cause and create a new one. `reason` says which, `cause` is the last error.
 */
export class ProcessorStartError extends ProcessorError {
  constructor(
    readonly reason: StartFailure,
    cause: unknown,
    detail: string,
  ) {
    super(
      'RS_PROCESSOR_START',
      `The processor could not start (${detail}): ${START_ADVICE[reason]}.`,
      cause === undefined ? {} : { cause },
    );
  }
}

/** A name or key prefix a projection cannot have. */
export class InvalidProjectionError extends ProcessorError {
  constructor(detail: string) {
    super('RS_PROJECTION_INVALID', `Invalid projection: ${detail}.`);
  }
}

/** removeProjection() while a processor of the projection's group (or a rebuild of it) is alive. */
export class ProjectionInUseError extends ProcessorError {
  constructor(
    readonly projection: string,
    readonly group: string,
    readonly members: readonly string[],
    rebuilding: boolean,
  ) {
    const who = [
      ...(members.length > 0 ? [`processors ${members.join(', ')} of group '${group}' are alive`] : []),
      ...(rebuilding ? ['a rebuild of it holds its lease'] : []),
    ].join(' and ');
    super(
      'RS_PROJECTION_IN_USE',
      `Cannot remove projection '${projection}': ${who}. Stop them first (their leases run out within leaseMs once they are gone), or pass force: true to remove it anyway.`,
    );
  }
}
