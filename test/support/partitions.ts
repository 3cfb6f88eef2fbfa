import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { expect } from 'vitest';
import type { Logger } from '@redsource/processor';
import { partitionKeys } from '../../packages/processor/src/partitions/keys.ts';
import type { ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { processEnv, runCli, type CliProcess } from './cli.ts';
import { prng, randomCommands, type RawCommand } from './model.ts';
import { unique, type TestRedis } from './redis.ts';
import { settled, settleOutcome, subjectFields, type Outcome } from './fault-driver.ts';
import { unprocessed } from './backlog.ts';

/**
 * Helpers for the partition tests: read the ownership state straight from Redis, with the key
 * layout (and, in backlog.ts, the hash) written out here again (not taken from the processor), so a
 * test checks the processor against the design rather than against itself.
 */

export { designPartition, designPartitionOfEntry, unappliedPerPartition } from './backlog.ts';

export const keys = {
  epoch: (stream: string, group: string, p: number) => `redsource:{${stream}}:epoch:${group}:${p}`,
  count: (stream: string, group: string) => `redsource:{${stream}}:partitions:${group}`,
  members: (group: string) => `redsource:{group:${group}}:members`,
  lease: (group: string, stream: string, p: number) => `redsource:{group:${group}}:lease:${p}:${stream}`,
  fence: (group: string, p: number) => `redsource:{group:${group}}:fence:${p}`,
} as const;

/** The layout above is the processor's too: checked once, so a renamed key fails loudly here rather than as a silent "nothing found". */
export function expectKeyLayout(): void {
  expect(partitionKeys.epoch('s', 'g', 3)).toBe(keys.epoch('s', 'g', 3));
  expect(partitionKeys.count('s', 'g')).toBe(keys.count('s', 'g'));
  expect(partitionKeys.members('g')).toBe(keys.members('g'));
  expect(partitionKeys.lease('g', 's', 3)).toBe(keys.lease('g', 's', 3));
  expect(partitionKeys.fence('g', 3)).toBe(keys.fence('g', 3));
}

export interface Lease {
  readonly token: string;
  readonly holder: string;
}

/** The leases of one stream's partitions, partition 0 first: who holds each with which fencing token, or undefined when free. */
export async function readLeases(
  redis: Redis,
  group: string,
  stream: string,
  partitions: number,
): Promise<(Lease | undefined)[]> {
  const values = await redis.mget(...Array.from({ length: partitions }, (_, p) => keys.lease(group, stream, p)));
  return values.map(parseLease);
}

/**
 * Every lease of the group over `streams`, in the order the processors share them out (the units
 * of rebalance.lua): the streams sorted by name, each stream's partitions 0..P-1.
 */
export async function readUnitLeases(
  redis: Redis,
  group: string,
  streams: readonly string[],
  partitions: number,
): Promise<(UnitLease | undefined)[]> {
  const units = [...streams].sort().flatMap((stream) => Array.from({ length: partitions }, (_, p) => ({ stream, p })));
  const values = await redis.mget(...units.map((u) => keys.lease(group, u.stream, u.p)));
  return values.map((v, i) => {
    const lease = parseLease(v);
    const unit = units[i] as { stream: string; p: number };
    return lease && { ...lease, stream: unit.stream, partition: unit.p };
  });
}

export interface UnitLease extends Lease {
  readonly stream: string;
  readonly partition: number;
}

function parseLease(v: string | null): Lease | undefined {
  if (v === null) return undefined;
  const match = /^(\d+) (.*)$/.exec(v);
  if (!match) throw new Error(`lease value '${v}' is not '<token> <holder>'`);
  return { token: match[1] as string, holder: match[2] as string };
}

/** The fencing counters of the group, partition 0 first (0 = never taken); shared by every stream's partition of that number. */
export async function readFences(redis: Redis, group: string, partitions: number): Promise<number[]> {
  const values = await redis.mget(...Array.from({ length: partitions }, (_, p) => keys.fence(group, p)));
  return values.map((v) => Number(v ?? 0));
}

/** Each holder's partitions (or units, given readUnitLeases' list), by their index in `leases`. */
export function holdings(leases: readonly (Lease | undefined)[]): Map<string, number[]> {
  const byHolder = new Map<string, number[]>();
  leases.forEach((lease, p) => {
    if (!lease) return;
    byHolder.set(lease.holder, [...(byHolder.get(lease.holder) ?? []), p]);
  });
  return byHolder;
}

/** How many partitions each holder has, sorted, e.g. [4, 4, 4] (free partitions not counted). */
export function shareCounts(leases: readonly (Lease | undefined)[]): number[] {
  return [...holdings(leases).values()].map((ps) => ps.length).sort((a, b) => a - b);
}

/** Deletes every key named after `stream` (its hash tag): the source, its cursors, epochs, partition count... */
export async function dropStreamKeys(redis: Redis, stream: string): Promise<void> {
  const doomed: string[] = [stream];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `redsource:{${stream}}:*`, 'COUNT', 1000);
    cursor = next;
    doomed.push(...found);
  } while (cursor !== '0');
  for (let i = 0; i < doomed.length; i += 500) await redis.unlink(...doomed.slice(i, i + 500));
}

