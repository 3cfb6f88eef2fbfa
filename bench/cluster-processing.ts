/**
 * Scenario 8, processing on a Redis Cluster: the profile backlog over the three profile streams,
 * folded into snapshots by 1, 2 and 4 partitioned processors (each a child process, connected as
 * the app connects to a cluster) on a 3-master cluster the bench starts itself.
 *
 * What it answers: does the work spread over the masters (the issue's goal: each master's share of
 * redis-server CPU within 25 % of the mean), what does each component cost per event (each
 * processor process, each master, CPU from /proc), and what would N processors on N masters reach
 * with a core each (a scaling model from those costs). The machine has 2 cores: the processors and
 * the three masters share them, so the rates measured here are bounded by the machine, not by the
 * design; the projection is what the costs allow.
 *
 * Layout. All of a stream's keys (the stream, its partition streams, cursors, totals, fencing
 * epochs, dead letters) carry the stream's hash tag: one slot, one master. The default even split
 * of the slots puts user_updates (slot 1537) and user_activity (2671) on the same master, so the
 * bench first measures once as created ("default layout"), then moves slots so the three streams
 * are on three masters ("spread layout"), says so, and measures 1, 2, 4 processors. Snapshots
 * (one hash per user) spread over every master by their key.
 *
 * Each run: the run's processors start on the (empty) streams, share the partitions out, then the
 * backlog appears at once (a copy in each stream's own slot, `{user_updates}:bench:stage`, its group
 * created at 0, RENAMEd over the stream: three RENAMEs sent together), timed until the totals say
 * every entry is applied; then every snapshot is checked against the reference fold (read per slot).
 */
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { RedisEventStore } from '@redsource/event-store';
import { partitionKeys, processorKeys, processorSettingsSchema, type StreamStats } from '@redsource/processor';
import { keySlot, SnapshotStore } from '@redsource/snapshot-store';
import { DEFAULT_STREAMS, profileCatalog, type ProfileStreams } from '../apps/profile-api/src/domain/events.ts';
import type { ProfileState } from '../apps/profile-api/src/domain/fold.ts';
import { referenceFold, snapshotDifferences } from '../test/support/model.ts';
import { commandChunks, streamList, throwFirstError } from './support/backlog.ts';
import { Worker } from './support/children.ts';
import { ownershipSettled } from './support/ownership.ts';
import { startBenchCluster, type BenchCluster, type ClusterMaster } from './support/cluster-redis.ts';
import { type Benchmark, type BenchContext, type BenchResult } from './support/context.ts';
import { CpuWindow, MachineWindow } from './support/proc-cpu.ts';
import { commandStats } from './support/redis-stats.ts';
import { fmt, type Row } from './support/table.ts';
import type { BenchSize } from './config.ts';

const SECTION = 8;

interface ClusterBenchConfig {
  readonly events: number;
  readonly users: number;
  /** Spread-layout runs, in this order; a number given twice is reported over both. */
  readonly instances: readonly number[];
  /** Processors of the one default-layout run (0: none). */
  readonly defaultLayout: number;
  /** Idle window measured on the masters before any run (cluster bus, cron), seconds; 0: none. */
  readonly idleSeconds: number;
}

/** Smoke (CI): one small run on the spread layout only, so a broken cluster path fails CI within ~10 s. */
const SIZES: Record<BenchSize, ClusterBenchConfig> = {
  full: { events: 200_000, users: 10_000, instances: [1, 2, 4, 4, 2, 1], defaultLayout: 4, idleSeconds: 2 },
  smoke: { events: 5_000, users: 500, instances: [1], defaultLayout: 0, idleSeconds: 0 },
};

const STREAMS: ProfileStreams = DEFAULT_STREAMS;
const STREAM_NAMES = streamList(STREAMS);
/** The backlog, loaded once per stream in the stream's own slot; each run copies it. */
const backlogKey = (stream: string) => `{${stream}}:bench:backlog`;
const stageKey = (stream: string) => `{${stream}}:bench:stage`;
const PROCESSOR_SETTINGS = { heartbeatMs: 250 } as const;
const PARTITIONS: number = processorSettingsSchema.shape.partitions.parse(undefined);
const TIMEOUT_MS = 600_000;
const POLL_MS = 10;

/** What the backlog holds: events per stream, and per user (each event changes its user's snapshot only). */
interface Backlog {
  readonly total: number;
  readonly perStream: ReadonlyMap<string, number>;
  readonly perUser: ReadonlyMap<string, number>;
}

interface Layout {
  readonly name: 'default' | 'spread';
  /** Index in the masters of each stream's master. */
  readonly streamMaster: ReadonlyMap<string, number>;
  /** What was moved to get here. */
  readonly moves: readonly string[];
}

interface ClusterRun {
  readonly n: number;
  readonly tag: string;
  readonly layout: Layout;
  readonly group: string;
  readonly groupMaster: number;
  readonly keyPrefix: string;
  readonly projection: string;
  readonly consumers: readonly string[];
  readonly workers: Worker[];
}

interface Published {
  applied: number;
  skipped: number;
  deadLettered: number;
  batches: number;
  blocked: number | undefined;
  claimed: number;
  consumers: number;
}

