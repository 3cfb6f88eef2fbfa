import type { FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ConsumerStatus, PartitionStatus, StreamStatus } from '@redsource/processor';

export interface MetricsOptions {
  /** Per-stream figures, read from Redis at scrape time; without it only process and HTTP metrics are served. */
  readonly status?: (() => Promise<readonly StreamStatus[]>) | undefined;
}

/** Where a request matched no route: one label value, so stray URLs cannot blow up the series count. */
export const UNMATCHED_ROUTE = 'unmatched';

const seconds = (ms: number | undefined) => (ms === undefined ? undefined : ms / 1000);

interface StreamFigure {
  readonly name: string;
  readonly help: string;
  /** Counters for the totals Redis keeps (they only grow, except when a replay resets them). */
  readonly type: 'gauge' | 'counter';
  /** Undefined: no sample for that stream (Redis cannot tell, or nothing was measured yet). */
  readonly value: (s: StreamStatus) => number | undefined;
}

const STREAM_FIGURES: readonly StreamFigure[] = [
  { name: 'redsource_stream_length', help: 'Entries in the stream (XLEN).', type: 'gauge', value: (s) => s.length },
  {
    name: 'redsource_stream_lag',
    help: 'Entries after the lowest partition cursor: not yet applied by every partition (most may be applied in their own); no sample while the group does not exist on the stream; a lower bound while redsource_stream_unapplied_exact is 0.',
    type: 'gauge',
    value: (s) => s.lag,
  },
  {
    name: 'redsource_stream_unapplied',
    help: 'Entries not yet applied in their partition, over every partition (a lower bound while redsource_stream_unapplied_exact is 0).',
    type: 'gauge',
    value: (s) => s.unapplied,
  },
  {
    name: 'redsource_stream_unapplied_exact',
    help: 'The stream was counted to its end (1), or only part of the way after the lowest partition cursor (0: the status scan limit, 20,000 entries by default, was reached; lag and unapplied are lower bounds).',
    type: 'gauge',
    value: (s) => (s.unappliedExact ? 1 : 0),
  },
  {
    name: 'redsource_stream_oldest_unapplied_seconds',
    help: 'Age of the oldest entry not yet applied in its partition, over every partition (from its id); 0 when none waits.',
    type: 'gauge',
    value: (s) => seconds(s.oldestUnappliedMs) ?? 0,
  },
  {
    name: 'redsource_stream_partitions',
    help: 'Partitions the group processes the stream in.',
    type: 'gauge',
    value: (s) => s.partitionCount,
  },
  {
    name: 'redsource_stream_held_by_rebuild',
    help: 'A rebuild (replay) holds the stream: nothing is applied until it switches over (1), else 0.',
    type: 'gauge',
    value: (s) => (s.heldByRebuild ? 1 : 0),
  },
  {
    name: 'redsource_stream_applied_total',
    help: 'Entries applied to the snapshots, group-wide (kept in Redis; reset by a replay).',
    type: 'counter',
    value: (s) => s.applied,
  },
  {
    name: 'redsource_stream_skipped_total',
    help: 'Redelivered entries recognised by the cursor and not applied again, group-wide.',
    type: 'counter',
    value: (s) => s.skipped,
  },
  {
    name: 'redsource_stream_dead_lettered_total',
    help: 'Entries sent to the dead-letter stream, group-wide.',
    type: 'counter',
    value: (s) => s.deadLettered,
  },
  {
    name: 'redsource_stream_dead_letters',
    help: 'Entries in the dead-letter stream now (after retries and drops).',
    type: 'gauge',
    value: (s) => s.deadLetters,
  },
  {
    name: 'redsource_stream_batch_avg_seconds',
    help: "Average batch duration over the consumers' reports.",
    type: 'gauge',
    value: (s) => seconds(s.avgBatchMs),
  },
  {
    name: 'redsource_stream_batch_last_seconds',
    help: 'Duration of the last batch a consumer reported.',
    type: 'gauge',
    value: (s) => seconds(s.lastBatchMs),
  },
  {
    name: 'redsource_stream_last_error_timestamp_seconds',
    help: 'When a consumer last reported a processing error (Unix time).',
    type: 'gauge',
    value: (s) => seconds(s.lastErrorAt),
  },
];

interface PartitionFigure {
  readonly name: string;
  readonly help: string;
  readonly value: (p: PartitionStatus) => number | undefined;
}

