import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { streamStatus, type StreamStatus } from '@redsource/processor';
import { buildApp } from '../src/http/app.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { xaddAll, type RawCommand } from '../../../test/support/model.ts';

const ctx = useTestRedis();
let setup: ReturnType<typeof isolatedProfileSetup>;
let app: FastifyInstance;
let statusCalls = 0;
const apps: FastifyInstance[] = [];

/** The processors' partition count here: the app passes REDSOURCE_PARTITIONS the same way. */
const PARTITIONS = 4;
const readStatus = (scanLimit?: number): Promise<StreamStatus[]> =>
  streamStatus({
    redis: ctx.redis,
    snapshots: setup.snapshots,
    group: setup.group,
    streams: [setup.streams.updates, setup.streams.activity, setup.streams.friends],
    partitions: PARTITIONS,
    subjectFields: (stream) => setup.eventStore.catalog.subjectFields(stream),
    scanLimit,
  });
/** The partition of a subject (the first 32 bits of its SHA-1, modulo the count), computed here on its own. */
const partitionOf = (subject: string) =>
  Number.parseInt(createHash('sha1').update(subject).digest('hex').slice(0, 8), 16) % PARTITIONS;
const PARTITION_LABELS = Array.from({ length: PARTITIONS }, (_, p) => String(p));

async function newApp(status?: () => Promise<readonly StreamStatus[]>): Promise<FastifyInstance> {
  const built = await buildApp({
    snapshots: setup.snapshots,
    readiness: async () => ({ redis: true, processor: undefined }),
    ...(status ? { status } : {}),
  });
  apps.push(built);
  return built;
}

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** The samples of a Prometheus text exposition (enough of the format for prom-client's output). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[key ?? ''] = value ?? '';
    samples.push({ name: match[1] ?? '', labels, value: Number(match[3]) });
  }
  return samples;
}

