import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import type { ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { unique } from './redis.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = fileURLToPath(new URL('../../apps/profile-api/src/cli/main.ts', import.meta.url));

export interface CliProcess {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
}

/** Runs `redsource <args>` as the README's `pnpm redsource` does (tsx), in a child process. */
export function runCli(args: readonly string[], env: Readonly<Record<string, string>>): CliProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/**
 * The CLI children a test file (or describe block) starts: push each one; after every test the
 * ones still running are killed and awaited, so no child outlives its test.
 */
export function cliChildren(): CliProcess[] {
  const children: CliProcess[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
      await c.exited;
    }
  });
  return children;
}

/** The service's configuration for `redisUrl`, on stream, key and group names no other test uses. */
export function isolatedServiceEnv(redisUrl: string) {
  return {
    REDIS_URL: redisUrl,
    STREAM_UPDATES: unique('user_updates'),
    STREAM_ACTIVITY: unique('user_activity'),
    STREAM_FRIENDS: unique('user_friends'),
    SNAPSHOT_PREFIX: `${unique('user_snapshot')}_`,
    REDSOURCE_GROUP: unique('group'),
    REDSOURCE_BLOCK_MS: '100',
  };
}

/** What a fault scenario's `redsource process` child is given: its group's names and the scenario's settings. */
export interface ProcessEnv {
  readonly redisUrl: string;
  readonly streams: ProfileStreams;
  readonly keyPrefix: string;
  readonly group: string;
  readonly consumer: string;
  /** Default: the app's (12). */
  readonly partitions?: number;
  readonly leaseMs: number;
  readonly rebalanceMs: number;
  readonly batchSize: number;
  readonly logLevel: 'info' | 'warn';
}

/**
 * The environment of a `redsource process` child in a fault scenario: fast reads (100 ms) and
 * heartbeats (200 ms), so a test sees faults and recoveries within seconds. The default
 * REDSOURCE_MAX_DELIVERIES on purpose: faults redeliver good entries many times, and only failed
 * handler attempts may count toward it, never redeliveries.
 */
export function processEnv(p: ProcessEnv): Record<string, string> {
  return {
    REDIS_URL: p.redisUrl,
    STREAM_UPDATES: p.streams.updates,
    STREAM_ACTIVITY: p.streams.activity,
    STREAM_FRIENDS: p.streams.friends,
    SNAPSHOT_PREFIX: p.keyPrefix,
    REDSOURCE_GROUP: p.group,
    REDSOURCE_CONSUMER: p.consumer,
    ...(p.partitions === undefined ? {} : { REDSOURCE_PARTITIONS: String(p.partitions) }),
    REDSOURCE_LEASE_MS: String(p.leaseMs),
    REDSOURCE_REBALANCE_MS: String(p.rebalanceMs),
    REDSOURCE_BLOCK_MS: '100',
    REDSOURCE_BATCH_SIZE: String(p.batchSize),
    REDSOURCE_HEARTBEAT_MS: '200',
    LOG_LEVEL: p.logLevel,
  };
}
