import { setTimeout as sleep } from 'node:timers/promises';
import type { Cluster, Redis } from 'ioredis';
import { expect } from 'vitest';
import { EventStoreError, RedisEventStore, type RecordedEvent } from '@redsource/event-store';
import { processorKeys, StreamProcessor } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import type { ProfileState } from '../../apps/profile-api/src/domain/fold.ts';
import { profileHandlers } from '../../apps/profile-api/src/domain/handlers.ts';
import { clusterOptions, parseRedisSeeds } from '../../apps/profile-api/src/runtime/redis-connection.ts';
import { processEnv, runCli, type CliProcess } from './cli.ts';
import { settled, type Outcome } from './fault-driver.ts';
import type { TestCluster } from './cluster.ts';
import { prng, randomCommands, referenceFold, type RawCommand } from './model.ts';
import {
  capturingLogger,
  holdings,
  keys,
  readLeases,
  readUnitLeases,
  unappliedPerPartition,
  type Lease,
  type UnitLease,
} from './partitions.ts';
import { unique } from './redis.ts';

/**
 * The profile processor on a Redis Cluster, in process: StreamProcessor instances, each on an
 * ioredis Cluster client of its own (the app's cluster options, typed as `Redis` as the app passes
 * it), under a continuous load of raw XADDs sent with a Cluster client; then the guarantee, checked
 * per key (a snapshot pipeline may not span nodes). A processor can also be a `redsource process`
 * child (`spawn`) on the seed list, for the faults that need a process to kill.
 */

/** Methods of an ioredis client that send nothing to Redis (or return something other than a reply): never held. */
const LOCAL_METHODS = new Set([
  'constructor',
  'on',
  'once',
  'off',
  'addListener',
  'removeListener',
  'removeAllListeners',
  'prependListener',
  'prependOnceListener',
  'emit',
  'listeners',
  'rawListeners',
  'listenerCount',
  'eventNames',
  'setMaxListeners',
  'getMaxListeners',
  'defineCommand',
  'connect',
  'disconnect',
  'nodes',
  'scanStream',
  'sscanStream',
  'hscanStream',
  'zscanStream',
  'createBuiltinCommand',
  'getBuiltinCommands',
  'refreshSlotsCache',
  'toString',
]);

export interface Refusal {
  readonly command: string;
  readonly message: string;
}

/**
 * A processor's Redis: a Cluster client and every duplicate the processor makes of it (its blocking
 * connections), behind one switch. pause() holds every command from then on (what a SIGSTOPped
 * process would send), resume() sends them in order; disconnect() drops every connection for good
 * (a processor cut off from Redis without stop()); failNext() fails chosen commands unsent. `beforeSend` sees each command first and may
 * pause (to freeze the processor at an exact step); `refusals` are the commands Redis answered with
 * RS_PARTITION_LOST.
 */
export interface ControlledClient {
  readonly redis: Redis;
  readonly refusals: Refusal[];
  beforeSend: ((command: string, args: readonly unknown[]) => void) | undefined;
  readonly paused: boolean;
  /** The next `count` calls of `command` fail with `message` without being sent (a step of a batch lost half-way). */
  failNext(command: string, count: number, message: string): void;
  /** Calls failed by failNext so far. */
  readonly injected: number;
  pause(): void;
  resume(): void;
  disconnect(): void;
}

