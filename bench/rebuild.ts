import { benchStreams, loadBacklog } from './support/backlog.ts';
import { Worker } from './support/children.ts';
import { judge, type Benchmark, type BenchContext } from './support/context.ts';
import { RedisLoad } from './support/redis-stats.ts';
import { fmt, type Row } from './support/table.ts';
import type { ProfileStreams } from '../apps/profile-api/src/domain/events.ts';

interface Done {
  readonly type: 'done';
  readonly entries: number;
  readonly peakRssMiB: number;
  readonly cpuMs: number;
}

interface ReplayRun {
  readonly rate: number;
  readonly seconds: number;
  readonly peakRssMiB: number;
  readonly redisLoad: string;
}

const replayWorker = (ctx: BenchContext, mode: 'redsource' | 'handwritten', streams: ProfileStreams, tag: string) =>
  new Worker(`replay ${mode} ${tag}`, 'replay.ts', [
    mode,
    ctx.server.url,
    JSON.stringify(streams),
    `snap_${tag}_${mode}_`,
    `replay_${tag}`,
  ]);

/** Times one worker from `go` to its `done`; the worker is stopped either way. */
async function runReplay(ctx: BenchContext, worker: Worker): Promise<ReplayRun> {
  try {
    await worker.ready;
    const load = new RedisLoad(ctx.redis);
    await load.start();
    const started = performance.now();
    worker.send({ type: 'go' });
    const done = await worker.waitFor<Done>('done', 900_000);
    const seconds = (performance.now() - started) / 1_000;
    return { rate: done.entries / seconds, seconds, peakRssMiB: done.peakRssMiB, redisLoad: await load.describe() };
  } finally {
    await worker.stop();
  }
}

/**
 * 5. Replay / rebuild of every snapshot from the log: replay() from packages/processor against a
 * hand-written loop of XRANGE pages with a pipelined HSET per entry, each in a process of its own,
 * at two sizes, for events/s and whether peak RSS stays flat as the log grows.
 */
export const rebuild: Benchmark = async (ctx) => {
  const { sizes, users } = ctx.config.replay;
  const results: { size: number; redsource: ReplayRun; handwritten: ReplayRun }[] = [];
  const plan = sizes.map((size) => ({ size, streams: benchStreams(`replay_${size}`) }));
  ctx.log(`replay: loading ${sizes.join(' + ')} events`);
  for (const { size, streams } of plan) await loadBacklog(ctx.redis, [streams], size, users, 5);
  // Every process starts (and loads its code) now; one works at a time.
  const workers = plan.map(({ size, streams }) => ({
    size,
    ours: replayWorker(ctx, 'redsource', streams, String(size)),
    theirs: replayWorker(ctx, 'handwritten', streams, String(size)),
  }));
  try {
    await Promise.all(workers.flatMap((w) => [w.ours.ready, w.theirs.ready]));
    for (const { size, ours, theirs } of workers) {
      ctx.log(`replay: redsource replay() of ${size} events`);
      const redsource = await runReplay(ctx, ours);
      ctx.log(`replay: hand-written XRANGE + pipelined HSET loop, ${size} events`);
      const handwritten = await runReplay(ctx, theirs);
      results.push({ size, redsource, handwritten });
    }
  } finally {
    await Promise.all(workers.flatMap((w) => [w.ours.stop(), w.theirs.stop()]));
  }
  const rows: Row[] = [];
  const largest = results[results.length - 1];
  const smallest = results[0];
  for (const r of results) {
    const goal = r === largest ? judge(r.redsource.rate, 150_000, (v) => fmt.rate(v)) : undefined;
    rows.push({
      n: 5,
      figure: `replay (rebuild all snapshots) of ${fmt.count(r.size)} events: events/s, peak RSS`,
      redsource: `${fmt.rate(r.redsource.rate)}, ${fmt.mib(r.redsource.peakRssMiB)}`,
      baseline: `XRANGE 1000 + pipelined HSET: ${fmt.rate(r.handwritten.rate)}, ${fmt.mib(r.handwritten.peakRssMiB)}`,
      ratio: fmt.ratio(r.redsource.rate / r.handwritten.rate),
      goal: goal ? '≥150k ev/s' : '',
      met: goal?.met,
      verdict: goal?.verdict ?? '',
    });
  }
  if (largest && smallest && largest !== smallest) {
    const growth = largest.redsource.peakRssMiB / smallest.redsource.peakRssMiB;
    const flat = judge(growth, 1.25, fmt.ratio, true);
    rows.push({
      n: 5,
      figure: `replay peak RSS, ${fmt.count(largest.size)} vs ${fmt.count(smallest.size)} events`,
      redsource: fmt.ratio(growth),
      baseline: `hand-written: ${fmt.ratio(largest.handwritten.peakRssMiB / smallest.handwritten.peakRssMiB)}`,
      ratio: '',
      goal: 'RSS flat (≤1.25×)',
      met: flat.met,
      verdict: flat.verdict,
    });
  }
  return {
    rows,
    notes: results.map(
      (r) =>
        `replay ${fmt.count(r.size)}: redsource ${r.redsource.seconds.toFixed(2)} s (${r.redsource.redisLoad}); hand-written ${r.handwritten.seconds.toFixed(2)} s (${r.handwritten.redisLoad})`,
    ),
  };
};
