import { setTimeout as sleep } from 'node:timers/promises';
import { RedisEventStore } from '@redsource/event-store';
import type { StreamStats } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../apps/profile-api/src/domain/events.ts';
import { referenceFold, snapshotDifferences } from '../test/support/model.ts';
import { benchStreams, loadBacklog, streamList } from './support/backlog.ts';
import { Worker } from './support/children.ts';
import { cpuProfileEnv } from './support/cpu-profile.ts';
import { judge, type Benchmark, type BenchContext, type BenchResult } from './support/context.ts';
import { RedisLoad } from './support/redis-stats.ts';
import { fmt, type Row } from './support/table.ts';

interface Stopped {
  readonly type: 'stopped';
  readonly peakRssMiB: number;
  readonly cpuMs: number;
  readonly stats: Record<string, StreamStats>;
}

interface Done {
  readonly type: 'done';
  readonly entries: number;
  readonly peakRssMiB: number;
  readonly cpuMs: number;
}

export interface RunResult {
  readonly entries: number;
  readonly seconds: number;
  readonly rate: number;
  /** One per process. */
  readonly peakRssMiB: readonly number[];
  readonly cpuMs: readonly number[];
  readonly deadLettered: number;
  readonly redisLoad: string;
  /** Entries per apply-script call (redsource only). */
  readonly entriesPerBatch?: number;
}

const TIMEOUT_MS = 600_000;

async function xlenAll(ctx: BenchContext, streams: ProfileStreams): Promise<number> {
  const lengths = await Promise.all(streamList(streams).map((s) => ctx.redis.xlen(s)));
  return lengths.reduce((a, b) => a + b, 0);
}

interface RedsourceRun {
  readonly streams: ProfileStreams;
  readonly tag: string;
  readonly keyPrefix: string;
  readonly projection: string;
  readonly workers: Worker[];
}

/**
 * `instances` redsource processors (child processes) in one consumer group, on a group, projection
 * and snapshot prefix of their own. Started ahead, they load their code and wait for `go`.
 */
function spawnRedsource(ctx: BenchContext, streams: ProfileStreams, tag: string, instances: number, env: Readonly<Record<string, string>> = {}, batchSize?: number): RedsourceRun {
  const keyPrefix = `snap_${tag}_`;
  const projection = `bench_${tag}`;
  const workers = Array.from(
    { length: instances },
    (_, i) => new Worker(`processor ${tag}#${i}`, 'processor.ts', [ctx.server.url, JSON.stringify(streams), keyPrefix, projection, `group_${tag}`, `${tag}-${i}`, ...(batchSize ? [String(batchSize)] : [])], { env }),
  );
  return { streams, tag, keyPrefix, projection, workers };
}

/** Timed from `go` until SnapshotStore.totals says every entry of the three streams is applied (or dead-lettered). */
async function runRedsource(ctx: BenchContext, run: RedsourceRun): Promise<RunResult> {
  const { streams, tag, keyPrefix, projection, workers } = run;
  const total = await xlenAll(ctx, streams);
  try {
    await Promise.all(workers.map((w) => w.ready));
    const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix, projection });
    const load = new RedisLoad(ctx.redis);
    await load.start();
    const started = performance.now();
    for (const w of workers) w.send({ type: 'go' });
    let handled = 0;
    let deadLettered = 0;
    while (handled < total) {
      const totals = await Promise.all(streamList(streams).map((s) => snapshots.totals(s)));
      handled = totals.reduce((n, t) => n + t.applied + t.deadLettered, 0);
      deadLettered = totals.reduce((n, t) => n + t.deadLettered, 0);
      const gone = workers.find((w) => w.child.exitCode !== null);
      if (gone) await gone.waitFor('never', 1_000); // rejects with the worker's output
      if (performance.now() - started > TIMEOUT_MS) throw new Error(`processing ${tag}: ${handled}/${total} after ${TIMEOUT_MS} ms`);
      if (handled < total) await sleep(5);
    }
    const seconds = (performance.now() - started) / 1000;
    const redisLoad = await load.describe();
    for (const w of workers) w.send({ type: 'stop' });
    const stopped = await Promise.all(workers.map((w) => w.waitFor<Stopped>('stopped', 60_000)));
    const batches = stopped.reduce((n, s) => n + Object.values(s.stats).reduce((m, st) => m + st.batches, 0), 0);
    return {
      entries: total,
      seconds,
      rate: total / seconds,
      peakRssMiB: stopped.map((s) => s.peakRssMiB),
      cpuMs: stopped.map((s) => s.cpuMs),
      deadLettered,
      redisLoad,
      entriesPerBatch: batches > 0 ? total / batches : Number.NaN,
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}