export function controlledClient(cluster: TestCluster, name: string): ControlledClient {
  const base = cluster.client(clusterOptions(parseRedisSeeds(cluster.seeds), name, undefined));
  const connections: { disconnect(): void }[] = [base];
  const refusals: Refusal[] = [];
  const hooks: { beforeSend: ControlledClient['beforeSend'] } = { beforeSend: undefined };
  let hold: { promise: Promise<void>; resolve: () => void } | undefined;
  const failures = new Map<string, { count: number; message: string }>();
  let injected = 0;
  const observe = (command: string, result: unknown): unknown => {
    if (result instanceof Promise) {
      result.then(undefined, (error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        if (message.includes('RS_PARTITION_LOST')) refusals.push({ command, message });
      });
    }
    return result;
  };
  const wrap = <T extends object>(target: T): T =>
    new Proxy(target, {
      get(t, prop) {
        const value = Reflect.get(t, prop, t) as unknown;
        if (typeof value !== 'function') return value;
        const fn = value as (...args: unknown[]) => unknown;
        if (typeof prop === 'symbol' || LOCAL_METHODS.has(prop)) return fn.bind(t);
        if (prop === 'duplicate') {
          return (...args: unknown[]) => {
            const copy = fn.apply(t, args) as Redis;
            copy.on('error', () => undefined);
            connections.push(copy);
            return wrap(copy);
          };
        }
        if (prop === 'pipeline' || prop === 'multi') {
          return (...args: unknown[]) => {
            const pipeline = fn.apply(t, args) as { exec: (...a: unknown[]) => Promise<unknown> };
            const exec = pipeline.exec.bind(pipeline);
            pipeline.exec = (...a: unknown[]) => (hold ? hold.promise.then(() => exec(...a)) : exec(...a));
            return pipeline;
          };
        }
        return (...args: unknown[]) => {
          hooks.beforeSend?.(prop, args);
          const failure = failures.get(prop);
          if (failure && failure.count > 0) {
            failure.count--;
            injected++;
            return Promise.reject(new Error(failure.message));
          }
          const send = () => observe(prop, fn.apply(t, args));
          return hold ? hold.promise.then(send) : send();
        };
      },
    });
  const redis = wrap(base) as unknown as Redis;
  return {
    redis,
    refusals,
    get beforeSend() {
      return hooks.beforeSend;
    },
    set beforeSend(hook) {
      hooks.beforeSend = hook;
    },
    get paused() {
      return hold !== undefined;
    },
    failNext(command, count, message) {
      failures.set(command, { count, message });
    },
    get injected() {
      return injected;
    },
    pause() {
      if (hold) return;
      let resolve = () => {};
      const promise = new Promise<void>((r) => (resolve = r));
      hold = { promise, resolve };
    },
    resume() {
      const held = hold;
      hold = undefined;
      held?.resolve();
    },
    disconnect() {
      for (const connection of connections) connection.disconnect();
    },
  };
}

export interface ScenarioSettings {
  readonly partitions: number;
  readonly leaseMs: number;
  readonly rebalanceIntervalMs: number;
  /** Users the load writes about (the snapshot keys, spread over the slots). */
  readonly users: number;
}

export interface ScenarioProcessor {
  readonly name: string;
  readonly processor: StreamProcessor;
  readonly client: ControlledClient;
  readonly logger: ReturnType<typeof capturingLogger>;
}

export interface ProcessorHooks {
  /** Sees every event the processor's handlers fold (before its handler runs). */
  readonly onEvent?: (event: RecordedEvent, self: ScenarioProcessor) => void;
  /** Sees every command the processor sends (before it is sent or held). */
  readonly beforeSend?: (command: string, args: readonly unknown[], self: ScenarioProcessor) => void;
}

/** The fault scenarios' outcome, and what only a cluster run checks besides. */
export interface ClusterOutcome extends Readonly<Outcome> {
  /** XADDs the cluster confirmed, and those that failed (an unconfirmed one may or may not be in a stream). */
  readonly confirmed: number;
  readonly unconfirmed: number;
  /** Confirmed XADDs whose entry is not in its stream. */
  readonly lost: string[];
  /** Snapshot hashes found on the masters for users the reference fold does not know. */
  readonly strays: string[];
  readonly settleMs: number;
}

/** Redis' error replies by kind (INFO errorstats), summed over every live node of the cluster. */
export async function errorStats(cluster: TestCluster): Promise<Record<string, number>> {
  const totals: Record<string, number> = {};
  for (const port of cluster.ports) {
    if (cluster.pid(port) === undefined) continue;
    const text = await cluster.command(port, 'INFO', 'errorstats');
    for (const [, kind, count] of text.matchAll(/^errorstat_([A-Za-z_-]+):count=(\d+)/gm))
      totals[kind as string] = (totals[kind as string] ?? 0) + Number(count);
  }
  return totals;
}

