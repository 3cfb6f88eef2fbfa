import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { expect } from 'vitest';
import { EventStoreError, RedisEventStore } from '@redsource/event-store';
import { partitionKeys, processorKeys } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { processEnv, runCli, type CliProcess } from './cli.ts';
import { prng, randomCommands, referenceFold, snapshotDifferences, type RawCommand } from './model.ts';
import { unprocessed } from './backlog.ts';
import { unique, type TestRedis } from './redis.ts';

/** A group of `redsource process` children on one test Redis, with the model to check them against. */
export class FaultScenario {
  readonly streams: ProfileStreams = {
    updates: unique('user_updates'),
    activity: unique('user_activity'),
    friends: unique('user_friends'),
  };
  readonly keyPrefix = `${unique('user_snapshot')}_`;
  readonly group = unique('group');
  readonly processes = new Map<string, CliProcess>();
  /** Output of processes that have exited, kept for the failure message. */
  private readonly pastLogs: string[] = [];
  appendFailures = 0;
  appended = 0;

  constructor(
    readonly server: TestRedis,
    readonly redis: Redis,
  ) {}

  env(consumer: string): Record<string, string> {
    // A dead or frozen processor's partitions are taken over 1.5 s after its last renewal.
    const timing = { leaseMs: 1_500, rebalanceMs: 200 };
    return processEnv({
      redisUrl: this.server.url,
      streams: this.streams,
      keyPrefix: this.keyPrefix,
      group: this.group,
      consumer,
      ...timing,
      batchSize: 200,
      logLevel: 'warn',
    });
  }

  start(consumer: string): CliProcess {
    const cli = runCli(['process'], this.env(consumer));
    this.processes.set(consumer, cli);
    return cli;
  }

  async kill(consumer: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const cli = this.processes.get(consumer);
    if (!cli) return;
    cli.child.kill(signal);
    await cli.exited;
    this.pastLogs.push(`--- ${consumer} (${signal}) ---\n${cli.output().slice(-2_000)}`);
    this.processes.delete(consumer);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.processes.keys()].map((c) => this.kill(c)));
  }

  logs(): string {
    return [...this.pastLogs, ...[...this.processes].map(([c, p]) => `--- ${c} ---\n${p.output().slice(-2_000)}`)].join(
      '\n',
    );
  }

  /** Random valid events with `poisonRate` of entries that cannot be applied, XADDed in pipelined chunks over `spreadMs`. */
  async append(
    count: number,
    options: { seed: number; poisonRate: number; spreadMs: number; chunk?: number },
  ): Promise<void> {
    const r = prng(options.seed);
    const commands: RawCommand[] = randomCommands(this.streams, count, 40, options.seed).map((c, i) =>
      r.next() < options.poisonRate ? poison(this.streams, i, r.int(3)) : c,
    );
    const chunk = options.chunk ?? 100;
    const pause = options.spreadMs / Math.ceil(commands.length / chunk);
    for (let i = 0; i < commands.length; i += chunk) {
      const pipeline = this.redis.pipeline();
      for (const [stream, ...fields] of commands.slice(i, i + chunk)) pipeline.xadd(stream, '*', ...fields);
      try {
        for (const [error] of (await pipeline.exec()) ?? []) {
          if (error) this.appendFailures++;
          else this.appended++;
        }
      } catch {
        // Not confirmed (connection lost): the entries may or may not be in the stream; the check reads the stream.
        this.appendFailures += Math.min(chunk, commands.length - i);
      }
      await sleep(pause);
    }
  }

  /** Waits until every entry in the streams is applied or dead-lettered, nothing is left to apply in any partition; then compares with the model. */
  async settle(timeoutMs: number): Promise<Outcome> {
    // Before a processor has prepared a stream, every entry of it counts as unapplied.
    return settleOutcome(
      this.redis,
      this.streams,
      this.keyPrefix,
      timeoutMs,
      (stream, snapshots) =>
        unprocessed(this.redis, stream, this.group, snapshots, subjectFields(this.streams, stream)),
      settled,
    );
  }

  /** The processors in the group now (their membership not expired), by name. */
  async members(): Promise<string[]> {
    return (await this.redis.zrange(partitionKeys.members(this.group), 0, -1)).sort();
  }

  /** Who holds each partition of each stream now (undefined: free), as the leases say: the streams sorted by name, partition 0 first. */
  async leaseHolders(): Promise<(string | undefined)[]> {
    const partitions = Number((await this.redis.get(partitionKeys.count(this.streams.updates, this.group))) ?? 12);
    const streams = Object.values(this.streams).sort();
    const leases = await Promise.all(
      streams.flatMap((stream) =>
        [...Array(partitions).keys()].map((p) => this.redis.get(partitionKeys.lease(this.group, stream, p))),
      ),
    );
    return leases.map((lease) => lease?.slice(lease.indexOf(' ') + 1));
  }

  /** Entries not applied yet, read from Redis: entries of the source streams after their partition's cursor. */
  async unprocessed(): Promise<number> {
    const snapshots = new SnapshotStore({ redis: this.redis, keyPrefix: this.keyPrefix, projection: 'profiles' });
    let left = 0;
    for (const stream of Object.values(this.streams)) {
      const u = await unprocessed(this.redis, stream, this.group, snapshots, subjectFields(this.streams, stream));
      left += u.unapplied + u.pending;
    }
    return left;
  }
}

/** The profile app's subject fields of one of its streams (what partitions its entries). */
export function subjectFields(streams: ProfileStreams, stream: string): readonly string[] {
  return profileCatalog(streams).subjectFields(stream);
}