/** Per partition of each stream; `owner` is the lease holder's name, "" while the partition is free. */
const PARTITION_FIGURES: readonly PartitionFigure[] = [
  {
    name: 'redsource_partition_unapplied',
    help: 'Entries of the partition in the stream after its cursor: not yet applied (a lower bound while redsource_stream_unapplied_exact is 0).',
    value: (p) => p.unapplied,
  },
  {
    name: 'redsource_partition_owned',
    help: 'A processor holds the partition\'s lease (1, its name in `owner`), or it is free (0, owner="").',
    value: (p) => (p.owner === undefined ? 0 : 1),
  },
  {
    name: 'redsource_partition_oldest_unapplied_seconds',
    help: "Age of the partition's oldest entry not yet applied (from its id); 0 when none waits.",
    value: (p) => seconds(p.oldestUnappliedMs) ?? 0,
  },
];

interface ConsumerFigure {
  readonly name: string;
  readonly help: string;
  /** `rows`: every stream's status, each with its own view of the consumer (its partitions of that stream). */
  readonly value: (c: ConsumerStatus, rows: readonly StreamStatus[]) => number | undefined;
}

/** Per processor of the group, over all its streams. */
const CONSUMER_FIGURES: readonly ConsumerFigure[] = [
  {
    name: 'redsource_consumer_heartbeat_age_seconds',
    help: "Since the consumer's last heartbeat.",
    value: (c) => seconds(c.heartbeatAgeMs),
  },
  {
    name: 'redsource_consumer_partitions',
    help: 'Partitions of streams whose lease the consumer holds now, summed over the streams.',
    value: (c, rows) =>
      rows.reduce((n, row) => n + (row.consumers.find((x) => x.name === c.name)?.partitions.length ?? 0), 0),
  },
  {
    name: 'redsource_consumer_member',
    help: 'The consumer is a live member of the group (1: it gets a share of the partitions), or not (0: stopped, or its membership ran out).',
    value: (c) => (c.member === undefined ? undefined : c.member ? 1 : 0),
  },
];

type Scrape =
  | { readonly ok: true; readonly rows: readonly StreamStatus[]; readonly seconds: number }
  | { readonly ok: false; readonly seconds: number };

/**
 * Every metric's `collect()` asks for the same scrape: the first call reads `status()` once, the
 * others (and any scrape arriving meanwhile) share that read, so one /metrics costs one status().
 */
function sharedScrape(status: () => Promise<readonly StreamStatus[]>): () => Promise<Scrape> {
  let inFlight: Promise<Scrape> | undefined;
  const read = async (): Promise<Scrape> => {
    const started = process.hrtime.bigint();
    const elapsed = () => Number(process.hrtime.bigint() - started) / 1e9;
    try {
      const rows = await status();
      return { ok: true, rows, seconds: elapsed() };
    } catch {
      return { ok: false, seconds: elapsed() };
    }
  };
  return () => {
    inFlight ??= read().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };
}

/** The registry of one app: default process metrics, HTTP request durations and the processor's figures per stream. */
export function createMetricsRegistry(status: MetricsOptions['status']): {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
} {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request duration by method, route pattern and status code.',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  if (!status) return { registry, httpDuration };

  const scrape = sharedScrape(status);
  new Gauge({
    name: 'redsource_status_up',
    help: '1 if the processing figures could be read from Redis at this scrape, else 0 (and no redsource_stream_*, redsource_partition_*, redsource_group_* or redsource_consumer_* samples).',
    registers: [registry],
    async collect() {
      this.set((await scrape()).ok ? 1 : 0);
    },
  });
  new Gauge({
    name: 'redsource_status_duration_seconds',
    help: 'How long reading the processing figures from Redis took at this scrape.',
    registers: [registry],
    async collect() {
      this.set((await scrape()).seconds);
    },
  });
  for (const figure of STREAM_FIGURES) {
    const Metric = figure.type === 'counter' ? Counter : Gauge;
    const metric: Counter<'stream'> | Gauge<'stream'> = new Metric({
      name: figure.name,
      help: figure.help,
      labelNames: ['stream'] as const,
      registers: [registry],
      async collect() {
        const result = await scrape();
        metric.reset();
        if (!result.ok) return;
        for (const row of result.rows) {
          const value = figure.value(row);
          if (value === undefined) continue;
          // A counter has no set(): after reset() one inc() by the total is the same sample.
          if (metric instanceof Counter) metric.inc({ stream: row.stream }, value);
          else metric.set({ stream: row.stream }, value);
        }
      },
    });
  }
  for (const figure of PARTITION_FIGURES) {
    const gauge: Gauge<'stream' | 'partition' | 'owner'> = new Gauge({
      name: figure.name,
      help: figure.help,
      labelNames: ['stream', 'partition', 'owner'] as const,
      registers: [registry],
      async collect() {
        const result = await scrape();
        gauge.reset();
        if (!result.ok) return;
        for (const row of result.rows) {
          for (const p of row.partitions) {
            const value = figure.value(p);
            if (value !== undefined)
              gauge.set({ stream: row.stream, partition: String(p.partition), owner: p.owner ?? '' }, value);
          }
        }
      },
    });
  }
  groupGauges(registry, scrape);
  waitingGauges(registry, scrape);
  return { registry, httpDuration };
}