/** A baseline worker on its own copy of the backlog and its own group. */
async function spawnBaseline(ctx: BenchContext, module: string, streams: ProfileStreams, tag: string): Promise<Worker> {
  const total = await xlenAll(ctx, streams);
  return new Worker(`baseline ${tag}`, module, [ctx.server.url, JSON.stringify(streams), `snap_${tag}_`, `group_${tag}`, String(total)]);
}

/** Timed from `go` to its `done`. */
async function runBaseline(ctx: BenchContext, worker: Worker): Promise<RunResult> {
  try {
    await worker.ready;
    const load = new RedisLoad(ctx.redis);
    await load.start();
    const started = performance.now();
    worker.send({ type: 'go' });
    const done = await worker.waitFor<Done>('done', TIMEOUT_MS);
    const seconds = (performance.now() - started) / 1000;
    return { entries: done.entries, seconds, rate: done.entries / seconds, peakRssMiB: [done.peakRssMiB], cpuMs: [done.cpuMs], deadLettered: 0, redisLoad: await load.describe() };
  } finally {
    await worker.stop();
  }
}

/** Two runs of the same work as one: total entries over total time; the runs' own rates kept for the notes. */
function pair(a: RunResult, b: RunResult): RunResult & { runs: [number, number] } {
  const seconds = a.seconds + b.seconds;
  return {
    ...a,
    entries: a.entries + b.entries,
    seconds,
    rate: (a.entries + b.entries) / seconds,
    cpuMs: [a.cpuMs.reduce((x, y) => x + y, 0) + b.cpuMs.reduce((x, y) => x + y, 0)],
    peakRssMiB: [Math.max(...a.peakRssMiB, ...b.peakRssMiB)],
    runs: [a.rate, b.rate],
  };
}

const cpuShare = (r: RunResult) => `${((r.cpuMs.reduce((a, b) => a + b, 0) / 1000 / r.seconds) * 100).toFixed(0)}%`;

/**
 * 3. Processing throughput, stream → snapshots with exactly-once on: a backlog of the profile app's
 * flat events over many users, processed by redsource (profile handlers, StreamProcessor) and by
 * the two hand-written baselines, each on its own copy of the backlog, each in its own process.
 */