interface ClusterResult {
  readonly n: number;
  readonly layout: Layout;
  readonly groupMaster: number;
  readonly entries: number;
  readonly seconds: number;
  readonly rate: number;
  /** CPU µs per event (over the timed window, /proc utime+stime) of each processor process and each master. */
  readonly processorMicros: readonly number[];
  readonly masterMicros: readonly number[];
  readonly benchMicros: number;
  /** Share of one core over the window. */
  readonly processorCores: readonly number[];
  readonly masterCores: readonly number[];
  readonly machineBusyCores: number;
  readonly othersCores: number;
  readonly stealCores: number;
  /** Fraction of the events whose snapshot is on each master (from the keys' slots). */
  readonly snapshotShare: readonly number[];
  /** Script calls (evalsha) on each master over the window, and their µs each. */
  readonly scripts: readonly { calls: number; usecEach: number }[];
  readonly top: readonly string[];
  readonly published: Published;
  readonly peakRssMiB: readonly number[];
  readonly loadAtStart: number;
  readonly checked: number;
}

export const clusterProcessing: Benchmark = async (ctx) => {
  const cfg = SIZES[ctx.config.size];
  ctx.log(`cluster: starting a 3-master Redis Cluster (redis-server from PATH, no persistence)`);
  const bench = await startBenchCluster();
  const runs: ClusterRun[] = [];
  try {
    ctx.log(
      `cluster: masters ${bench.masters.map((m) => `${m.name} port ${m.port} pid ${m.pid}`).join(', ')}; seeds ${bench.seeds}`,
    );
    const redis = bench.client('bench:cluster');
    const backlog = await loadBacklog(redis, cfg.events, cfg.users, 3);
    ctx.log(
      `cluster: backlog of ${backlog.total} events over ${cfg.users} users loaded (${STREAM_NAMES.map((s) => `${s} ${backlog.perStream.get(s)}`).join(', ')})`,
    );
    const expected = await foldOfBacklog(redis);

    const idle = cfg.idleSeconds > 0 ? await idleCost(bench, cfg.idleSeconds) : undefined;
    const initial = await layoutOf(bench, 'default', []);
    ctx.log(`cluster: default layout: ${describeLayout(bench, initial)}`);
    const results: ClusterResult[] = [];
    let defaultRun: ClusterResult | undefined;
    if (cfg.defaultLayout > 0) {
      const run = await spawnRun(bench, 'cdef', cfg.defaultLayout, initial);
      runs.push(run);
      defaultRun = await timeRun(ctx, bench, redis, run, backlog, expected);
    }
    const spread = await spreadStreams(bench, redis);
    ctx.log(
      `cluster: ${spread.moves.length > 0 ? spread.moves.join('; ') : 'the streams were already on three masters'}; spread layout: ${describeLayout(bench, spread)}`,
    );
    for (const [i, n] of cfg.instances.entries()) {
      const run = await spawnRun(bench, `c${i}n${n}`, n, spread);
      runs.push(run);
      results.push(await timeRun(ctx, bench, redis, run, backlog, expected));
    }
    return report(ctx.config.size, bench, backlog, combineByN(results), defaultRun, initial, spread, idle);
  } finally {
    await Promise.all(runs.flatMap((r) => r.workers).map((w) => w.stop()));
    await bench.stop();
    ctx.log('cluster: every node stopped (by pid)');
  }
};

/** The backlog into `{<stream>}:bench:backlog`: one pipeline per stream (one slot each), in order. */
async function loadBacklog(redis: Redis, count: number, users: number, seed: number): Promise<Backlog> {
  const perStream = new Map<string, number>(STREAM_NAMES.map((s) => [s, 0]));
  const perUser = new Map<string, number>();
  const nameOf: Record<string, string> = { U: STREAMS.updates, A: STREAMS.activity, F: STREAMS.friends };
  await Promise.all(STREAM_NAMES.map((s) => redis.del(backlogKey(s), stageKey(s), s)));
  for (const commands of commandChunks(count, users, seed)) {
    const byStream = new Map<string, string[][]>();
    for (const [placeholder, ...fields] of commands) {
      const stream = nameOf[placeholder] as string;
      byStream.set(stream, [...(byStream.get(stream) ?? []), fields]);
      perStream.set(stream, (perStream.get(stream) ?? 0) + 1);
      const user = fields[1] as string; // 'user_id', <id>, ...
      perUser.set(user, (perUser.get(user) ?? 0) + 1);
    }
    await Promise.all(
      [...byStream].map(async ([stream, entries]) => {
        for (let i = 0; i < entries.length; i += 1_000) {
          const pipeline = redis.pipeline();
          for (const fields of entries.slice(i, i + 1_000)) pipeline.xadd(backlogKey(stream), '*', ...fields);
          throwFirstError(await pipeline.exec());
        }
      }),
    );
  }
  return { total: count, perStream, perUser };
}

/**
 * The pure fold of the backlog, per user. Read through the stream names the handlers know: the
 * backlog is copied onto them (same ids), folded, and the copies deleted.
 */
async function foldOfBacklog(redis: Redis): Promise<Map<string, ProfileState>> {
  for (const s of STREAM_NAMES) await redis.call('COPY', backlogKey(s), s, 'REPLACE');
  const eventStore = new RedisEventStore({ redis, catalog: profileCatalog(STREAMS) });
  const expected = await referenceFold(eventStore, STREAMS);
  await Promise.all(STREAM_NAMES.map((s) => redis.del(s)));
  return expected;
}

