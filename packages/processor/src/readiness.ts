import type { EventEmitter } from 'node:events';
import { redisUnavailableKind } from '@redsource/event-store';
import { ProcessorStartError, type ProcessorLoopError, type StartFailure } from './errors.ts';
import type { ProcessorEvents } from './events.ts';

/** What waiting for readiness needs of a processor. */
interface Observed extends Pick<EventEmitter<ProcessorEvents>, 'on' | 'off'> {
  readonly isReady: boolean;
}

/**
 * Refusals that retrying cannot cure: the processor would loop on them forever. Anything else
 * (Redis unreachable, out of memory, loading...) may pass, so it is waited out up to the timeout.
 */
const INCURABLE: ReadonlySet<string> = new Set<StartFailure>([
  'WRONGPASS',
  'NOAUTH',
  'NOPERM',
  'WRONGTYPE',
  'RS_PARTITIONS_MISMATCH',
]);

function incurable(error: ProcessorLoopError): StartFailure | undefined {
  const kind = redisUnavailableKind(error.cause);
  if (kind !== undefined && INCURABLE.has(kind)) return kind as StartFailure;
  const code = error.redisCode;
  return code !== undefined && INCURABLE.has(code) ? (code as StartFailure) : undefined;
}

/** Resolves on the processor's `ready`; rejects with ProcessorStartError (see StreamProcessor.ready). Leaves no listener or timer behind. */
export function untilReady(processor: Observed, timeoutMs: number, stopped: AbortSignal): Promise<void> {
  if (processor.isReady) return Promise.resolve();
  if (stopped.aborted)
    return Promise.reject(new ProcessorStartError('STOPPED', undefined, 'stopped before it was ready'));
  return new Promise<void>((resolve, reject) => {
    let last: ProcessorLoopError | undefined;
    const done = (failure?: ProcessorStartError) => {
      clearTimeout(timer);
      processor.off('ready', onReady);
      processor.off('error', onError);
      stopped.removeEventListener('abort', onStop);
      if (failure) reject(failure);
      else resolve();
    };
    const onReady = () => done();
    const onError = (error: ProcessorLoopError) => {
      last = error;
      const reason = incurable(error);
      if (reason) done(new ProcessorStartError(reason, error.cause, `${error.loop} loop: ${messageOf(error.cause)}`));
    };
    const onStop = () => done(new ProcessorStartError('STOPPED', last?.cause, 'stopped before it was ready'));
    const timer = setTimeout(() => {
      const why = last
        ? `last error: ${last.waiting?.reason ?? messageOf(last.cause)}`
        : 'no error, Redis did not answer';
      done(new ProcessorStartError('TIMEOUT', last?.cause, `not ready within ${timeoutMs} ms; ${why}`));
    }, timeoutMs);
    processor.on('ready', onReady);
    processor.on('error', onError);
    stopped.addEventListener('abort', onStop, { once: true });
  });
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));
