import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchSize } from '../config.ts';
import { ROOT } from './children.ts';
import { machineLine, type Machine } from './machine.ts';
import { renderMarkdown, type Row } from './table.ts';

export interface Report {
  readonly size: BenchSize;
  readonly machine: Machine;
  readonly rows: readonly Row[];
  readonly notes: readonly string[];
  readonly seconds: number;
}

const begin = (name: string) => `<!-- bench:${name}:begin -->`;
const end = (name: string) => `<!-- bench:${name}:end -->`;

/** The text between a block's markers in the existing file, if any. */
function block(text: string, name: string): string | undefined {
  const from = text.indexOf(begin(name));
  const to = text.indexOf(end(name));
  if (from < 0 || to < from) return undefined;
  return text.slice(from + begin(name).length, to).trim();
}

const HEADER = `# Benchmarks

\`npx pnpm@9 bench\` (\`BENCH_SIZE=smoke|full\`, default full) starts a redis-server of its own (free port,
no persistence), measures redsource and, in the same run on the same server, the baselines, prints one
table and rewrites the results below (the latest run of each size; the analysis section is kept).
The hand-written baselines are in \`bench/workers/\`. Processors, replays and HTTP servers, redsource's and the
baselines', each run in a process of their own; the append benchmarks run in the bench process itself.

What is compared with what:

1. **append throughput**: \`RedisEventStore.append\` (validation, CloudEvents envelope, the append script:
   per-subject versions, optional ids) in batches, several calls in flight, vs \`redis-benchmark -c 50 -P 64
   XADD\` of an entry with exactly the fields the store writes: the server's own limit.
2. **append latency**: one event at a time, \`RedisEventStore.append\` vs one raw ioredis \`XADD\` of the same fields.
3. **processing**: a backlog of the profile app's flat events (the seed's form: \`test/support/model.ts\`) over
   many users, folded into \`user_snapshot_<id>\` hashes by a \`StreamProcessor\` with the profile handlers
   (exactly-once: one apply-script call per batch), vs (a) the seed's loop (\`XREADGROUP COUNT 10\`, one HSET
   and one XACK per entry, each awaited) and (b) a batched ioredis loop (\`COUNT 1000\`, one pipeline per batch:
   one HSET/HDEL/HINCRBY per entry, one XACK per stream). Each on its own copy of the backlog and its own
   group. The baselines give no ordering or exactly-once guarantee and validate nothing. Also at several
   backlog sizes (peak RSS of the processor process), and partitioned: 1, 2 and 4 processors of one group,
   each a process of its own, their partitions shared out before the backlog appears on their streams, with
   their CPU per event (/proc), the apply calls that waited on another processor's entries (from the
   counters they publish), and the same numbers started together on the backlog (handovers included).
4. **freshness**: the API and a processor in one process (as \`redsource serve\`), a steady background load of
   XADDs, and a probe measuring XADD → the change visible in \`GET /users/:id/profile\`.
5. **replay**: \`replay()\` (rebuild every snapshot from the log) vs an XRANGE-page loop with a pipelined write
   per entry, at two sizes, with the peak RSS of each process.
6. **GET profile**: autocannon against the profile API vs a bare Fastify route doing one HGETALL of the same key.
7. **bookkeeping memory**: a long run of \`RedisEventStore.append\` with event ids (a few resent inside the
   window each batch) and raw entries that are dead-lettered, one processor with retention; at checkpoints,
   once it caught up, \`MEMORY USAGE\` of the event-id window and of the dead-lettered-ids set and the server's
   \`used_memory\` (the operator drops the dead letters at each checkpoint). Flat, vs what was kept forever before.
8. **Redis Cluster processing**: the processing backlog on a 3-master Redis Cluster the bench starts itself, 1, 2
   and 4 processors (processes of their own, connected as the app connects), the streams' slots on three masters
   (and once the default layout), each master's share of redis-server CPU, CPU per event per component, and the
   throughput it projects for N processors on N masters.

Reading the table: *ratio* is redsource ÷ baseline (for latencies, lower is better); *met* compares with the
issue's goal and says by how much it is missed. The notes under each table give the run's details: seconds,
CPU share of the measured process, peak RSS, and how busy redis-server was (CPU from \`INFO cpu\`; time per
command from \`INFO commandstats\`, which counts the commands a Lua script calls both on their own and inside
\`evalsha\`). The machine line gives the load average: the figures are only as quiet as the machine was.
`;

/** Rewrites BENCHMARKS.md at the repo root: this run's section replaced, the other size's and the analysis kept. */
export function writeBenchmarksMd(report: Report): string {
  const file = join(ROOT, 'BENCHMARKS.md');
  const previous = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const sections: Record<string, string | undefined> = {
    full: block(previous, 'full'),
    analysis: block(previous, 'analysis'),
    smoke: block(previous, 'smoke'),
  };
  sections[report.size] = [
    `## Latest ${report.size} run${report.size === 'smoke' ? ' (CI sizes: the figures say nothing about speed)' : ''}`,
    '',
    `Machine: ${machineLine(report.machine)}. Took ${report.seconds.toFixed(0)} s.`,
    '',
    renderMarkdown(report.rows),
    '',
    ...report.notes.map((n) => `- ${n}`),
  ].join('\n');
  sections['analysis'] ??= '## Analysis\n\n(none yet)';
  const parts = [HEADER.trim()];
  for (const name of ['full', 'analysis', 'smoke']) {
    const body = sections[name];
    if (body !== undefined) parts.push(`${begin(name)}\n${body}\n${end(name)}`);
  }
  writeFileSync(file, `${parts.join('\n\n')}\n`);
  return file;
}
