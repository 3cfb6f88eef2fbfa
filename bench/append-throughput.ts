import { eventStoreKeys, RedisEventStore, type EventInput } from '@redsource/event-store';
import { profileCatalog } from '../apps/profile-api/src/domain/events.ts';
import { activityEvents, benchStreams } from './support/backlog.ts';
import { runTool } from './support/children.ts';
import { judge, type Benchmark } from './support/context.ts';
import { fmt } from './support/table.ts';

/**
 * 1. Append throughput, batched: RedisEventStore.append of `batch` events per call with `inFlight`
 * calls outstanding, against the server's own limit for the same entries: redis-benchmark -P 64
 * XADD with exactly the fields the store writes for such an event.
 */
export const appendThroughput: Benchmark = async (ctx) => {
  const { append } = ctx.config;
  const streams = benchStreams('append');
  const client = ctx.server.client('bench:append');
  const store = new RedisEventStore({
    redis: client,
    catalog: profileCatalog(streams),
    source: 'redsource/profile-api',
  });
  const events = activityEvents(append.events, 10_000, 1);
  const batches: EventInput[][] = [];
  for (let i = 0; i < events.length; i += append.batch) batches.push(events.slice(i, i + append.batch));

  const runAppends = async (withIds: boolean) => {
    const list = withIds
      ? batches.map((b, i) => b.map((e, j) => ({ ...e, metadata: { id: `bench-${i}-${j}` } })))
      : batches;
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: append.inFlight }, async () => {
        while (next < list.length) {
          const batch = list[next++] as EventInput[];
          await store.append(streams.activity, batch);
        }
      }),
    );
    return events.length / ((performance.now() - started) / 1000);
  };

  // The server's limit for the same entries: redis-benchmark with the fields the store writes, half
  // before and half after the appends, so a change of machine load in between hits both alike.
  const { fields } = store.codec.encode(streams.activity, events[0] as EventInput);
  const half = Math.round(append.serverRequests / 2);
  const serverLimit = async () => {
    ctx.log(`append: redis-benchmark -P ${append.pipeline} -n ${half} XADD`);
    const bench = await runTool('redis-benchmark', [
      '-h',
      '127.0.0.1',
      '-p',
      String(ctx.server.port),
      '-P',
      String(append.pipeline),
      '-n',
      String(half),
      '--csv',
      'XADD',
      'bench_server_limit',
      '*',
      ...fields,
    ]);
    const rps = parseRedisBenchmarkCsv(bench.stdout);
    if (bench.code !== 0 || rps === undefined)
      throw new Error(`redis-benchmark failed (code ${bench.code}): ${bench.stderr || bench.stdout}`);
    await ctx.redis.del('bench_server_limit');
    return rps;
  };

  const reset = () =>
    ctx.redis.del(
      streams.activity,
      eventStoreKeys.versions(streams.activity),
      eventStoreKeys.eventIds(streams.activity),
      eventStoreKeys.eventIdsByAge(streams.activity),
    );
  // Warm-up: script loaded, code paths compiled.
  for (const batch of batches.slice(0, 20)) await store.append(streams.activity, batch);
  await reset();
  const before = await serverLimit();
  ctx.log(`append: ${events.length} events in batches of ${append.batch}, ${append.inFlight} in flight`);
  const rate = await runAppends(false);
  await reset();
  const rateWithIds = await runAppends(true);
  await reset();
  const after = await serverLimit();
  client.disconnect();
  // Equal request counts: the combined rate is total requests over total time.
  const rps = 2 / (1 / before + 1 / after);

  const ratio = rate / rps;
  const vsServer = judge(ratio, 0.5, fmt.ratio);
  const absolute = judge(rate, 150_000, (v) => fmt.rate(v));
  return {
    rows: [
      {
        n: 1,
        figure: `append throughput, ${append.batch} events/call, ${append.inFlight} calls in flight`,
        redsource: fmt.rate(rate),
        baseline: `redis-benchmark -c 50 -P ${append.pipeline} XADD, same fields: ${fmt.rate(rps)}`,
        ratio: fmt.ratio(ratio),
        goal: '≥0.5× server limit and ≥150k ev/s',
        met: vsServer.met && absolute.met,
        verdict: `${vsServer.verdict}; ${absolute.verdict}`,
      },
      {
        n: 1,
        figure: 'same, every event with an id (idempotent append, as the app does)',
        redsource: fmt.rate(rateWithIds),
        baseline: `redis-benchmark: ${fmt.rate(rps)}`,
        ratio: fmt.ratio(rateWithIds / rps),
        goal: '',
        met: undefined,
        verdict: '',
      },
    ],
    notes: [
      `redis-benchmark XADD entry: ${fields.length / 2} fields, ${fields.join(' ').length} bytes, the CloudEvents envelope RedisEventStore.append writes; ${fmt.rate(before)} before the appends, ${fmt.rate(after)} after.`,
    ],
  };
};

/** requests/s from `redis-benchmark --csv` (header line, then `"<test>","<rps>",...`). */
export function parseRedisBenchmarkCsv(stdout: string): number | undefined {
  const last = stdout.trim().split('\n').pop() ?? '';
  const match = /"([\d.]+)"(?:,"[\d.]+"){6}\s*$/.exec(last);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}