/** What is left of one stream's entries to apply, and what is pending in the group. */
export interface StreamBacklog {
  readonly unapplied: number;
  readonly pending: number;
}

/** The streams against the totals and the dead letters, with what `backlog` says is left of each stream. */
async function measureOutcome(
  redis: Redis,
  streams: ProfileStreams,
  snapshots: SnapshotStore,
  eventStore: RedisEventStore,
  backlog: (stream: string, snapshots: SnapshotStore) => Promise<StreamBacklog>,
): Promise<Outcome> {
  const outcome = {
    inStreams: 0,
    undecodable: 0,
    applied: 0,
    skipped: 0,
    deadLettered: 0,
    deadLetterEntries: 0,
    pending: 0,
    unapplied: 0,
    differences: [],
    users: 0,
  };
  for (const stream of Object.values(streams)) {
    for await (const page of eventStore.readPages(stream, { pageSize: 1_000 })) {
      outcome.inStreams += page.length;
      outcome.undecodable += page.filter(
        (e) => eventStore.codec.tryDecode(stream, e.id, e.fields) instanceof EventStoreError,
      ).length;
    }
    const totals = await snapshots.totals(stream);
    outcome.applied += totals.applied;
    outcome.skipped += totals.skipped;
    outcome.deadLettered += totals.deadLettered;
    outcome.deadLetterEntries += await redis.xlen(processorKeys.deadLetters(stream));
    const left = await backlog(stream, snapshots);
    outcome.unapplied += left.unapplied;
    outcome.pending += left.pending;
  }
  return outcome;
}

/**
 * Measures until `done` (or the timeout), every 200 ms; then compares every snapshot with the
 * reference fold of the streams (which depends on each user's order).
 */
export async function settleOutcome(
  redis: Redis,
  streams: ProfileStreams,
  keyPrefix: string,
  timeoutMs: number,
  backlog: (stream: string, snapshots: SnapshotStore) => Promise<StreamBacklog>,
  done: (o: Outcome) => boolean,
): Promise<Outcome> {
  const snapshots = new SnapshotStore({ redis, keyPrefix, projection: 'profiles' });
  const eventStore = new RedisEventStore({ redis, catalog: profileCatalog(streams) });
  const end = Date.now() + timeoutMs;
  let outcome = await measureOutcome(redis, streams, snapshots, eventStore, backlog);
  while (Date.now() < end && !done(outcome)) {
    await sleep(200);
    outcome = await measureOutcome(redis, streams, snapshots, eventStore, backlog);
  }
  const expected = await referenceFold(eventStore, streams);
  return { ...outcome, differences: await snapshotDifferences(snapshots, expected), users: expected.size };
}

/** Every entry in the streams applied or dead-lettered, nothing left after a partition cursor, nothing pending. */
export function settled(o: Pick<Outcome, 'inStreams' | 'applied' | 'deadLettered' | 'unapplied' | 'pending'>): boolean {
  return o.inStreams === o.applied + o.deadLettered && o.unapplied === 0 && o.pending === 0;
}

export interface Outcome {
  /** Entries in the three streams at the end: what was appended, as Redis has it. */
  inStreams: number;
  /** Entries among them that cannot be decoded or fail their schema. */
  undecodable: number;
  applied: number;
  /** Redeliveries recognised by the cursor and not applied again. */
  skipped: number;
  deadLettered: number;
  deadLetterEntries: number;
  /** Entries pending in the group (nobody reads through it: always 0). */
  pending: number;
  /** Entries of the streams after their partition's applied position. */
  unapplied: number;
  differences: string[];
  users: number;
}

export function describeOutcome(name: string, o: Outcome, appendFailures: number): string {
  return (
    `[${name}] appended ${o.inStreams} (unconfirmed ${appendFailures}), applied ${o.applied}, dead-lettered ${o.deadLettered} ` +
    `(poison ${o.undecodable}), duplicates skipped ${o.skipped}, pending ${o.pending}, unapplied ${o.unapplied}, users ${o.users}, snapshot differences ${o.differences.length}`
  );
}

/**
 * The guarantee, checked: every entry in the streams applied or (if it cannot be decoded)
 * dead-lettered exactly once, nothing left to apply, every snapshot equal to the fold. `appended` is what
 * the test tried to append: at least half of it must have reached Redis for the check to mean much.
 */
export function expectExactOnce(name: string, s: FaultScenario, outcome: Outcome, appended: number): void {
  const line = describeOutcome(name, outcome, s.appendFailures);
  console.log(line);
  const context = `${line}\n${outcome.differences.slice(0, 5).join('\n')}\n${s.logs()}`;
  expect(outcome.inStreams, context).toBeGreaterThan(appended * 0.5);
  expect(outcome.applied + outcome.deadLettered, context).toBe(outcome.inStreams);
  expect(outcome.deadLettered, context).toBe(outcome.undecodable);
  expect(outcome.deadLetterEntries, context).toBe(outcome.undecodable);
  expect(outcome.pending, context).toBe(0);
  expect(outcome.unapplied, context).toBe(0);
  expect(outcome.differences, context).toEqual([]);
}

function poison(streams: ProfileStreams, i: number, kind: number): RawCommand {
  if (kind === 0) return [streams.updates, 'user_id', String(i % 40), 'no_command_here', 'x'];
  if (kind === 1) return [streams.friends, 'user_id', '1', 'command', 'add', 'friend_id', 'not a valid id!'];
  return [streams.activity, 'specversion', '1.0', 'type', 'like', 'data', '{"userId": broken json'];
}