/**
 * The group's processors: how many are live members (they share the partitions), and per processor
 * its heartbeat, partitions held and membership. Group-wide figures, the same in every stream's row:
 * taken from the first.
 */
function groupGauges(registry: Registry, scrape: () => Promise<Scrape>): void {
  const members: Gauge<'group'> = new Gauge({
    name: 'redsource_group_members',
    help: 'Live processors in the group (members whose membership is renewed within the lease time): the partitions are shared among them.',
    labelNames: ['group'] as const,
    registers: [registry],
    async collect() {
      const result = await scrape();
      members.reset();
      const row = result.ok ? result.rows[0] : undefined;
      if (row?.members !== undefined) members.set({ group: row.group }, row.members);
    },
  });
  for (const figure of CONSUMER_FIGURES) {
    const gauge: Gauge<'group' | 'consumer'> = new Gauge({
      name: figure.name,
      help: figure.help,
      labelNames: ['group', 'consumer'] as const,
      registers: [registry],
      async collect() {
        const result = await scrape();
        gauge.reset();
        const row = result.ok ? result.rows[0] : undefined;
        for (const consumer of row?.consumers ?? []) {
          const value = figure.value(consumer, result.ok ? result.rows : []);
          if (row && value !== undefined) gauge.set({ group: row.group, consumer: consumer.name }, value);
        }
      },
    });
  }
}

/**
 * Whether processing waits on Redis (it refuses writes or is unreachable), with the reason's kind
 * (`OOM`, `READONLY`, `MISCONF`, `CONNECTION`...) as a label: 1 while it waits, else one 0 sample
 * with `reason=""`, so `max by (stream) (redsource_stream_waiting) == 1` alerts on any reason.
 */
function waitingGauges(registry: Registry, scrape: () => Promise<Scrape>): void {
  const streams: Gauge<'stream' | 'reason'> = new Gauge({
    name: 'redsource_stream_waiting',
    help: "Processing of the stream waits on Redis (1) and why (reason: OOM, READONLY, MISCONF, BUSY, LOADING, NOSCRIPT, CONNECTION...), from Redis's state and the consumers' reports.",
    labelNames: ['stream', 'reason'] as const,
    registers: [registry],
    async collect() {
      const result = await scrape();
      streams.reset();
      if (!result.ok) return;
      for (const row of result.rows)
        streams.set({ stream: row.stream, reason: row.waiting?.kind ?? '' }, row.waiting ? 1 : 0);
    },
  });
  const consumers: Gauge<'stream' | 'consumer' | 'reason'> = new Gauge({
    name: 'redsource_consumer_waiting',
    help: 'The consumer reported with its last heartbeat that it waits on Redis (1), and why.',
    labelNames: ['stream', 'consumer', 'reason'] as const,
    registers: [registry],
    async collect() {
      const result = await scrape();
      consumers.reset();
      if (!result.ok) return;
      for (const row of result.rows) {
        for (const c of row.consumers) {
          const kind = c.stats?.waiting?.kind;
          consumers.set({ stream: row.stream, consumer: c.name, reason: kind ?? '' }, kind ? 1 : 0);
        }
      }
    },
  });
}

/**
 * `GET /metrics` (Prometheus text format) and the request-duration hook. Wrapped in fastify-plugin
 * so the hook sees every route of the app; each app has its own registry, never prom-client's global one.
 */
const metricsPlugin: FastifyPluginAsync<MetricsOptions> = async (app, { status }) => {
  const { registry, httpDuration } = createMetricsRegistry(status);

  app.addHook('onResponse', async (request, reply) => {
    httpDuration.observe(
      {
        method: request.method,
        route: request.routeOptions.url ?? UNMATCHED_ROUTE,
        status_code: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
  });

  // Not rate limited: a scraper (often several behind one address) must never be turned away.
  const docs = {
    summary: 'Prometheus metrics',
    description: 'Process, HTTP and per-stream processing metrics in the Prometheus text format.',
    tags: ['operations'],
  };
  app.get('/metrics', { schema: docs, config: { rateLimit: false } }, async (_request, reply) => {
    const body = await registry.metrics();
    return reply.header('content-type', registry.contentType).header('cache-control', 'no-store').send(body);
  });

  app.addHook('onClose', async () => {
    registry.clear();
  });
};

export const metricsRoutes = fp(metricsPlugin, { name: 'redsource-metrics', fastify: '5.x' });