export function errorStatsSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const diff: Record<string, number> = {};
  for (const [kind, count] of Object.entries(after)) {
    const d = count - (before[kind] ?? 0);
    if (d > 0) diff[kind] = d;
  }
  return diff;
}

/**
 * CLIENT KILL TYPE normal on every live master (the admin's own redis-cli connection spared): every
 * processor's, the load's and the checks' connections dropped at once. Returns how many were dropped.
 */
export async function dropClients(cluster: TestCluster): Promise<number> {
  let dropped = 0;
  for (const port of await cluster.masters()) {
    const reply = (await cluster.command(port, 'CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')).trim();
    if (!/^\d+$/.test(reply)) throw new Error(`CLIENT KILL on ${port}: ${reply}`);
    dropped += Number(reply);
  }
  return dropped;
}

/**
 * Moves one slot to another master as `moveSlot` does, but `keysPerStep` keys per MIGRATE with a
 * pause in between: for a while the slot's keys are split between the two masters, so a script
 * over several of them is answered TRYAGAIN (some keys here, some there) and single keys ASK.
 */
export async function migrateSlotSlowly(
  cluster: TestCluster,
  slot: number,
  toPort: number,
  keysPerStep = 2,
  pauseMs = 25,
): Promise<{ keys: number; ms: number }> {
  const started = performance.now();
  await cluster.waitStable();
  const fromPort = await cluster.nodeForSlot(slot);
  if (fromPort === toPort) throw new Error(`slot ${slot} is on ${toPort} already`);
  const id = async (port: number) => (await cluster.command(port, 'CLUSTER', 'MYID')).trim();
  const [from, to] = [await id(fromPort), await id(toPort)];
  const ok = async (reply: Promise<string>) => {
    const text = (await reply).trim();
    if (text !== 'OK') throw new Error(`expected OK, Redis answered: ${text}`);
  };
  await ok(cluster.command(toPort, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from));
  await ok(cluster.command(fromPort, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to));
  let moved = 0;
  for (;;) {
    const keys = (await cluster.command(fromPort, 'CLUSTER', 'GETKEYSINSLOT', slot, keysPerStep))
      .split('\n')
      .filter((k) => k.length > 0);
    if (keys.length === 0) break;
    const reply = (
      await cluster.command(fromPort, 'MIGRATE', cluster.host, toPort, '', 0, 10_000, 'KEYS', ...keys)
    ).trim();
    if (reply !== 'OK') throw new Error(`MIGRATE of slot ${slot} to ${toPort}: ${reply}`);
    moved += keys.length;
    await sleep(pauseMs);
  }
  await ok(cluster.command(toPort, 'CLUSTER', 'SETSLOT', slot, 'NODE', to));
  await ok(cluster.command(fromPort, 'CLUSTER', 'SETSLOT', slot, 'NODE', to));
  for (const port of await cluster.masters()) {
    if (port !== toPort && port !== fromPort) await cluster.command(port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to);
  }
  await cluster.waitStable();
  return { keys: moved, ms: Math.round(performance.now() - started) };
}

/** Stream entry ids compared as numbers (`<ms>-<seq>`). */
export function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am === bm ? (as === bs ? 0 : as < bs ? -1 : 1) : am < bm ? -1 : 1;
}

/** The profile app's processor group on a test cluster, with names no other test uses. */
export class ClusterScenario {
  readonly streams: ProfileStreams = {
    updates: unique('user_updates'),
    activity: unique('user_activity'),
    friends: unique('user_friends'),
  };
  readonly keyPrefix = `${unique('user_snapshot')}_`;
  readonly group = unique('group');
  /** The test's own client (for the checks), typed as the app passes it. */
  readonly redis: Redis;
  /** The load's client: the app's cluster options, but a command in flight when its connection drops is not sent again. */
  readonly appender: Redis;
  readonly eventStore: RedisEventStore;
  readonly snapshots: SnapshotStore;
  readonly processors = new Map<string, ScenarioProcessor>();
  /** `redsource process` children of the group, by consumer name. */
  readonly children = new Map<string, CliProcess>();
  /** Output of children that have exited, for a failure message. */
  private readonly pastOutputs: string[] = [];
  /** Confirmed entry ids per stream. */
  private readonly confirmedIds = new Map<string, string[]>();
  confirmed = 0;
  unconfirmed = 0;
  private readonly appendErrors = new Map<string, number>();