/** A logger that keeps every line, to check what a processor said. */
export function capturingLogger(): Logger & {
  readonly lines: { level: string; msg: string; obj: object }[];
  said(msg: RegExp): boolean;
} {
  const lines: { level: string; msg: string; obj: object }[] = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, msg: msg ?? '', obj });
  return {
    lines,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    said: (msg) => lines.some((l) => msg.test(l.msg)),
  };
}

/**
 * A TCP proxy in front of Redis that can be cut: the clients going through it lose Redis at once
 * (their sockets reset, new ones refused) while the process itself runs on, as across a network
 * partition. restore() lets them reconnect.
 */
export class CuttableProxy {
  private readonly sockets = new Set<net.Socket>();
  private cutOff = false;

  private constructor(
    private readonly server: net.Server,
    readonly url: string,
  ) {}

  static async start(targetUrl: string): Promise<CuttableProxy> {
    const target = new URL(targetUrl);
    let proxy: CuttableProxy | undefined;
    const server = net.createServer((client) => proxy?.accept(client, target));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address() as net.AddressInfo;
    proxy = new CuttableProxy(server, `redis://127.0.0.1:${address.port}`);
    return proxy;
  }

  private accept(client: net.Socket, target: URL): void {
    if (this.cutOff) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  cut(): void {
    this.cutOff = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.cutOff = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Polls `check` every `everyMs` until it holds or `timeoutMs` passes; returns whether it held and when (ms since the start). */
export async function within(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 10,
): Promise<{ ok: boolean; ms: number }> {
  const start = performance.now();
  for (;;) {
    if (await check()) return { ok: true, ms: performance.now() - start };
    if (performance.now() - start > timeoutMs) return { ok: false, ms: performance.now() - start };
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// `redsource process` children on partitions, under a continuous load of raw XADDs.

export interface PartitionSettings {
  readonly partitions: number;
  readonly leaseMs: number;
  readonly rebalanceMs: number;
}

/** What a partition scenario measures once settled: the fault scenarios' outcome. */
export type PartitionOutcome = Outcome;

/**
 * A group of `redsource process` children on one test Redis, configured for partitions, and a
 * load of raw XADDs (flat entries, envelopes naming the user as a JSON number, poison) to check
 * them against the reference fold.
 */
export class PartitionScenario {
  readonly streams: ProfileStreams = {
    updates: unique('user_updates'),
    activity: unique('user_activity'),
    friends: unique('user_friends'),
  };
  readonly keyPrefix = `${unique('user_snapshot')}_`;
  readonly group = unique('group');
  readonly processes = new Map<string, CliProcess>();
  /** Every line each consumer name printed, over all its runs. */
  private readonly outputs = new Map<string, string[]>();
  appended = 0;
  appendFailures = 0;

  constructor(
    readonly server: TestRedis,
    readonly redis: Redis,
    readonly settings: PartitionSettings,
  ) {}

  env(consumer: string): Record<string, string> {
    const { partitions, leaseMs, rebalanceMs } = this.settings;
    return processEnv({
      redisUrl: this.server.url,
      streams: this.streams,
      keyPrefix: this.keyPrefix,
      group: this.group,
      consumer,
      partitions,
      leaseMs,
      rebalanceMs,
      batchSize: 100,
      logLevel: 'info',
    });
  }

  start(consumer: string): CliProcess {
    if (this.processes.has(consumer)) throw new Error(`${consumer} is running`);
    const cli = runCli(['process'], this.env(consumer));
    this.processes.set(consumer, cli);
    return cli;
  }

  /** Sends a signal and, unless it is SIGSTOP/SIGCONT, waits for the exit; returns the exit code. */
  async signal(consumer: string, signal: NodeJS.Signals): Promise<number | null> {
    const cli = this.processes.get(consumer);
    if (!cli) throw new Error(`${consumer} is not running`);
    cli.child.kill(signal);
    if (signal === 'SIGSTOP' || signal === 'SIGCONT') return null;
    const code = await cli.exited;
    this.outputs.set(consumer, [...(this.outputs.get(consumer) ?? []), cli.output()]);
    this.processes.delete(consumer);
    return code;
  }

  /** All a consumer printed, over its runs (the current one included). */
  output(consumer: string): string {
    return [...(this.outputs.get(consumer) ?? []), this.processes.get(consumer)?.output() ?? ''].join('\n');
  }

  async stopAll(): Promise<void> {
    for (const [consumer, cli] of this.processes) {
      cli.child.kill('SIGCONT');
      await this.signal(consumer, 'SIGKILL');
    }
  }

  logs(): string {
    const names = new Set([...this.outputs.keys(), ...this.processes.keys()]);
    return [...names].map((c) => `--- ${c} ---\n${this.output(c).slice(-3_000)}`).join('\n');
  }

  /** The next `count` commands of a seeded mix: the model's flat commands, envelopes naming the user as a JSON number, and `poisonRate` of poison. */
  commands(count: number, seed: number, poisonRate: number): RawCommand[] {
    const r = prng(seed * 7 + 1);
    return randomCommands(this.streams, count, 40, seed).map((c, i) => {
      const roll = r.next();
      if (roll < poisonRate) return poison(this.streams, i, r.int(3));
      // The same user's events as an envelope with a numeric id: they must be in the user's partition.
      const user = c[2];
      if (
        roll < poisonRate + 0.1 &&
        c[0] === this.streams.activity &&
        c[1] === 'user_id' &&
        user !== undefined &&
        /^\d+$/.test(user)
      ) {
        const type = c[4] ?? 'comment';
        const data = JSON.stringify({ userId: Number(user), object: c[6] ?? 'p1' });
        return [c[0], 'specversion', '1.0', 'type', type, 'data', data];
      }
      return c;
    });
  }

  /**
   * Appends the seeded mix continuously, `chunk` entries every `everyMs`, until the returned stop()
   * is called; stop() resolves with the number of XADDs Redis confirmed.
   */
  load(options: { seed: number; poisonRate: number; chunk: number; everyMs: number }): { stop: () => Promise<number> } {
    let running = true;
    const all = this.commands(200_000, options.seed, options.poisonRate);
    const done = (async () => {
      let next = 0;
      while (running && next < all.length) {
        const pipeline = this.redis.pipeline();
        for (const [stream, ...fields] of all.slice(next, next + options.chunk)) pipeline.xadd(stream, '*', ...fields);
        next += options.chunk;
        try {
          for (const [error] of (await pipeline.exec()) ?? []) {
            if (error) this.appendFailures++;
            else this.appended++;
          }
        } catch {
          this.appendFailures += options.chunk;
        }
        await sleep(options.everyMs);
      }
    })();
    return {
      stop: async () => {
        running = false;
        await done;
        return this.appended;
      },
    };
  }

  /** Waits until everything is applied (or dead-lettered) in every partition; then compares every snapshot with the reference fold. */
  async settle(timeoutMs: number): Promise<PartitionOutcome> {
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
}

export function describePartitionOutcome(name: string, o: PartitionOutcome, s: PartitionScenario): string {
  return (
    `[${name}] appended ${o.inStreams} (confirmed ${s.appended}, unconfirmed ${s.appendFailures}), applied ${o.applied}, dead-lettered ${o.deadLettered} ` +
    `(poison ${o.undecodable}), duplicates skipped ${o.skipped}, pending ${o.pending}, unapplied ${o.unapplied}, ` +
    `users ${o.users}, snapshot differences ${o.differences.length}`
  );
}

/**
 * The guarantee, checked: every entry appended is applied or (poison) dead-lettered exactly once
 * (the totals hash against the streams), nothing is left unapplied in any partition,
 * and every snapshot equals the reference fold, which depends on each user's order.
 */
export function expectPartitionedExactlyOnce(name: string, s: PartitionScenario, o: PartitionOutcome): void {
  const line = describePartitionOutcome(name, o, s);
  console.log(line);
  const context = `${line}\n${o.differences.slice(0, 5).join('\n')}\n${s.logs()}`;
  expect(o.inStreams, context).toBeGreaterThan(0);
  expect(o.inStreams, context).toBe(s.appended);
  expect(o.applied + o.deadLettered, context).toBe(o.inStreams);
  expect(o.deadLettered, context).toBe(o.undecodable);
  expect(o.deadLetterEntries, context).toBe(o.undecodable);
  expect(o.pending, context).toBe(0);
  expect(o.unapplied, context).toBe(0);
  expect(o.differences, context).toEqual([]);
}

function poison(streams: ProfileStreams, i: number, kind: number): RawCommand {
  if (kind === 0) return [streams.updates, 'user_id', String(1 + (i % 40)), 'no_command_here', 'x'];
  if (kind === 1) return [streams.friends, 'user_id', '1', 'command', 'add', 'friend_id', 'not a valid id!'];
  return [streams.activity, 'specversion', '1.0', 'type', 'like', 'data', '{"userId": broken json'];
}