/** Each master's CPU over an idle window (cluster bus, cron, nothing else): the floor under every figure. */
async function idleCost(bench: BenchCluster, seconds: number): Promise<number[]> {
  const cpu = new CpuWindow(bench.masters.map((m) => m.pid));
  const started = performance.now();
  await sleep(seconds * 1000);
  const wall = (performance.now() - started) / 1000;
  return cpu.used().map((us) => us / 1e6 / wall);
}

async function layoutOf(bench: BenchCluster, name: Layout['name'], moves: readonly string[]): Promise<Layout> {
  const streamMaster = new Map<string, number>();
  for (const s of STREAM_NAMES) streamMaster.set(s, bench.masters.indexOf(await bench.masterOf(s)));
  return { name, streamMaster, moves };
}

function describeLayout(bench: BenchCluster, layout: Layout): string {
  return STREAM_NAMES.map(
    (s) => `${s} (slot ${keySlot(s)}) on ${bench.masters[layout.streamMaster.get(s) ?? -1]?.name ?? '?'}`,
  ).join(', ');
}

/**
 * Every stream on a master of its own: a stream sharing its master with an earlier one moves (its
 * slot, with the backlog copy in it) to a master holding no stream. Left-over keys of earlier runs
 * in that slot are deleted first, so only the backlog travels.
 */
