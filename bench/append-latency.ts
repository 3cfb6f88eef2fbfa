import { RedisEventStore, type EventInput } from '@redsource/event-store';
import { profileCatalog } from '../apps/profile-api/src/domain/events.ts';
import { activityEvents, benchStreams } from './support/backlog.ts';
import { judge, type Benchmark } from './support/context.ts';
import { fmt, quantile } from './support/table.ts';

/**
 * 2. Append latency of one event, sequential (one call outstanding): RedisEventStore.append vs one
 * raw ioredis XADD of the same fields. The two alternate in blocks of 100 so drift hits both alike.
 */
export const appendLatency: Benchmark = async (ctx) => {
  const samples = ctx.config.append.latencySamples;
  const streams = benchStreams('latency');
  const client = ctx.server.client('bench:latency');
  const store = new RedisEventStore({
    redis: client,
    catalog: profileCatalog(streams),
    source: 'redsource/profile-api',
  });
  const events = activityEvents(samples + 500, 10_000, 2);
  // The raw XADD sends what the store would write for the event (encoded beforehand: only the round trip is timed).
  const rawFields = events.map((e) => store.codec.encode(streams.activity, e).fields);

  const framework: number[] = [];
  const raw: number[] = [];
  const timeAppend = async (i: number, out: number[] | undefined) => {
    const started = performance.now();
    await store.append(streams.activity, events[i] as EventInput);
    out?.push(performance.now() - started);
  };
  const timeXadd = async (i: number, out: number[] | undefined) => {
    const started = performance.now();
    await client.xadd('bench_raw_xadd', '*', ...(rawFields[i] as string[]));
    out?.push(performance.now() - started);
  };
  ctx.log(`append latency: ${samples} sequential single-event appends and as many raw XADDs`);
  for (let i = 0; i < 500; i++) {
    await timeAppend(i, undefined);
    await timeXadd(i, undefined);
  }
  for (let block = 500; block < samples + 500; block += 100) {
    for (let i = block; i < Math.min(block + 100, samples + 500); i++) await timeAppend(i, framework);
    for (let i = block; i < Math.min(block + 100, samples + 500); i++) await timeXadd(i, raw);
  }
  client.disconnect();

  const [p50, p99, rawP50, rawP99] = [
    quantile(framework, 0.5),
    quantile(framework, 0.99),
    quantile(raw, 0.5),
    quantile(raw, 0.99),
  ];
  const p99Ratio = p99 / rawP99;
  const verdict = judge(p99Ratio, 1.5, fmt.ratio, true);
  return {
    rows: [
      {
        n: 2,
        figure: 'append latency, one event, sequential: p50',
        redsource: fmt.ms(p50),
        baseline: `raw ioredis XADD: ${fmt.ms(rawP50)}`,
        ratio: fmt.ratio(p50 / rawP50),
        goal: '',
        met: undefined,
        verdict: '',
      },
      {
        n: 2,
        figure: 'append latency, one event, sequential: p99',
        redsource: fmt.ms(p99),
        baseline: `raw ioredis XADD: ${fmt.ms(rawP99)}`,
        ratio: fmt.ratio(p99Ratio),
        goal: 'p99 ≤1.5× raw',
        met: verdict.met,
        verdict: verdict.verdict,
      },
    ],
    notes: [
      `append latency: ${framework.length} samples each; redsource includes validation and encoding (zod, JSON) in the client, the raw XADD does not.`,
    ],
  };
};