export const processing: Benchmark = async (ctx) => {
  const cfg = ctx.config.processing;
  const main = { rs: benchStreams('proc_rs'), seed: benchStreams('proc_seed'), batched: benchStreams('proc_batched') };
  ctx.log(`processing: loading 3 copies of ${cfg.events} events over ${cfg.users} users`);
  await loadBacklog(ctx.redis, [main.rs, main.seed, main.batched], cfg.events, cfg.users, 3);
  // Smaller backlogs: the first N entries of the same generator (same seed).
  const extra = cfg.sizes.filter((s) => s !== cfg.events).map((size) => ({ size, streams: benchStreams(`proc_${size}`) }));
  for (const e of extra) await loadBacklog(ctx.redis, [e.streams], e.size, cfg.users, 3);

  // Every process starts now and loads its code; each then waits for its `go`, one run at a time.
  // The main comparison runs rs → (b) → (a) → (b) → rs: redsource and (b) twice (a new group each
  // time on the same backlog copy), so a change of machine load during the run hits them alike.
  const mainRun = spawnRedsource(ctx, main.rs, 'main', 1, cpuProfileEnv('processor'));
  const mainRun2 = spawnRedsource(ctx, main.rs, 'main2', 1);
  const seedWorker = await spawnBaseline(ctx, 'seed-loop.ts', main.seed, 'seed');
  const batchedWorker = await spawnBaseline(ctx, 'batched-loop.ts', main.batched, 'batched');
  const batchedWorker2 = await spawnBaseline(ctx, 'batched-loop.ts', main.batched, 'batched2');
  const sizeRuns = extra.map((e) => ({ size: e.size, run: spawnRedsource(ctx, e.streams, `size${e.size}`, 1) }));
  // More processors: the same backlog again, read by a new group into a new projection and snapshot prefix.
  const instanceRuns = cfg.instances.filter((n) => n > 1).map((n) => ({ n, run: spawnRedsource(ctx, main.rs, `x${n}`, n) }));
  const batchRun = cfg.batchSizeVariant > 0 ? spawnRedsource(ctx, main.rs, `batch${cfg.batchSizeVariant}`, 1, {}, cfg.batchSizeVariant) : undefined;
  const everyWorker = [mainRun, mainRun2, ...sizeRuns.map((s) => s.run), ...instanceRuns.map((i) => i.run), ...(batchRun ? [batchRun] : [])].flatMap((r) => r.workers).concat(seedWorker, batchedWorker, batchedWorker2);
  try {
    await Promise.all(everyWorker.map((w) => w.ready));
    ctx.log(`processing: redsource, 1 processor, ${cfg.events} events`);
    const rs1 = await runRedsource(ctx, mainRun);

    // The result must be right, not only fast: the snapshots against the pure fold of the log.
    const eventStore = new RedisEventStore({ redis: ctx.redis, catalog: profileCatalog(main.rs) });
    const expected = await referenceFold(eventStore, main.rs);
    const sample = new Map([...expected].slice(0, 1_000));
    const differences = await snapshotDifferences(new SnapshotStore({ redis: ctx.redis, keyPrefix: mainRun.keyPrefix, projection: mainRun.projection }), sample);
    if (differences.length > 0) throw new Error(`redsource snapshots differ from the reference fold:\n${differences.slice(0, 5).join('\n')}`);

    ctx.log('processing: baseline (b), the batched loop');
    const batched1 = await runBaseline(ctx, batchedWorker);
    ctx.log('processing: baseline (a), the seed loop');
    const seed = await runBaseline(ctx, seedWorker);
    ctx.log('processing: baseline (b) again');
    const batched2 = await runBaseline(ctx, batchedWorker2);
    ctx.log('processing: redsource again');
    const rs2 = await runRedsource(ctx, mainRun2);
    const rs = pair(rs1, rs2);
    const batched = pair(batched1, batched2);

    const bySize: { size: number; run: RunResult }[] = [{ size: cfg.events, run: rs1 }];
    for (const s of sizeRuns) {
      ctx.log(`processing: redsource, ${s.size} events`);
      bySize.push({ size: s.size, run: await runRedsource(ctx, s.run) });
    }
    bySize.sort((a, b) => a.size - b.size);

    const byInstances: { n: number; run: RunResult }[] = [{ n: 1, run: rs }];
    for (const i of instanceRuns) {
      ctx.log(`processing: redsource, ${i.n} processors in one group`);
      byInstances.push({ n: i.n, run: await runRedsource(ctx, i.run) });
    }
    let batchVariant: { size: number; run: RunResult } | undefined;
    if (batchRun) {
      ctx.log(`processing: redsource, 1 processor, batch size ${cfg.batchSizeVariant}`);
      batchVariant = { size: cfg.batchSizeVariant, run: await runRedsource(ctx, batchRun) };
    }
    return report(cfg.events, rs, seed, batched, bySize, byInstances, sample.size, batchVariant);
  } finally {
    await Promise.all(everyWorker.map((w) => w.stop()));
  }
};