async function spreadStreams(bench: BenchCluster, redis: Redis): Promise<Layout> {
  const moves: string[] = [];
  const taken = new Set<number>();
  for (const stream of STREAM_NAMES) {
    const at = bench.masters.indexOf(await bench.masterOf(stream));
    if (!taken.has(at)) {
      taken.add(at);
      continue;
    }
    const holding = new Set<number>();
    for (const s of STREAM_NAMES) holding.add(bench.masters.indexOf(await bench.masterOf(s)));
    const to = bench.masters.findIndex((_, i) => !holding.has(i) && !taken.has(i));
    if (to < 0) throw new Error('cluster: no master free for a stream');
    const slot = keySlot(stream);
    await redis.del(stream, stageKey(stream));
    const started = performance.now();
    await bench.moveSlot(slot, bench.masters[to] as ClusterMaster);
    taken.add(to);
    moves.push(
      `moved slot ${slot} (${stream}) from master ${bench.masters[at]?.name} to ${bench.masters[to]?.name} with CLUSTER SETSLOT/MIGRATE in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
  }
  return layoutOf(bench, 'spread', moves);
}

/**
 * A group name whose keys (members, leases, fencing counters, heartbeats, stats: a few commands a
 * second) live on the master of user_updates, so that in the default layout the master without a
 * stream holds snapshots only: its CPU is then the cost of the snapshot writes alone.
 */
async function groupOn(bench: BenchCluster, base: string, master: number): Promise<string> {
  const owners = await bench.slotOwners();
  for (let i = 0; i < 10_000; i++) {
    const name = i === 0 ? base : `${base}_${i}`;
    if (owners[keySlot(partitionKeys.members(name))] === master) return name;
  }
  throw new Error(`no group name on master ${master}`);
}

async function spawnRun(bench: BenchCluster, tag: string, n: number, layout: Layout): Promise<ClusterRun> {
  const groupMaster = layout.streamMaster.get(STREAMS.updates) ?? 0;
  const group = await groupOn(bench, `group_${tag}`, groupMaster);
  const keyPrefix = `snap_${tag}_`;
  const projection = `bench_${tag}`;
  const consumers = Array.from({ length: n }, (_, i) => `${tag}-${i}`);
  const workers = consumers.map(
    (consumer) =>
      new Worker(`cluster processor ${consumer}`, '../support/partitioned-processor.ts', [
        bench.seeds,
        JSON.stringify(STREAMS),
        keyPrefix,
        projection,
        group,
        consumer,
        JSON.stringify(PROCESSOR_SETTINGS),
      ]),
  );
  return { n, tag, layout, group, groupMaster, keyPrefix, projection, consumers, workers };
}

async function publishedStats(redis: Redis, run: ClusterRun): Promise<Published> {
  const hash = await redis.hgetall(processorKeys.consumerStats(run.group));
  const sum: Published = { applied: 0, skipped: 0, deadLettered: 0, batches: 0, blocked: 0, claimed: 0, consumers: 0 };
  for (const consumer of run.consumers) {
    const json = hash[consumer];
    if (json === undefined) continue;
    sum.consumers++;
    for (const [stream, st] of Object.entries(JSON.parse(json) as Record<string, Partial<StreamStats>>)) {
      if (!STREAM_NAMES.includes(stream)) continue;
      sum.applied += st.applied ?? 0;
      sum.skipped += st.skipped ?? 0;
      sum.deadLettered += st.deadLettered ?? 0;
      sum.batches += st.batches ?? 0;
      sum.blocked = st.blocked === undefined || sum.blocked === undefined ? undefined : sum.blocked + st.blocked;
      sum.claimed += st.claimed ?? 0;
    }
  }
  return sum;
}

/** Fraction of the events whose snapshot key is on each master, from the keys' slots and the backlog's events per user. */
async function snapshotShares(
  bench: BenchCluster,
  redis: Redis,
  keyPrefix: string,
  backlog: Backlog,
): Promise<number[]> {
  const owners = await bench.slotOwners();
  const store = new SnapshotStore({ redis, keyPrefix, projection: 'shares' });
  const shares = bench.masters.map(() => 0);
  for (const [user, events] of backlog.perUser) {
    const master = owners[keySlot(store.key(user))] ?? -1;
    if (master >= 0) shares[master] = (shares[master] ?? 0) + events / backlog.total;
  }
  return shares;
}

/** Every user's snapshot against the reference fold: SnapshotStore.readMany reads one pipeline per slot on a cluster. */
async function checkSnapshots(redis: Redis, run: ClusterRun, expected: Map<string, ProfileState>): Promise<number> {
  const snapshots = new SnapshotStore({ redis, keyPrefix: run.keyPrefix, projection: run.projection });
  const ids = [...expected.keys()];
  for (let i = 0; i < ids.length; i += 2_000) {
    const part = new Map(ids.slice(i, i + 2_000).map((id) => [id, expected.get(id) as ProfileState]));
    const differences = await snapshotDifferences(snapshots, part);
    if (differences.length > 0)
      throw new Error(
        `cluster ${run.tag}: snapshots differ from the reference fold:\n${differences.slice(0, 5).join('\n')}`,
      );
  }
  return ids.length;
}

async function timeRun(
  ctx: BenchContext,
  bench: BenchCluster,
  redis: Redis,
  run: ClusterRun,
  backlog: Backlog,
  expected: Map<string, ProfileState>,
): Promise<ClusterResult> {
  const { n, workers } = run;
  const label = `${n} processor${n > 1 ? 's' : ''}, ${run.layout.name} layout`;
  // The previous run's copy goes: these processors start on empty streams and create their group there.
  await Promise.all(STREAM_NAMES.map((s) => redis.del(s, stageKey(s))));
  await Promise.all(workers.map((w) => w.ready));
  const modes = await Promise.all(workers.map((w) => w.waitFor<{ type: 'mode'; mode: string }>('mode', 10_000)));
  if (modes.some((m) => m.mode !== 'cluster'))
    throw new Error(
      `cluster ${run.tag}: a processor did not detect the cluster (${modes.map((m) => m.mode).join(', ')})`,
    );
  for (const w of workers) w.send({ type: 'go' });
  await Promise.all(workers.map((w) => w.waitFor('started', 60_000)));
  const began = performance.now();
  while (!(await ownershipSettled(redis, run.group, run.consumers, STREAM_NAMES, PARTITIONS))) {
    if (performance.now() - began > 60_000)
      throw new Error(`cluster ${run.tag}: the partitions were not shared out within 60 s`);
    await sleep(50);
  }
  for (const s of STREAM_NAMES) {
    await redis.call('COPY', backlogKey(s), stageKey(s), 'REPLACE');
    await redis.xgroup('CREATE', stageKey(s), run.group, '0');
  }
  const snapshotShare = await snapshotShares(bench, redis, run.keyPrefix, backlog);
  const nodes = bench.masters.map((m) => bench.node(m.port));
  await Promise.all(nodes.map((node) => node.config('RESETSTAT')));
  ctx.log(`cluster: ${label}, partitions shared out; the backlog appears now`);
  const snapshots = new SnapshotStore({ redis, keyPrefix: run.keyPrefix, projection: run.projection });
  const loadAtStart = os.loadavg()[0] ?? Number.NaN;
  const cpu = new CpuWindow([...workers.map((w) => w.child.pid), process.pid, ...bench.masters.map((m) => m.pid)]);
  const machine = new MachineWindow();
  const started = performance.now();
  // Three RENAMEs on up to three masters, sent together: the backlog appears on every stream at once.
  await Promise.all(STREAM_NAMES.map((s) => redis.rename(stageKey(s), s)));
  const total = backlog.total;
  let handled = 0;
  while (handled < total) {
    const totals = await Promise.all(STREAM_NAMES.map((s) => snapshots.totals(s)));
    handled = totals.reduce((sum, t) => sum + t.applied + t.deadLettered, 0);
    const gone = workers.find((w) => w.child.exitCode !== null);
    if (gone) await gone.waitFor('never', 1_000); // rejects with the worker's output
    if (performance.now() - started > TIMEOUT_MS)
      throw new Error(`cluster ${run.tag}: ${handled}/${total} after ${TIMEOUT_MS} ms`);
    if (handled < total) await sleep(POLL_MS);
  }
  const seconds = (performance.now() - started) / 1000;
  const used = cpu.used();
  const machineCores = machine.cores();
  const processorUs = used.slice(0, n);
  const benchUs = used[n] ?? Number.NaN;
  const masterUs = used.slice(n + 1);
  const stats = await Promise.all(nodes.map((node) => commandStats(node)));
  let published = await publishedStats(redis, run);
  for (
    const deadline = performance.now() + 10_000;
    published.applied + published.skipped + published.deadLettered < total && performance.now() < deadline;
  ) {
    await sleep(50);
    published = await publishedStats(redis, run);
  }
  if (published.consumers !== n)
    throw new Error(`cluster ${run.tag}: ${published.consumers} of ${n} processors published their counters`);
  for (const w of workers) w.send({ type: 'stop' });
  const stopped = await Promise.all(
    workers.map((w) => w.waitFor<{ type: 'stopped'; peakRssMiB: number }>('stopped', 60_000)),
  );
  await Promise.all(workers.map((w) => w.stop()));
  const checked = await checkSnapshots(redis, run, expected);
  const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
  const result: ClusterResult = {
    n,
    layout: run.layout,
    groupMaster: run.groupMaster,
    entries: total,
    seconds,
    rate: total / seconds,
    processorMicros: processorUs.map((us) => us / total),
    masterMicros: masterUs.map((us) => us / total),
    benchMicros: benchUs / total,
    processorCores: processorUs.map((us) => us / 1e6 / seconds),
    masterCores: masterUs.map((us) => us / 1e6 / seconds),
    machineBusyCores: machineCores.busy,
    othersCores: Math.max(0, machineCores.busy - (sum(processorUs) + sum(masterUs) + benchUs) / 1e6 / seconds),
    stealCores: machineCores.steal,
    snapshotShare,
    scripts: stats.map((s) => {
      const evalsha = s.get('evalsha') ?? { calls: 0, usec: 0 };
      return { calls: evalsha.calls, usecEach: evalsha.calls > 0 ? evalsha.usec / evalsha.calls : 0 };
    }),
    top: stats.map((s) =>
      [...s]
        .filter(
          ([name]) =>
            !['info', 'config', 'config|resetstat', 'cluster|nodes', 'cluster|info', 'cluster|slots', 'ping'].includes(
              name,
            ),
        )
        .sort((a, b) => b[1].usec - a[1].usec)
        .slice(0, 3)
        .map(([name, st]) => `${name} ${((st.usec / 1e6 / seconds) * 100).toFixed(0)}% (${st.calls} calls)`)
        .join(', '),
    ),
    published,
    peakRssMiB: stopped.map((s) => s.peakRssMiB),
    loadAtStart,
    checked,
  };
  ctx.log(
    `cluster: ${label}: ${fmt.rate(result.rate)} (${seconds.toFixed(2)} s); masters ${shares(result)
      .map((s, i) => `${bench.masters[i]?.name} ${(s * 100).toFixed(0)}%`)
      .join(' / ')} of redis-server CPU; ${checked} snapshots equal to the reference fold`,
  );
  return result;
}

/** Each master's share of the redis-server CPU (all masters together = 1). */
function shares(r: Pick<ClusterResult, 'masterMicros'>): number[] {
  const total = r.masterMicros.reduce((a, b) => a + b, 0);
  return r.masterMicros.map((m) => m / total);
}

/** The issue's goal: each master's CPU within 25 % of the masters' mean. */
function spreadGoal(r: Pick<ClusterResult, 'masterMicros'>): { met: boolean; worst: number } {
  const mean = r.masterMicros.reduce((a, b) => a + b, 0) / r.masterMicros.length;
  const worst = Math.max(...r.masterMicros.map((m) => Math.abs(m - mean) / mean));
  return { met: worst <= 0.25, worst };
}

type Combined = ClusterResult & { runs: number[] };

/** Runs of the same number of processors as one (a number given twice in `instances`). */
function combineByN(results: readonly ClusterResult[]): Combined[] {
  const byN = new Map<number, ClusterResult[]>();
  for (const r of results) byN.set(r.n, [...(byN.get(r.n) ?? []), r]);
  return [...byN.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([, rs]) => {
      const first = rs[0] as ClusterResult;
      if (rs.length === 1) return { ...first, runs: [first.rate] };
      const entries = rs.reduce((t, r) => t + r.entries, 0);
      const seconds = rs.reduce((t, r) => t + r.seconds, 0);
      const perEvent = (f: (r: ClusterResult) => readonly number[]) =>
        f(first).map((_, i) => rs.reduce((t, r) => t + (f(r)[i] ?? 0) * r.entries, 0) / entries);
      const perSecond = (f: (r: ClusterResult) => readonly number[]) =>
        f(first).map((_, i) => rs.reduce((t, r) => t + (f(r)[i] ?? 0) * r.seconds, 0) / seconds);
      return {
        ...first,
        entries,
        seconds,
        rate: entries / seconds,
        processorMicros: perEvent((r) => r.processorMicros),
        masterMicros: perEvent((r) => r.masterMicros),
        processorCores: perSecond((r) => r.processorCores),
        masterCores: perSecond((r) => r.masterCores),
        runs: rs.map((r) => r.rate),
      };
    });
}

/**
 * The scaling model. Redis' work per event has two parts: the stream's (its reads by every
 * processor, check-batch, cursors, totals: all in the stream's slot, so on one master per stream)
 * and the snapshots' (apply-snapshots calls, spread over every master by the users' keys).
 *
 * - Snapshot part per event, W: the default layout leaves one master with no stream and no group
 *   keys; its CPU per event ÷ its share of the snapshot writes is W (measured at that run's N), and
 *   its fraction φ of that run's total Redis CPU per event is carried to the other runs.
 * - Stream part of each stream, S_s: in the spread layout each master holds one stream, so
 *   S_s = (master's µs per event) − (its share of the snapshot writes) × W.
 * - N processors on M masters, a core each: the streams placed on min(M, 3) masters (largest first,
 *   on the least loaded), the snapshots evenly over all M; each master is capped at one core:
 *   rate ≤ 10⁶ / max over masters of (its S + W/M); the processors at N·10⁶ / p (p: their µs per
 *   event at that N; beyond the largest N measured, the largest N's). Projected = the smaller.
 *   As M grows the snapshot part vanishes and the busiest stream's S remains: 10⁶ / max S_s.
 */
interface Model {
  readonly w: number;
  readonly phi: number;
  readonly freeMaster: number;
  readonly freeShare: number;
}

function snapshotModel(def: ClusterResult | undefined): Model | undefined {
  if (!def) return undefined;
  const holding = new Set([...def.layout.streamMaster.values(), def.groupMaster]);
  const free = def.masterMicros.map((_, i) => i).filter((i) => !holding.has(i));
  const freeMaster = free[0];
  if (freeMaster === undefined) return undefined;
  const freeShare = def.snapshotShare[freeMaster] ?? Number.NaN;
  const w = (def.masterMicros[freeMaster] ?? Number.NaN) / freeShare;
  const total = def.masterMicros.reduce((a, b) => a + b, 0);
  return { w, phi: w / total, freeMaster, freeShare };
}

interface Projection {
  readonly n: number;
  readonly masters: number;
  readonly rate: number;
  readonly processorsCap: number;
  readonly redisCap: number;
  readonly busiest: number;
  /** The masters' loads furthest from their mean, relative (the issue's goal: ≤ 25 %). */
  readonly worstSpread: number;
}

function streamCosts(r: ClusterResult, model: Model): { stream: string; s: number }[] {
  const total = r.masterMicros.reduce((a, b) => a + b, 0);
  const w = model.phi * total;
  return STREAM_NAMES.map((stream) => {
    const m = r.layout.streamMaster.get(stream) ?? 0;
    return { stream, s: Math.max(0, (r.masterMicros[m] ?? 0) - (r.snapshotShare[m] ?? 0) * w) };
  });
}

function project(r: ClusterResult, model: Model, n: number, masters: number): Projection {
  const total = r.masterMicros.reduce((a, b) => a + b, 0);
  const w = model.phi * total;
  const loads = Array.from({ length: masters }, () => w / masters);
  const placed = Array.from({ length: masters }, () => 0);
  for (const { s } of streamCosts(r, model).sort((a, b) => b.s - a.s)) {
    // The least loaded master holding the fewest streams (with 3+ masters: each stream on its own).
    let best = 0;
    for (let i = 1; i < Math.min(masters, 3); i++)
      if (
        (placed[i] ?? 0) < (placed[best] ?? 0) ||
        ((placed[i] ?? 0) === (placed[best] ?? 0) && (loads[i] ?? 0) < (loads[best] ?? 0))
      )
        best = i;
    loads[best] = (loads[best] ?? 0) + s;
    placed[best] = (placed[best] ?? 0) + 1;
  }
  const busiest = Math.max(...loads);
  const mean = loads.reduce((a, b) => a + b, 0) / masters;
  const p = r.processorMicros.reduce((a, b) => a + b, 0);
  const processorsCap = (n * 1e6) / p;
  const redisCap = 1e6 / busiest;
  return {
    n,
    masters,
    rate: Math.min(processorsCap, redisCap),
    processorsCap,
    redisCap,
    busiest,
    worstSpread: Math.max(...loads.map((l) => Math.abs(l - mean) / mean)),
  };
}

const runsOf = (r: ClusterResult): readonly number[] => ('runs' in r ? (r as Combined).runs : [r.rate]);
const micros = (us: number) => `${us.toFixed(1)} µs`;
const pct = (x: number) => `${(x * 100).toFixed(0)}%`;

function report(
  size: BenchSize,
  bench: BenchCluster,
  backlog: Backlog,
  spread: readonly Combined[],
  def: ClusterResult | undefined,
  initial: Layout,
  spreadLayout: Layout,
  idle: number[] | undefined,
): BenchResult {
  const names = bench.masters.map((m) => m.name);
  const events = fmt.count(backlog.total);
  const rows: Row[] = [];
  const one = spread.find((r) => r.n === 1);
  const where = (layout: Layout) =>
    STREAM_NAMES.map((s) => `${s.replace('user_', '')}→${names[layout.streamMaster.get(s) ?? -1] ?? '?'}`).join(' ');
  rows.push({
    n: SECTION,
    figure: `Redis Cluster, 3 masters (${names.join(', ')}): stream slots placed on three masters before measuring`,
    redsource: where(spreadLayout),
    baseline: `as created: ${where(initial)}`,
    ratio: '',
    goal: '',
    met: undefined,
    verdict:
      spreadLayout.moves.length > 0
        ? spreadLayout.moves.map((m) => m.replace(/ with CLUSTER.*$/, '')).join('; ')
        : 'nothing to move',
  });
  for (const r of spread) {
    const runs = r.runs.length > 1 ? ` (${r.runs.length} runs)` : '';
    rows.push({
      n: SECTION,
      figure: `processing ${events} events on the cluster, ${r.n} processor${r.n > 1 ? 's' : ''} (${r.n > 1 ? 'separate processes' : 'one process'}), streams on 3 masters${runs}`,
      redsource: fmt.rate(r.rate),
      baseline: one && r !== one ? `1 processor: ${fmt.rate(one.rate)}` : '',
      ratio: one && r !== one ? `${r.n}/1: ${fmt.ratio(r.rate / one.rate)}` : '',
      goal: '',
      met: undefined,
      verdict: '',
    });
  }
  const sameN = def ? spread.find((r) => r.n === def.n) : undefined;
  if (def) {
    rows.push({
      n: SECTION,
      figure: `same, ${def.n} processors, default layout (${where(def.layout)}): once`,
      redsource: fmt.rate(def.rate),
      baseline: sameN ? `streams on 3 masters: ${fmt.rate(sameN.rate)}` : '',
      ratio: sameN ? fmt.ratio(def.rate / sameN.rate) : '',
      goal: '',
      met: undefined,
      verdict: '',
    });
  }
  for (const r of [...spread, ...(def ? [def] : [])]) {
    const goal = spreadGoal(r);
    rows.push({
      n: SECTION,
      figure: `share of redis-server CPU per master, ${r.n} processor${r.n > 1 ? 's' : ''}, ${r.layout.name} layout`,
      redsource: shares(r)
        .map((s, i) => `${names[i]} ${pct(s)}`)
        .join(' / '),
      baseline: `snapshot writes: ${r.snapshotShare.map((s, i) => `${names[i]} ${pct(s)}`).join(' / ')}`,
      ratio: '',
      goal:
        size === 'smoke'
          ? 'not judged at smoke size (a window of a few 10 ms clock ticks)'
          : 'each master within 25% of the mean',
      met: size === 'smoke' ? undefined : goal.met,
      verdict: `furthest ${pct(goal.worst)} from the mean`,
    });
  }
  for (const r of [...spread, ...(def ? [def] : [])]) {
    const p = r.processorMicros.reduce((a, b) => a + b, 0);
    const m = r.masterMicros.reduce((a, b) => a + b, 0);
    rows.push({
      n: SECTION,
      figure: `CPU per event, ${r.n} processor${r.n > 1 ? 's' : ''}, ${r.layout.name} layout: each processor process; each master`,
      redsource: `${r.processorMicros.map(micros).join(' + ')} = ${micros(p)}; ${r.masterMicros.map((x, i) => `${names[i]} ${micros(x)}`).join(', ')} = ${micros(m)}`,
      baseline: `cores busy: processors ${r.processorCores.reduce((a, b) => a + b, 0).toFixed(2)}, masters ${r.masterCores.map((c) => c.toFixed(2)).join('/')}, other work ${r.othersCores.toFixed(2)}`,
      ratio: '',
      goal: '',
      met: undefined,
      verdict: '',
    });
  }
  // Projection 1: the measured costs, each process on a core of its own, on these 3 masters.
  for (const r of [...spread, ...(def ? [def] : [])]) {
    const p = r.processorMicros.reduce((a, b) => a + b, 0);
    const busiest = Math.max(...r.masterMicros);
    rows.push({
      n: SECTION,
      figure: `projected, ${r.n} processor${r.n > 1 ? 's' : ''} on ${r.n} core${r.n > 1 ? 's' : ''} + these 3 masters on a core each (measured µs per event), ${r.layout.name} layout`,
      redsource: fmt.rate(Math.min((r.n * 1e6) / p, 1e6 / busiest)),
      baseline: `processors ${fmt.rate((r.n * 1e6) / p)}, busiest master (${names[r.masterMicros.indexOf(busiest)]}) ${fmt.rate(1e6 / busiest)}; here on ${os.availableParallelism()} cores: ${fmt.rate(r.rate)}`,
      ratio: '',
      goal: '',
      met: undefined,
      verdict: '',
    });
  }
  const model = snapshotModel(def);
  const projections: Projection[] = [];
  if (model) {
    const largest = spread[spread.length - 1];
    for (const n of [1, 2, 3, 4, 6, 8, 12]) {
      // Costs of the same N, else of the next larger N measured (more processes cost more per event), else of the largest.
      const r = spread.find((x) => x.n >= n) ?? largest;
      if (!r) continue;
      projections.push(project(r, model, n, n));
    }
    const costs = largest ? streamCosts(largest, model) : [];
    rows.push({
      n: SECTION,
      figure: `projected, N processors on N masters, a core each (model: stream part per stream + snapshot part spread over N; N not measured: costs of the next larger N measured, beyond ${largest?.n ?? '?'} of ${largest?.n ?? '?'})`,
      redsource: projections.map((p) => `${p.n}: ${fmt.rate(p.rate)}`).join(', '),
      baseline: `snapshot part ${micros(model.phi * (largest?.masterMicros.reduce((a, b) => a + b, 0) ?? Number.NaN))}/event, stream parts ${costs.map((c) => `${c.stream.replace('user_', '')} ${micros(c.s)}`).join(', ')} (${largest?.n} processors)`,
      ratio:
        projections.length > 1 && projections[0]
          ? `12/1: ${fmt.ratio((projections[projections.length - 1]?.rate ?? Number.NaN) / projections[0].rate)}`
          : '',
      goal: '',
      met: undefined,
      verdict: '',
    });
    const beyond = projections.filter((p) => p.masters >= 3);
    rows.push({
      n: SECTION,
      figure:
        "same model: masters' loads furthest from their mean, N masters (3 streams: the stream parts stay on 3 of them)",
      redsource: beyond.map((p) => `${p.masters}: ${pct(p.worstSpread)}`).join(', '),
      baseline: 'measured on 3 masters, streams spread: see the share rows',
      ratio: '',
      goal: 'each master within 25% of the mean',
      met: beyond.every((p) => p.worstSpread <= 0.25),
      verdict:
        beyond
          .filter((p) => p.worstSpread > 0.25)
          .map((p) => `${p.masters} masters: ${pct(p.worstSpread)} off`)
          .join(', ') || 'all within',
    });
  }

  const notes: string[] = [];
  notes.push(
    `cluster: 3 masters, no replicas, started by the bench (redis-server ${names.map((nm, i) => `${nm} :${bench.masters[i]?.port}`).join(', ')}), stopped by pid; processors connect as the app does (REDIS_URL = the seed list, INFO cluster → ioredis Cluster client with the app's cluster options); ` +
      `backlog ${backlog.total} events over ${[...backlog.perUser.keys()].length} users (${STREAM_NAMES.map((s) => `${s} ${backlog.perStream.get(s)}`).join(', ')}); ${PARTITIONS} partitions per stream; ` +
      `slots: ${STREAM_NAMES.map((s) => `${s} ${keySlot(s)}`).join(', ')}; ${spreadLayout.moves.length > 0 ? spreadLayout.moves.join('; ') : 'no slot moved'}; the group's keys on the master of user_updates` +
      (idle
        ? `; idle masters (cluster bus, cron) ${idle.map((c, i) => `${names[i]} ${(c * 100).toFixed(1)}%`).join(', ')} of a core`
        : ''),
  );
  for (const r of [...spread, ...(def ? [def] : [])]) {
    const cores = r.processorCores.map((c) => `${(c * 100).toFixed(0)}%`).join(' / ');
    notes.push(
      `cluster, ${r.n} processor${r.n > 1 ? 's' : ''}, ${r.layout.name} layout${
        runsOf(r).length > 1
          ? ` (${runsOf(r).length} runs: ${runsOf(r)
              .map((x) => fmt.rate(x))
              .join(' and ')})`
          : ''
      }: ${r.entries} entries in ${r.seconds.toFixed(2)} s (load average ${r.loadAtStart.toFixed(1)} at the start); ` +
        `CPU (/proc, over the timed window) of each processor process ${cores} of a core, of the masters ${r.masterCores.map((c, i) => `${names[i]} ${(c * 100).toFixed(0)}%`).join(', ')}; ` +
        `machine-wide ${r.machineBusyCores.toFixed(2)} of ${os.availableParallelism()} cores busy, ${r.othersCores.toFixed(2)} of them other work than this bench${r.stealCores >= 0.01 ? `, ${r.stealCores.toFixed(2)} stolen` : ''}; the bench process (polling the totals every ${POLL_MS} ms) ${micros(r.benchMicros)} per event; ` +
        `script calls (evalsha) per master${runsOf(r).length > 1 ? ' (first run)' : ''} ${r.scripts.map((s, i) => `${names[i]} ${s.calls} (${s.usecEach.toFixed(0)} µs each)`).join(', ')}; busiest commands${runsOf(r).length > 1 ? ' (first run)' : ''}: ${r.top.map((t, i) => `${names[i]}: ${t}`).join('; ')}; ` +
        `peak RSS ${r.peakRssMiB.map((m) => fmt.mib(m)).join(' / ')}; published counters: ${r.published.applied} applied, ${r.published.skipped} skipped, ${r.published.deadLettered} dead-lettered, ${r.published.batches > 0 ? ((r.published.applied + r.published.skipped + r.published.deadLettered) / r.published.batches).toFixed(0) : '?'} entries per apply, ` +
        `${r.published.claimed} partitions taken, ${r.published.blocked ?? '?'} apply calls blocked; snapshots of all ${r.checked} users checked against the reference fold (read per slot): equal`,
    );
  }
  if (model && def) {
    notes.push(
      `cluster scaling model: in the default layout master ${names[model.freeMaster]} holds no stream and no group key, only ${pct(model.freeShare)} of the snapshot writes: ${micros(def.masterMicros[model.freeMaster] ?? Number.NaN)} per event there → ` +
        `snapshot part W = ${micros(model.w)} per event = ${pct(model.phi)} of that run's Redis CPU (${micros(def.masterMicros.reduce((a, b) => a + b, 0))}); the rest is the streams' part, which stays on the streams' masters however many there are. ` +
        `Projections (N processors on N masters, a core each): ${projections.map((p) => `${p.n}: ${fmt.rate(p.rate)} (processors ${fmt.rate(p.processorsCap)}, busiest master ${fmt.rate(p.redisCap)}, masters' loads up to ${pct(p.worstSpread)} from their mean)`).join('; ')}; ` +
        `however many masters, the busiest stream's part alone caps the Redis side at ${fmt.rate(1e6 / Math.max(...(spread[spread.length - 1] ? streamCosts(spread[spread.length - 1] as ClusterResult, model).map((c) => c.s) : [Number.NaN])))}` +
        (size === 'smoke' ? '; smoke sizes: warm-up dominates, no figure here says anything about speed' : ''),
    );
  }
  if (size === 'smoke')
    notes.push(
      'cluster (smoke): one small run on the spread layout only: the cluster path works (processors detect the cluster, slots moved, snapshots equal to the fold); the full size measures the default layout and 1, 2, 4 processors.',
    );
  return { rows, notes };
}
