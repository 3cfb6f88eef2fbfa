import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomCommands } from '../test/support/model.ts';
import { benchStreams, streamList, throwFirstError } from './support/backlog.ts';
import { Worker } from './support/children.ts';
import { judge, type Benchmark } from './support/context.ts';
import { cpuProfileEnv } from './support/cpu-profile.ts';
import { getJson } from './support/http.ts';
import { RedisLoad } from './support/redis-stats.ts';
import { fmt, quantile } from './support/table.ts';

const PROBES = 10;
const TICK_MS = 10;

/**
 * 4. End-to-end freshness: the profile app (HTTP API + processor in one process, as `serve` runs)
 * under a steady background load of flat XADDs at `rate` events/s; meanwhile one probe at a time
 * XADDs an activity event for a probe user and polls GET /users/:id/profile until the activity
 * counter shows it. Delay = from just before the XADD is sent to the arrival of the GET answer
 * that shows the change (so it includes one GET round trip).
 */
export const freshness: Benchmark = async (ctx) => {
  const { rate, seconds, users } = ctx.config.freshness;
  const streams = benchStreams('fresh');
  const probeIds = Array.from({ length: PROBES }, (_, i) => `probe-${i}`);
  for (const id of probeIds)
    await ctx.redis.xadd(streams.updates, '*', 'user_id', id, 'command', 'register', 'name', id);

  const server = new Worker(
    'profile api + processor',
    'profile-server.ts',
    [ctx.server.url, JSON.stringify(streams), 'snap_fresh_', 'group_fresh', '1'],
    { env: cpuProfileEnv('freshness') },
  );
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const loader = ctx.server.client('bench:fresh-load');
  const prober = ctx.server.client('bench:fresh-probe');
  try {
    const { port } = await server.waitFor<{ type: 'listening'; port: number }>('listening', 60_000);
    const counts = new Map<string, number>(probeIds.map((id) => [id, 0]));
    const probeCount = async (id: string) => {
      const { status, body } = await getJson(agent, port, `/users/${id}/profile`);
      return status === 200 ? ((body as { activity?: Record<string, number> }).activity?.['probe'] ?? 0) : -1;
    };
    for (const id of probeIds) {
      const until = performance.now() + 10_000;
      while ((await probeCount(id)) < 0) {
        if (performance.now() > until) throw new Error(`freshness: ${id} not visible after 10 s`);
        await sleep(5);
      }
    }

    ctx.log(`freshness: background load of ${rate} ev/s, probes for ${seconds} s after a 1 s warm-up`);
    // Background load: `rate` flat events/s in pipelines every TICK_MS, catching up with the clock.
    const warmupMs = 1_000;
    const commands = randomCommands(
      streams,
      Math.ceil((rate * (seconds * 1_000 + warmupMs + 2_000)) / 1_000),
      users,
      11,
    );
    let sent = 0;
    let running = true;
    const loadStarted = performance.now();
    const inFlight = new Set<Promise<void>>();
    const load = (async () => {
      while (running) {
        const due = Math.min(commands.length, Math.floor(((performance.now() - loadStarted) / 1_000) * rate));
        if (due > sent) {
          const pipeline = loader.pipeline();
          for (const [stream, ...fields] of commands.slice(sent, due)) pipeline.xadd(stream, '*', ...fields);
          sent = due;
          const p = pipeline.exec().then(throwFirstError);
          inFlight.add(p);
          void p.finally(() => inFlight.delete(p));
        }
        await sleep(TICK_MS);
      }
      await Promise.all(inFlight);
    })();

    const samples: number[] = [];
    const redisLoad = new RedisLoad(ctx.redis);
    try {
      await sleep(warmupMs);
      await redisLoad.start();
      const measureStarted = performance.now();
      for (let i = 0; performance.now() - measureStarted < seconds * 1_000; i++) {
        const id = probeIds[i % PROBES] as string;
        const want = (counts.get(id) ?? 0) + 1;
        counts.set(id, want);
        const started = performance.now();
        await prober.xadd(streams.activity, '*', 'user_id', id, 'command', 'probe');
        while ((await probeCount(id)) < want) {
          if (performance.now() - started > 10_000) throw new Error(`freshness: probe on ${id} not visible after 10 s`);
        }
        samples.push(performance.now() - started);
        await sleep(Math.random() * 5);
      }
    } finally {
      running = false;
      await load;
    }
    const achieved = sent / ((performance.now() - loadStarted) / 1_000);
    const redisLine = await redisLoad.describe();
    // Did the processor keep up? Entries still pending in the group once the load stopped.
    const pending = (
      await Promise.all(streamList(streams).map((s) => ctx.redis.xpending(s, 'group_fresh')))
    ).reduce<number>((n, summary) => n + Number(summary[0] ?? 0), 0);

    server.send({ type: 'stop' });
    const { peakRssMiB } = await server.waitFor<{ type: 'stopped'; peakRssMiB: number }>('stopped', 30_000);
    const [p50, p99] = [quantile(samples, 0.5), quantile(samples, 0.99)];
    const verdict = judge(p99, 10, fmt.ms, true);
    return {
      rows: [
        {
          n: 4,
          figure: `freshness XADD → visible in GET profile, under ${fmt.rate(rate)} steady: p50`,
          redsource: fmt.ms(p50),
          baseline: '',
          ratio: '',
          goal: '',
          met: undefined,
          verdict: '',
        },
        {
          n: 4,
          figure: 'same: p99',
          redsource: fmt.ms(p99),
          baseline: '',
          ratio: '',
          goal: 'p99 < 10 ms',
          met: verdict.met,
          verdict: verdict.verdict,
        },
      ],
      notes: [
        `freshness: ${samples.length} probes over ${seconds} s, load achieved ${fmt.rate(achieved)}, max ${fmt.ms(Math.max(...samples))}, ${pending} entries pending at the end, service peak RSS ${fmt.mib(peakRssMiB)}; ${redisLine}`,
      ],
    };
  } finally {
    agent.destroy();
    loader.disconnect();
    prober.disconnect();
    await server.stop();
  }
};