/** The one sample of `name` whose labels include `labels`; undefined if none. */
function value(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

async function scrape(target: FastifyInstance): Promise<{ text: string; samples: Sample[]; contentType: string }> {
  const res = await target.inject({ method: 'GET', url: '/metrics' });
  expect(res.statusCode).toBe(200);
  return { text: res.body, samples: parse(res.body), contentType: String(res.headers['content-type']) };
}

beforeAll(async () => {
  setup = isolatedProfileSetup(ctx.redis);
  const { updates, friends } = setup.streams;
  // 30 valid registrations and 2 entries no decoder accepts on one stream; 5 friendships on another.
  const commands: RawCommand[] = [];
  for (let i = 1; i <= 30; i++) {
    commands.push([updates, 'user_id', `u${i}`, 'command', 'register', 'name', `Name ${i}`]);
    if (i === 10) commands.push([updates, 'user_id', 'u10', 'no_command_here', 'x']);
    if (i === 20) commands.push([updates, 'specversion', '1.0', 'type', 'register', 'data', '{"userId": broken json']);
  }
  for (let i = 1; i <= 5; i++) commands.push([friends, 'user_id', 'u1', 'command', 'add', 'friend_id', `f${i}`]);
  await xaddAll(ctx.redis, commands);

  const processor = setup.processor(ctx.server.client(), {
    consumer: 'metrics-first',
    heartbeatMs: 50,
    partitions: PARTITIONS,
  });
  await processor.start();
  try {
    // Done: every entry applied or dead-lettered, and the consumer's report (batch timings) written.
    const settled = await eventually(async () => {
      const rows = await readStatus();
      const u = rows.find((r) => r.stream === updates);
      const f = rows.find((r) => r.stream === friends);
      return (
        u?.applied === 30 &&
        u.deadLettered === 2 &&
        u.unapplied === 0 &&
        u.avgBatchMs !== undefined &&
        f?.applied === 5 &&
        f.unapplied === 0
      );
    }, 20_000);
    expect(settled, 'processor did not finish the scenario').toBe(true);
  } finally {
    await processor.stop();
  }

  app = await newApp(async () => {
    statusCalls += 1;
    return readStatus();
  });
});

afterAll(async () => {
  for (const a of apps) await a.close();
});

describe('GET /metrics', () => {
  it("shows the scenario's numbers per stream, read from Redis at scrape time", async () => {
    const { samples, text, contentType } = await scrape(app);
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const updates = { stream: setup.streams.updates };
    const friends = { stream: setup.streams.friends };
    const activity = { stream: setup.streams.activity };

    expect(value(samples, 'redsource_status_up')).toBe(1);
    expect(value(samples, 'redsource_stream_length', updates)).toBe(32);
    expect(value(samples, 'redsource_stream_applied_total', updates)).toBe(30);
    expect(value(samples, 'redsource_stream_dead_lettered_total', updates)).toBe(2);
    expect(value(samples, 'redsource_stream_dead_letters', updates)).toBe(2);
    expect(value(samples, 'redsource_stream_skipped_total', updates)).toBe(0);
    expect(value(samples, 'redsource_stream_unapplied', updates)).toBe(0);
    expect(value(samples, 'redsource_stream_unapplied_exact', updates)).toBe(1);
    // Entries after the lowest partition cursor (an idle partition's cursor follows now and then), as the status counts them.
    const updatesRow = (await readStatus()).find((r) => r.stream === setup.streams.updates);
    expect(value(samples, 'redsource_stream_lag', updates)).toBe(updatesRow?.lag);
    expect(value(samples, 'redsource_stream_oldest_unapplied_seconds', updates)).toBe(0);
    expect(value(samples, 'redsource_stream_partitions', updates)).toBe(PARTITIONS);
    expect(value(samples, 'redsource_stream_held_by_rebuild', updates)).toBe(0);
    expect(value(samples, 'redsource_stream_batch_avg_seconds', updates)).toBeGreaterThan(0);
    expect(value(samples, 'redsource_stream_batch_last_seconds', updates)).toBeGreaterThan(0);

    expect(value(samples, 'redsource_stream_length', friends)).toBe(5);
    expect(value(samples, 'redsource_stream_applied_total', friends)).toBe(5);
    expect(value(samples, 'redsource_stream_dead_lettered_total', friends)).toBe(0);
    expect(value(samples, 'redsource_stream_length', activity)).toBe(0);

    // The processor stopped: it gave every partition back and left the group; nothing waits in any partition.
    for (const partition of PARTITION_LABELS) {
      expect(value(samples, 'redsource_partition_owned', { ...updates, partition })).toBe(0);
      expect(value(samples, 'redsource_partition_owned', { ...updates, partition, owner: '' })).toBe(0);
      expect(value(samples, 'redsource_partition_unapplied', { ...updates, partition })).toBe(0);
    }
    expect(value(samples, 'redsource_group_members', { group: setup.group })).toBe(0);
    const gone = { group: setup.group, consumer: 'metrics-first' };
    expect(value(samples, 'redsource_consumer_member', gone)).toBe(0);
    expect(value(samples, 'redsource_consumer_partitions', gone)).toBe(0);
    expect(value(samples, 'redsource_consumer_heartbeat_age_seconds', gone)).toBeGreaterThanOrEqual(0);
    // What only the old design had is gone.
    for (const name of [
      'redsource_stream_oldest_unrouted_seconds',
      'redsource_stream_pending',
      'redsource_stream_oldest_pending_seconds',
      'redsource_consumer_pending',
      'redsource_consumer_idle_seconds',
      'redsource_stream_consumers',
    ]) {
      expect(text).not.toContain(name);
    }

    // The totals Redis keeps are counters (rate() and increase() apply); the levels are gauges.
    expect(text).toContain('# TYPE redsource_stream_applied_total counter');
    expect(text).toContain('# TYPE redsource_stream_dead_lettered_total counter');
    expect(text).toContain('# TYPE redsource_stream_length gauge');
    // Default process metrics.
    expect(value(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(value(samples, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('follows the streams: entries appended later show at the next scrape', async () => {
    const before = value((await scrape(app)).samples, 'redsource_stream_length', { stream: setup.streams.activity });
    await xaddAll(ctx.redis, [
      [setup.streams.activity, 'user_id', 'u1', 'command', 'like', 'page', 'p1'],
      [setup.streams.activity, 'user_id', 'u2', 'command', 'kick'],
    ]);
    const { samples } = await scrape(app);
    expect(value(samples, 'redsource_stream_length', { stream: setup.streams.activity })).toBe((before ?? 0) + 2);
    // No processor runs now: both wait in their subject's partition, after every cursor.
    const activity = { stream: setup.streams.activity };
    expect(value(samples, 'redsource_stream_lag', activity)).toBe(2);
    expect(value(samples, 'redsource_stream_unapplied', activity)).toBe(2);
    expect(value(samples, 'redsource_stream_unapplied_exact', activity)).toBe(1);
    expect(value(samples, 'redsource_stream_oldest_unapplied_seconds', activity)).toBeGreaterThanOrEqual(0);
    for (const partition of PARTITION_LABELS) {
      const expected = ['u1', 'u2'].filter((u) => String(partitionOf(u)) === partition).length;
      expect(
        value(samples, 'redsource_partition_unapplied', { ...activity, partition }),
        `partition ${partition}`,
      ).toBe(expected);
    }

    // A status that reads one entry per stream at most: the counts are lower bounds, and say so.
    const bounded = await newApp(() => readStatus(1));
    const partial = (await scrape(bounded)).samples;
    expect(value(partial, 'redsource_stream_unapplied_exact', activity)).toBe(0);
    expect(value(partial, 'redsource_stream_lag', activity)).toBe(1);
    expect(value(partial, 'redsource_stream_unapplied', activity)).toBe(1);
  });

  it('per partition: who holds it and what waits in it; the live members of the group', async () => {
    const { friends } = setup.streams;
    const consumer = 'metrics-live';
    const processor = ctx.track(
      setup.processor(ctx.server.client(), {
        consumer,
        heartbeatMs: 50,
        partitions: PARTITIONS,
        rebalanceIntervalMs: 50,
        leaseMs: 1_000,
      }),
    );
    await processor.start();
    expect(
      await eventually(
        async () =>
          (await readStatus()).every((r) => r.unapplied === 0 && r.partitions.every((p) => p.owner === consumer)),
        10_000,
      ),
    ).toBe(true);
    let { samples } = await scrape(app);
    expect(value(samples, 'redsource_group_members', { group: setup.group })).toBe(1);
    // Every partition of every stream: the leases are per stream.
    const streamCount = (await readStatus()).length;
    expect(streamCount).toBeGreaterThan(1);
    expect(value(samples, 'redsource_consumer_partitions', { group: setup.group, consumer })).toBe(
      PARTITIONS * streamCount,
    );
    expect(value(samples, 'redsource_consumer_member', { group: setup.group, consumer })).toBe(1);
    for (const partition of PARTITION_LABELS) {
      expect(value(samples, 'redsource_partition_owned', { stream: friends, partition, owner: consumer })).toBe(1);
      expect(value(samples, 'redsource_partition_unapplied', { stream: friends, partition, owner: consumer })).toBe(0);
    }

    // A rebuild holds the stream: the processor reads new entries but applies none, so they wait in their subject's partition.
    await setup.snapshots.hold(friends);
    try {
      await xaddAll(
        ctx.redis,
        [1, 2, 3].map((i): RawCommand => [friends, 'user_id', 'u7', 'command', 'add', 'friend_id', `g${i}`]),
      );
      expect(
        await eventually(async () => (await readStatus()).find((r) => r.stream === friends)?.unapplied === 3, 10_000),
      ).toBe(true);
      ({ samples } = await scrape(app));
      const u7 = partitionOf('u7');
      for (const partition of PARTITION_LABELS) {
        expect(
          value(samples, 'redsource_partition_unapplied', { stream: friends, partition, owner: consumer }),
          `partition ${partition}`,
        ).toBe(partition === String(u7) ? 3 : 0);
      }
      expect(
        value(samples, 'redsource_partition_oldest_unapplied_seconds', { stream: friends, partition: String(u7) }),
      ).toBeGreaterThanOrEqual(0);
      expect(value(samples, 'redsource_stream_unapplied', { stream: friends })).toBe(3);
      // Not applied in their partition, so after the lowest cursor too.
      expect(value(samples, 'redsource_stream_lag', { stream: friends })).toBeGreaterThanOrEqual(3);
      expect(value(samples, 'redsource_stream_held_by_rebuild', { stream: friends })).toBe(1);
    } finally {
      await setup.snapshots.release(friends);
    }
    expect(
      await eventually(async () => (await readStatus()).find((r) => r.stream === friends)?.unapplied === 0, 10_000),
    ).toBe(true);

    // Stopped: it hands the partitions back and leaves; they show free until another processor takes them.
    await processor.stop();
    ({ samples } = await scrape(app));
    expect(value(samples, 'redsource_group_members', { group: setup.group })).toBe(0);
    expect(value(samples, 'redsource_consumer_member', { group: setup.group, consumer })).toBe(0);
    for (const partition of PARTITION_LABELS)
      expect(value(samples, 'redsource_partition_owned', { stream: friends, partition, owner: '' })).toBe(0);
  });

  it('reads the status once per scrape, whatever the number of metrics', async () => {
    const calls = statusCalls;
    await scrape(app);
    expect(statusCalls - calls).toBe(1);
    await Promise.all([scrape(app), scrape(app)]);
    expect(statusCalls - calls).toBeLessThanOrEqual(3);
  });

  it('times requests by method, route pattern and status code', async () => {
    const fresh = await newApp(readStatus);
    expect((await fresh.inject('/users/u1/profile')).statusCode).toBe(200);
    expect((await fresh.inject('/users/u2/profile')).statusCode).toBe(200);
    expect((await fresh.inject('/users/a:b/profile')).statusCode).toBe(400);
    expect((await fresh.inject('/no/such/route')).statusCode).toBe(404);
    const { samples, text } = await scrape(fresh);
    const profile200 = { method: 'GET', route: '/users/:id/profile', status_code: '200' };
    expect(value(samples, 'http_request_duration_seconds_count', profile200)).toBe(2);
    expect(value(samples, 'http_request_duration_seconds_bucket', { ...profile200, le: '+Inf' })).toBe(2);
    expect(value(samples, 'http_request_duration_seconds_sum', profile200)).toBeGreaterThan(0);
    expect(value(samples, 'http_request_duration_seconds_count', { ...profile200, status_code: '400' })).toBe(1);
    // An unknown URL is one label value, never the URL itself.
    expect(
      value(samples, 'http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status_code: '404' }),
    ).toBe(1);
    expect(text).not.toContain('/no/such/route');
    expect(text).toContain('# TYPE http_request_duration_seconds histogram');
  });

  it('keeps one registry per app: several apps in one process count their own requests', async () => {
    const first = await newApp(readStatus);
    const second = await newApp(readStatus);
    await first.inject('/users/u1/profile');
    await first.inject('/users/u1/profile');
    await second.inject('/users/u1/profile');
    const profile = { method: 'GET', route: '/users/:id/profile', status_code: '200' };
    expect(value((await scrape(first)).samples, 'http_request_duration_seconds_count', profile)).toBe(2);
    expect(value((await scrape(second)).samples, 'http_request_duration_seconds_count', profile)).toBe(1);
    // ...while both show the same group-wide figures, kept in Redis.
    expect(
      value((await scrape(second)).samples, 'redsource_stream_applied_total', { stream: setup.streams.updates }),
    ).toBe(30);
  });

  it('still answers when the status cannot be read: redsource_status_up 0 and no stale stream figures', async () => {
    const broken = await newApp(async () => {
      throw new Error('Connection is closed.');
    });
    const { samples } = await scrape(broken);
    expect(value(samples, 'redsource_status_up')).toBe(0);
    expect(samples.filter((s) => /^redsource_(stream|partition|group|consumer)_/.test(s.name))).toEqual([]);
    // The process metrics are still there. (Their value may be 0: prom-client counts CPU since the
    // registry was made, which a fast test can leave below a microsecond's resolution.)
    expect(samples.map((s) => s.name)).toContain('process_cpu_user_seconds_total');
  });

  it('serves process and HTTP metrics only where the app has no status source', async () => {
    const plain = await newApp();
    const { samples } = await scrape(plain);
    expect(samples.some((s) => s.name.startsWith('redsource_'))).toBe(false);
    expect(value(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
  });
});
