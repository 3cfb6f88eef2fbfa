/**
 * `npx pnpm@9 bench`: measures redsource and, in the same run on the same fresh redis-server, the
 * baselines; prints one table of absolute figures and ratios and writes BENCHMARKS.md.
 *
 * BENCH_SIZE=smoke|full (default full). BENCH_ONLY=1,3 runs some sections only (BENCHMARKS.md is
 * then left alone). BENCH_CPU_PROF=<dir> writes CPU profiles of the measured windows of the main
 * processing run's processor, the freshness service and the GET-profile API (see support/cpu-profile.ts).
 */
import os from 'node:os';
import { appendLatency } from './append-latency.ts';
import { appendThroughput } from './append-throughput.ts';
import { benchConfig } from './config.ts';
import { bookkeeping } from './bookkeeping.ts';
import { clusterProcessing } from './cluster-processing.ts';
import { freshness } from './freshness.ts';
import { httpRead } from './http-read.ts';
import { processing } from './processing.ts';
import { rebuild } from './rebuild.ts';
import { stopAll } from './support/children.ts';
import type { Benchmark, BenchContext } from './support/context.ts';
import { describeMachine, machineLine } from './support/machine.ts';
import { startRedisServer, type BenchRedis } from './support/redis-server.ts';
import { writeBenchmarksMd } from './support/report.ts';
import { renderText, type Row } from './support/table.ts';

const SECTIONS: readonly { n: number; name: string; run: Benchmark }[] = [
  { n: 1, name: 'append throughput', run: appendThroughput },
  { n: 2, name: 'append latency', run: appendLatency },
  { n: 3, name: 'processing', run: processing },
  { n: 4, name: 'freshness', run: freshness },
  { n: 5, name: 'replay', run: rebuild },
  { n: 6, name: 'GET profile', run: httpRead },
  { n: 7, name: 'bookkeeping memory', run: bookkeeping },
  { n: 8, name: 'processing on a Redis Cluster', run: clusterProcessing },
];

async function main(): Promise<number> {
  const config = benchConfig();
  const only = process.env['BENCH_ONLY']?.split(',').map(Number);
  const sections = SECTIONS.filter((s) => !only || only.includes(s.n));
  const began = performance.now();
  const log = (message: string) =>
    process.stderr.write(`[bench ${((performance.now() - began) / 1000).toFixed(1).padStart(5)} s] ${message}\n`);

  let server: BenchRedis | undefined;
  const abort = (signal: NodeJS.Signals) => {
    log(`${signal}: stopping every process the bench started`);
    void stopAll(server?.process).finally(() => process.exit(130));
  };
  process.once('SIGINT', abort);
  process.once('SIGTERM', abort);
  try {
    server = await startRedisServer();
    const machine = describeMachine(server.version);
    log(
      `BENCH_SIZE=${config.size}; redis-server ${server.version} pid ${server.process.pid} on port ${server.port} (no persistence)`,
    );
    const ctx: BenchContext = { config, server, redis: server.client('bench:main'), log };
    const rows: Row[] = [];
    const notes: string[] = [];
    for (const section of sections) {
      // Each section starts on an empty server: nothing left over from the previous one.
      await ctx.redis.flushall();
      const sectionStart = performance.now();
      const result = await section.run(ctx);
      log(
        `${section.n}. ${section.name}: done in ${((performance.now() - sectionStart) / 1000).toFixed(1)} s (load average ${os.loadavg()[0]?.toFixed(2)})`,
      );
      rows.push(...result.rows);
      notes.push(...result.notes);
    }
    const seconds = (performance.now() - began) / 1000;
    machine.loadAtEnd = os.loadavg()[0] ?? Number.NaN;
    const out = [
      '',
      `redsource benchmarks, BENCH_SIZE=${config.size}, ${seconds.toFixed(0)} s`,
      machineLine(machine),
      '',
      renderText(rows),
      '',
      ...notes.map((n) => `- ${n}`),
      '',
    ];
    process.stdout.write(out.join('\n'));
    if (!only) {
      const file = writeBenchmarksMd({ size: config.size, machine, rows, notes, seconds });
      log(`wrote ${file}`);
    }
    return 0;
  } finally {
    await stopAll(server?.process);
    await server?.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
