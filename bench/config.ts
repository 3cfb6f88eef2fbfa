/** BENCH_SIZE=smoke|full (default full). Smoke: CI, under a minute, asserts nothing about speed. */
export type BenchSize = 'smoke' | 'full';

export interface BenchConfig {
  readonly size: BenchSize;
  readonly append: {
    /** Events appended by RedisEventStore.append in the throughput run. */
    readonly events: number;
    readonly batch: number;
    readonly inFlight: number;
    /** Requests redis-benchmark sends (-n). */
    readonly serverRequests: number;
    readonly pipeline: number;
    /** Sequential single-event appends (and as many raw XADDs) for the latency run. */
    readonly latencySamples: number;
  };
  readonly processing: {
    /** The backlog redsource and both baselines process. */
    readonly events: number;
    readonly users: number;
    /** Extra backlog sizes for the events/s + peak RSS curve (the main size is always included). */
    readonly sizes: readonly number[];
    /**
     * Partitioned runs, in this order: that many processors (separate processes) in a group of their
     * own, the partitions shared out before the backlog appears. A number given twice is run twice
     * and reported over both (1, 2, 4, 2, 1: a drift of machine load hits 1 and 2 alike).
     */
    readonly instances: readonly number[];
    /** Also that many processors started together on the backlog (partitions shared out during the run). */
    readonly coldStarts: readonly number[];
    /** Also run the main backlog with this XREADGROUP COUNT (the app's default is 500); 0 = skip. */
    readonly batchSizeVariant: number;
  };
  readonly freshness: { readonly rate: number; readonly seconds: number; readonly users: number };
  readonly replay: { readonly sizes: readonly number[]; readonly users: number };
  /** GET profile: `rounds` alternating runs of `seconds` each per server, so drifting machine load hits both alike. */
  readonly http: {
    readonly rounds: number;
    readonly seconds: number;
    readonly warmupSeconds: number;
    readonly connections: number;
  };
  /**
   * Bookkeeping memory over a long run: `events` appends with event ids (1 in `poisonEvery` raw
   * entries dead-lettered) under a window of `maxIds` ids and retention, measured at `checkpoints` points.
   */
  readonly bookkeeping: {
    readonly events: number;
    readonly checkpoints: number;
    readonly maxIds: number;
    readonly poisonEvery: number;
    readonly users: number;
  };
}

const full: BenchConfig = {
  size: 'full',
  append: { events: 400_000, batch: 500, inFlight: 4, serverRequests: 2_000_000, pipeline: 64, latencySamples: 20_000 },
  processing: {
    events: 200_000,
    users: 10_000,
    sizes: [50_000, 100_000],
    instances: [1, 2, 4, 2, 1],
    coldStarts: [2, 4],
    batchSizeVariant: 1_000,
  },
  freshness: { rate: 10_000, seconds: 10, users: 10_000 },
  replay: { sizes: [100_000, 1_000_000], users: 10_000 },
  http: { rounds: 5, seconds: 2, warmupSeconds: 2, connections: 10 },
  bookkeeping: { events: 1_000_000, checkpoints: 10, maxIds: 50_000, poisonEvery: 20, users: 1_000 },
};

const smoke: BenchConfig = {
  size: 'smoke',
  append: { events: 20_000, batch: 500, inFlight: 4, serverRequests: 200_000, pipeline: 64, latencySamples: 1_000 },
  processing: { events: 10_000, users: 1_000, sizes: [], instances: [1, 2, 4], coldStarts: [], batchSizeVariant: 0 },
  freshness: { rate: 10_000, seconds: 2, users: 1_000 },
  replay: { sizes: [5_000, 10_000], users: 1_000 },
  http: { rounds: 1, seconds: 1, warmupSeconds: 0, connections: 10 },
  bookkeeping: { events: 20_000, checkpoints: 4, maxIds: 2_000, poisonEvery: 20, users: 100 },
};

export function benchConfig(env: NodeJS.ProcessEnv = process.env): BenchConfig {
  const size = env['BENCH_SIZE'] ?? 'full';
  if (size !== 'smoke' && size !== 'full') throw new Error(`BENCH_SIZE must be 'smoke' or 'full', got '${size}'`);
  return size === 'smoke' ? smoke : full;
}