  constructor(
    readonly cluster: TestCluster,
    readonly settings: ScenarioSettings,
  ) {
    this.redis = cluster.client(
      clusterOptions(parseRedisSeeds(cluster.seeds), 'guarantees-test', undefined),
    ) as unknown as Redis;
    // The load publishes as a raw client does (redis-cli): an XADD whose connection drops before its
    // reply fails (unconfirmed: it may or may not be in the stream) instead of being sent again, which
    // would append a second entry that no failed XADD accounts for. The app's options send it again
    // twice over: the node's client on reconnect (autoResendUnfulfilledCommands), and the Cluster
    // client after retryDelayOnFailover for a command failed with "Connection is closed.".
    const options = clusterOptions(parseRedisSeeds(cluster.seeds), 'guarantees-load', undefined);
    this.appender = cluster.client({
      ...options,
      retryDelayOnFailover: 0,
      redisOptions: { ...options.redisOptions, autoResendUnfulfilledCommands: false },
    }) as unknown as Redis;
    this.eventStore = new RedisEventStore({ redis: this.redis, catalog: profileCatalog(this.streams) });
    this.snapshots = new SnapshotStore({ redis: this.redis, keyPrefix: this.keyPrefix, projection: 'profiles' });
  }

  /** Starts a processor of the group on a client of its own. */
  async start(name: string, hooks: ProcessorHooks = {}): Promise<ScenarioProcessor> {
    if (this.processors.has(name)) throw new Error(`${name} is running`);
    const client = controlledClient(this.cluster, `guarantees-${name}`);
    const logger = capturingLogger();
    const handlers = profileHandlers(this.streams);
    const catalog = profileCatalog(this.streams);
    const processor = new StreamProcessor({
      redis: client.redis,
      eventStore: new RedisEventStore({ redis: client.redis, catalog }),
      snapshots: new SnapshotStore({ redis: client.redis, keyPrefix: this.keyPrefix, projection: 'profiles' }),
      handlers,
      group: this.group,
      consumer: name,
      partitions: this.settings.partitions,
      leaseMs: this.settings.leaseMs,
      rebalanceIntervalMs: this.settings.rebalanceIntervalMs,
      blockMs: 100,
      batchSize: 100,
      heartbeatMs: 200,
      gapFillAfterMs: 500,
      shutdownTimeoutMs: 3_000,
      logger,
    });
    const self: ScenarioProcessor = { name, processor, client, logger };
    if (hooks.onEvent) {
      const onEvent = hooks.onEvent;
      const run = handlers.run.bind(handlers);
      handlers.run = (event) => {
        onEvent(event, self);
        return run(event);
      };
    }
    if (hooks.beforeSend) {
      const beforeSend = hooks.beforeSend;
      client.beforeSend = (command, args) => beforeSend(command, args, self);
    }
    this.processors.set(name, self);
    await processor.start();
    return self;
  }

  /** stop(): finishes the batch in hand, hands the partitions over, leaves the group. */
  async stop(name: string): Promise<void> {
    const p = this.processors.get(name);
    if (!p) throw new Error(`${name} is not running`);
    this.processors.delete(name);
    p.client.resume();
    await p.processor.stop();
  }

  async stopAll(): Promise<void> {
    for (const name of [...this.processors.keys()]) await this.stop(name);
    for (const name of [...this.children.keys()]) await this.kill(name);
  }

  /** The environment of a `redsource process` child of this group: REDIS_URL is the seed list, the settings are the in-process ones. */
  env(consumer: string): Record<string, string> {
    const { partitions, leaseMs, rebalanceIntervalMs } = this.settings;
    return processEnv({
      redisUrl: this.cluster.seeds,
      streams: this.streams,
      keyPrefix: this.keyPrefix,
      group: this.group,
      consumer,
      partitions,
      leaseMs,
      rebalanceMs: rebalanceIntervalMs,
      batchSize: 100,
      logLevel: 'warn',
    });
  }

