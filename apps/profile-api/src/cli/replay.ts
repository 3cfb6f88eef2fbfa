import type { Redis } from 'ioredis';
import type { Logger as Pino } from 'pino';
import {
  RebuildLeaseLostError,
  RebuildRunningError,
  replay,
  type ReplayProgress,
  type RunningRebuild,
} from '@redsource/processor';
import type { AppConfig } from '../config.ts';
import type { ProfileComponents } from '../runtime/components.ts';
import { progressReporter } from './progress.ts';

export interface ReplayFlags {
  /** Only these users' snapshots (ids already checked). */
  readonly users?: readonly string[];
  readonly wait?: boolean;
}

/** `redsource replay`: the rebuild with progress on stderr and one summary line on stdout; returns the exit code. */
export async function runReplay(
  redis: Redis,
  components: ProfileComponents,
  config: AppConfig,
  logger: Pino,
  flags: ReplayFlags,
): Promise<number> {
  const progress = progressReporter();
  const { eventStore, snapshots, handlers } = components;
  const lease = {
    ...(config.REDSOURCE_REBUILD_LEASE_MS === undefined ? {} : { leaseMs: config.REDSOURCE_REBUILD_LEASE_MS }),
    ...(config.REDSOURCE_REBUILD_RENEW_MS === undefined ? {} : { renewMs: config.REDSOURCE_REBUILD_RENEW_MS }),
  };
  const onWaiting = (r: RunningRebuild) =>
    process.stderr.write(
      `redsource: waiting for the running rebuild (host ${r.host}, pid ${r.pid}, started ${new Date(r.startedAt).toISOString()}, phase ${r.phase})\n`,
    );
  let result: ReplayProgress;
  try {
    result = await replay({
      redis,
      eventStore,
      snapshots,
      handlers,
      logger,
      partitioning: components.partitioning,
      ...(flags.users ? { only: flags.users } : {}),
      wait: flags.wait === true,
      lease,
      onWaiting,
      onProgress: (p) => progress.update(p),
    });
  } catch (error) {
    // Another rebuild running, or this one taken over: expected outcomes, one line with the code to grep for.
    if (!(error instanceof RebuildRunningError || error instanceof RebuildLeaseLostError)) throw error;
    process.stderr.write(`redsource: ${error.code}: ${error.message}\n`);
    return 1;
  }
  progress.finish(result);
  process.stdout.write(`${summary(result, flags.users)}\n`);
  return 0;
}

/** The one line a replay ends with; with `--users`, what it did for those users only. */
export function summary(r: ReplayProgress, users: readonly string[] | undefined): string {
  const dead =
    r.stepped === 0 ? '0 dead-lettered' : `${r.stepped} dead-lettered (${r.deadLetteredBefore} of them already before)`;
  const applied = users ? `${r.applied} applied to users ${users.join(',')}` : `${r.applied} applied`;
  return `replayed ${r.done} entries (${applied}, ${dead}) and switched ${r.switched} snapshots over in ${r.elapsedMs} ms`;
}
