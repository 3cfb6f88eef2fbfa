import type { Redis } from 'ioredis';
import type { BenchConfig } from '../config.ts';
import type { BenchRedis } from './redis-server.ts';
import type { Row } from './table.ts';

export interface BenchContext {
  readonly config: BenchConfig;
  readonly server: BenchRedis;
  /** The parent's own client on the bench Redis. */
  readonly redis: Redis;
  /** Progress line on stderr (the table goes to stdout). */
  log(message: string): void;
}

export interface BenchResult {
  readonly rows: Row[];
  /** Extra observations printed under the table and kept in BENCHMARKS.md. */
  readonly notes: string[];
}

export type Benchmark = (ctx: BenchContext) => Promise<BenchResult>;

/** `met` for a goal `value ≥ goal` (or ≤ when `atMost`), with how far off it is. */
export function judge(
  value: number,
  goal: number,
  show: (v: number) => string,
  atMost = false,
): { met: boolean; verdict: string } {
  const met = atMost ? value <= goal : value >= goal;
  const relation = met ? (atMost ? '≤' : '≥') : atMost ? '>' : '<';
  const factor = atMost ? value / goal : goal / value;
  const off = met ? '' : `, ${factor.toFixed(2)}× off`;
  return { met, verdict: `${show(value)} ${relation} ${show(goal)}${off}` };
}