  /** Starts a processor of the group as a `redsource process` child (a process to SIGKILL); stopAll() kills it. */
  spawn(name: string): CliProcess {
    if (this.children.has(name) || this.processors.has(name)) throw new Error(`${name} is running`);
    const child = runCli(['process'], this.env(name));
    this.children.set(name, child);
    return child;
  }

  /** Signals a child (SIGKILL: a crash at whatever point it is) and waits for it to exit. */
  async kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.children.get(name);
    if (!child) throw new Error(`${name} is not a running child`);
    this.children.delete(name);
    if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill(signal);
    await child.exited;
    this.pastOutputs.push(`--- ${name} (child, ${signal}) ---\n${child.output().slice(-2_000)}`);
  }

  /** The members sorted set of the group, by name (a member whose membership ran out stays until a living one's round removes it). */
  async members(): Promise<string[]> {
    return (await this.redis.zrange(keys.members(this.group), 0, -1)).sort();
  }

  /** The units of ownership (one partition of one stream): the streams x the partitions. */
  get units(): number {
    return Object.keys(this.streams).length * this.settings.partitions;
  }

  /** Every unit's lease in Redis: the streams sorted by name, each stream's partitions 0..P-1 (the order rebalance.lua shares them out in). */
  async unitLeases(): Promise<(UnitLease | undefined)[]> {
    return readUnitLeases(this.redis, this.group, Object.values(this.streams), this.settings.partitions);
  }

  /** Units per holder (their index in unitLeases()), from the leases in Redis. */
  async holders(): Promise<Map<string, number[]>> {
    return holdings(await this.unitLeases());
  }

  /** The lease of one partition of one stream now (undefined: free). */
  async lease(stream: string, partition: number): Promise<Lease | undefined> {
    return (await readLeases(this.redis, this.group, stream, this.settings.partitions))[partition];
  }

  /** Waits until the leases of all units are held, by exactly `names`, in shares that differ by at most one; returns how long it took. */
  async waitForShares(names: readonly string[], timeoutMs: number): Promise<number> {
    const started = performance.now();
    let last = new Map<string, number[]>();
    while (performance.now() - started < timeoutMs) {
      last = await this.holders();
      const counts = names.map((n) => last.get(n)?.length ?? 0);
      const held = counts.reduce((a, b) => a + b, 0);
      if (held === this.units && last.size === names.length && Math.max(...counts) - Math.min(...counts) <= 1)
        return Math.round(performance.now() - started);
      await sleep(25);
    }
    throw new Error(
      `units (a partition of a stream) not shared by ${names.join(', ')} within ${timeoutMs} ms: ${JSON.stringify([...last])}\n${this.logs()}`,
    );
  }

  /** The load's commands: the model's flat commands, ~10% of activity as envelopes naming the user as a JSON number, and `poisonRate` of poison. */
  commands(count: number, seed: number, poisonRate: number): RawCommand[] {
    const r = prng(seed * 7 + 1);
    return randomCommands(this.streams, count, this.settings.users, seed).map((c, i) => {
      const roll = r.next();
      if (roll < poisonRate) return poison(this.streams, i, r.int(3), this.settings.users);
      const user = c[2];
      if (
        roll < poisonRate + 0.1 &&
        c[0] === this.streams.activity &&
        c[1] === 'user_id' &&
        user !== undefined &&
        /^\d+$/.test(user)
      ) {
        return [
          c[0],
          'specversion',
          '1.0',
          'type',
          c[4] ?? 'comment',
          'data',
          JSON.stringify({ userId: Number(user), object: c[6] ?? 'p1' }),
        ];
      }
      return c;
    });
  }

  /** Appends one command; its id once confirmed. */
  async append(command: RawCommand): Promise<string> {
    const [stream, ...fields] = command;
    const id = (await this.appender.xadd(stream, '*', ...fields)) as string;
    this.confirmed++;
    let ids = this.confirmedIds.get(stream);
    if (!ids) this.confirmedIds.set(stream, (ids = []));
    ids.push(id);
    return id;
  }

  /**
   * Appends the seeded mix continuously, `chunk` XADDs at once (each its own command: a Cluster
   * pipeline may not span nodes) every `everyMs`, until stop(), which resolves with the count confirmed.
   */
  load(options: { seed: number; poisonRate?: number; chunk?: number; everyMs?: number }): {
    stop: () => Promise<number>;
  } {
    const chunk = options.chunk ?? 15;
    let running = true;
    const all = this.commands(100_000, options.seed, options.poisonRate ?? 0.01);
    const done = (async () => {
      let next = 0;
      while (running && next < all.length) {
        const results = await Promise.allSettled(all.slice(next, next + chunk).map((c) => this.append(c)));
        next += chunk;
        for (const result of results) {
          if (result.status === 'fulfilled') continue;
          this.unconfirmed++;
          const kind =
            String(result.reason instanceof Error ? result.reason.message : result.reason).split(' ')[0] ?? '?';
          this.appendErrors.set(kind, (this.appendErrors.get(kind) ?? 0) + 1);
        }
        await sleep(options.everyMs ?? 20);
      }
    })();
    return {
      stop: async () => {
        running = false;
        await done;
        return this.confirmed;
      },
    };
  }

  /** Every processor's log lines, for a failure message. */
  logs(): string {
    return [
      ...[...this.processors.values()].map(
        (p) =>
          `--- ${p.name} ---\n${p.logger.lines
            .slice(-25)
            .map((l) => `${l.level} ${l.msg} ${JSON.stringify(l.obj)}`)
            .join('\n')}`,
      ),
      ...this.pastOutputs.slice(-6),
      ...[...this.children].map(([name, child]) => `--- ${name} (child) ---\n${child.output().slice(-2_000)}`),
    ].join('\n');
  }

  /** Per stream, read from Redis: what is in it, what the totals say, and what is left to apply. */
  private async measure(): Promise<{
    inStreams: number;
    applied: number;
    skipped: number;
    deadLettered: number;
    deadLetterEntries: number;
    pending: number;
    unapplied: number;
  }> {
    const m = { inStreams: 0, applied: 0, skipped: 0, deadLettered: 0, deadLetterEntries: 0, pending: 0, unapplied: 0 };
    for (const stream of Object.values(this.streams)) {
      m.inStreams += await this.redis.xlen(stream);
      const totals = await this.snapshots.totals(stream);
      m.applied += totals.applied;
      m.skipped += totals.skipped;
      m.deadLettered += totals.deadLettered;
      m.deadLetterEntries += await this.redis.xlen(processorKeys.deadLetters(stream));
      m.pending += Number((await this.redis.xpending(stream, this.group))[0] ?? 0);
      const subjectFields = this.eventStore.catalog.subjectFields(stream);
      m.unapplied += (
        await unappliedPerPartition(this.redis, this.snapshots, stream, this.settings.partitions, subjectFields)
      ).reduce((a, b) => a + b, 0);
    }
    return m;
  }

  /** Waits until everything is applied or dead-lettered, then checks the entries, the totals and every snapshot. */
  async settle(timeoutMs: number): Promise<ClusterOutcome> {
    const started = performance.now();
    let m = await this.measure();
    while (performance.now() - started < timeoutMs && !settled(m)) {
      await sleep(100);
      m = await this.measure();
    }
    const settleMs = Math.round(performance.now() - started);
    let undecodable = 0;
    const lost: string[] = [];
    for (const stream of Object.values(this.streams)) {
      const inStream = new Set<string>();
      for await (const page of this.eventStore.readPages(stream, { pageSize: 1_000 })) {
        for (const entry of page) inStream.add(entry.id);
        undecodable += page.filter(
          (e) => this.eventStore.codec.tryDecode(stream, e.id, e.fields) instanceof EventStoreError,
        ).length;
      }
      for (const id of this.confirmedIds.get(stream) ?? []) if (!inStream.has(id)) lost.push(`${stream} ${id}`);
    }
    const expected = await referenceFold(this.eventStore, this.streams);
    return {
      ...m,
      confirmed: this.confirmed,
      unconfirmed: this.unconfirmed,
      lost,
      undecodable,
      differences: await this.snapshotDifferences(expected),
      strays: await this.strays(expected),
      users: expected.size,
      settleMs,
    };
  }

  /** The snapshots against the fold, read one key at a time (the Cluster client sends each to its node). */
  private async snapshotDifferences(expected: Map<string, ProfileState>): Promise<string[]> {
    const ids = [...expected.keys()];
    const actual = await Promise.all(ids.map((id) => this.snapshots.read(id)));
    const differences: string[] = [];
    ids.forEach((id, i) => {
      const got = actual[i];
      const normalised = got
        ? {
            exists: got.exists,
            fields: got.fields,
            friends: got.sets['friends'] ?? [],
            likedPages: got.sets['likedPages'] ?? [],
            activity: got.counters,
          }
        : { exists: false, fields: {}, friends: [], likedPages: [], activity: {} };
      const want = JSON.stringify(sortKeys(expected.get(id)));
      const have = JSON.stringify(sortKeys(normalised));
      if (want !== have) differences.push(`user ${id}: want ${want} got ${have}`);
    });
    return differences;
  }

  /** Snapshot hashes of this scenario on any master for a user the fold does not know (SCAN per master). */
  private async strays(expected: Map<string, ProfileState>): Promise<string[]> {
    const found: string[] = [];
    for (const node of (this.redis as unknown as Cluster).nodes('master')) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${this.keyPrefix}*`, 'COUNT', 1_000);
        cursor = next;
        for (const key of keys) if (!expected.has(key.slice(this.keyPrefix.length))) found.push(key);
      } while (cursor !== '0');
    }
    return found;
  }

  describe(name: string, o: ClusterOutcome): string {
    const errors = [...this.appendErrors].map(([k, n]) => `${k} ${n}`).join(', ');
    return (
      `[${name}] appended ${o.inStreams} (confirmed ${o.confirmed}, unconfirmed ${o.unconfirmed}${errors ? `: ${errors}` : ''}, lost ${o.lost.length}), ` +
      `applied ${o.applied}, dead-lettered ${o.deadLettered} (poison ${o.undecodable}), duplicates skipped ${o.skipped}, ` +
      `pending ${o.pending}, unapplied ${o.unapplied}, users ${o.users}, snapshot differences ${o.differences.length}, strays ${o.strays.length}, settled in ${o.settleMs} ms`
    );
  }

  /**
   * The guarantee: every confirmed XADD is in its stream; every entry in the streams is applied or
   * (poison) dead-lettered exactly once (the totals hashes against the streams); nothing is left
   * after its partition's cursor in the source stream, nor pending in the group; every snapshot
   * equals the reference fold.
   */
  expectExactlyOnce(name: string, o: ClusterOutcome): void {
    const line = this.describe(name, o);
    console.log(line);
    const context = `${line}\n${o.lost.slice(0, 5).join('\n')}\n${o.differences.slice(0, 5).join('\n')}\n${o.strays.slice(0, 5).join('\n')}\n${this.logs()}`;
    expect(o.inStreams, context).toBeGreaterThan(0);
    expect(o.lost, context).toEqual([]);
    // Entries beyond the confirmed ones can only be XADDs whose reply was lost.
    expect(o.inStreams - o.confirmed, context).toBeGreaterThanOrEqual(0);
    expect(o.inStreams - o.confirmed, context).toBeLessThanOrEqual(o.unconfirmed);
    expect(o.applied + o.deadLettered, context).toBe(o.inStreams);
    expect(o.deadLettered, context).toBe(o.undecodable);
    expect(o.deadLetterEntries, context).toBe(o.undecodable);
    expect(o.pending, context).toBe(0);
    expect(o.unapplied, context).toBe(0);
    expect(o.differences, context).toEqual([]);
    expect(o.strays, context).toEqual([]);
  }
}

function poison(streams: ProfileStreams, i: number, kind: number, users: number): RawCommand {
  if (kind === 0) return [streams.updates, 'user_id', String(1 + (i % users)), 'no_command_here', 'x'];
  if (kind === 1)
    return [streams.friends, 'user_id', String(1 + (i % users)), 'command', 'add', 'friend_id', 'not a valid id!'];
  return [streams.activity, 'specversion', '1.0', 'type', 'like', 'data', '{"userId": broken json'];
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => [k, sortKeys(v)]),
    );
  }
  return value;
}