function report(events: number, rs: RunResult & { runs: [number, number] }, seed: RunResult, batched: RunResult & { runs: [number, number] }, bySize: { size: number; run: RunResult }[], byInstances: { n: number; run: RunResult }[], checked: number, batchVariant: { size: number; run: RunResult } | undefined): BenchResult {
  const size = fmt.count(events);
  const vsSeed = judge(rs.rate / seed.rate, 12, fmt.ratio);
  const vsBatched = judge(rs.rate / batched.rate, 2, fmt.ratio);
  const absolute = judge(rs.rate, 150_000, (v) => fmt.rate(v));
  const rows: Row[] = [
    { n: 3, figure: `processing ${size} events → snapshots, exactly-once, 1 processor (2 runs)`, redsource: fmt.rate(rs.rate), baseline: `(a) seed loop, COUNT 10, HSET+XACK per entry: ${fmt.rate(seed.rate)}`, ratio: fmt.ratio(rs.rate / seed.rate), goal: '≥12× (a)', met: vsSeed.met, verdict: vsSeed.verdict },
    { n: 3, figure: 'same run', redsource: fmt.rate(rs.rate), baseline: `(b) batched loop, COUNT 1000, pipelined (2 runs): ${fmt.rate(batched.rate)}`, ratio: fmt.ratio(rs.rate / batched.rate), goal: '≥2× (b)', met: vsBatched.met, verdict: vsBatched.verdict },
    { n: 3, figure: 'same run, absolute', redsource: fmt.rate(rs.rate), baseline: '', ratio: '', goal: '≥150k ev/s', met: absolute.met, verdict: absolute.verdict },
  ];
  for (const { size: s, run } of bySize) {
    rows.push({ n: 3, figure: `processing ${fmt.count(s)} events, 1 processor: events/s, peak RSS`, redsource: `${fmt.rate(run.rate)}, ${fmt.mib(run.peakRssMiB[0] ?? 0)}`, baseline: '', ratio: '', goal: '', met: undefined, verdict: '' });
  }
  const single = byInstances.find((i) => i.n === 1)?.run.rate ?? rs.rate;
  for (const { n, run } of byInstances.filter((i) => i.n > 1)) {
    rows.push({ n: 3, figure: `processing ${size} events, ${n} processors in one group`, redsource: `${fmt.rate(run.rate)}, peak RSS ${run.peakRssMiB.map((m) => fmt.mib(m)).join(' / ')}`, baseline: `1 processor: ${fmt.rate(single)}`, ratio: fmt.ratio(run.rate / single), goal: '', met: undefined, verdict: '' });
  }
  if (batchVariant) {
    const { size: b, run } = batchVariant;
    rows.push({ n: 3, figure: `processing ${size} events, 1 processor, REDSOURCE_BATCH_SIZE=${b} (default 500)`, redsource: fmt.rate(run.rate), baseline: `(b): ${fmt.rate(batched.rate)}`, ratio: fmt.ratio(run.rate / batched.rate), goal: '', met: undefined, verdict: '' });
  }
  const describe = (name: string, r: RunResult) =>
    `${name}: ${r.entries} entries in ${r.seconds.toFixed(2)} s, process CPU ${cpuShare(r)} of a core, peak RSS ${r.peakRssMiB.map((m) => fmt.mib(m)).join(' / ')}; ${r.redisLoad}`;
  return {
    rows,
    notes: [
      describe('processing, redsource 1 processor (both runs; redis-server figures: first run)', rs) +
        `; ${rs.entriesPerBatch?.toFixed(0)} entries per apply-script call; the two runs: ${rs.runs.map((r) => fmt.rate(r)).join(' and ')}; snapshots of ${checked} users checked against the reference fold: equal`,
      describe('processing, baseline (a)', seed),
      describe('processing, baseline (b) (both runs; redis-server figures: first run)', batched) + `; the two runs: ${batched.runs.map((r) => fmt.rate(r)).join(' and ')}`,
      ...byInstances.filter((i) => i.n > 1).map((i) => describe(`processing, redsource ${i.n} processors`, i.run)),
      ...(batchVariant ? [describe(`processing, redsource batch size ${batchVariant.size}`, batchVariant.run) + `; ${batchVariant.run.entriesPerBatch?.toFixed(0)} entries per apply-script call`] : []),
    ],
  };
};
