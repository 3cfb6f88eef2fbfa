import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { RedisEventStore } from '@redsource/event-store';
import { replay } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog } from '../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../apps/profile-api/src/domain/handlers.ts';
import { benchStreams, throwFirstError } from './support/backlog.ts';
import { runTool, Worker } from './support/children.ts';
import { judge, type Benchmark } from './support/context.ts';
import { cpuProfileEnv } from './support/cpu-profile.ts';
import { getJson } from './support/http.ts';
import { fmt, quantile } from './support/table.ts';

const AUTOCANNON = fileURLToPath(new URL('../node_modules/autocannon/autocannon.js', import.meta.url));
const USER = 'u1';

interface Cannon {
  readonly requests: number;
  readonly seconds: number;
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
}

/** Rounds of one server together: total requests / total time, latency mean weighted by requests, median of the rounds' p50 and p99. */
function combine(rounds: readonly Cannon[]): { rps: number; p50: number; p99: number; mean: number } {
  const requests = rounds.reduce((n, r) => n + r.requests, 0);
  const median = (values: number[]) => quantile(values, 0.5);
  return {
    rps: requests / rounds.reduce((n, r) => n + r.seconds, 0),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    mean: rounds.reduce((n, r) => n + r.mean * r.requests, 0) / requests,
  };
}

/** autocannon in a child process of its own, JSON result. Any error or non-2xx answer fails the bench. */
async function cannon(port: number, seconds: number, connections: number): Promise<Cannon> {
  const run = await runTool(process.execPath, [
    AUTOCANNON,
    '-c',
    String(connections),
    '-d',
    String(seconds),
    '-j',
    `http://127.0.0.1:${port}/users/${USER}/profile`,
  ]);
  if (run.code !== 0) throw new Error(`autocannon failed (code ${run.code}): ${run.stderr}`);
  const result = JSON.parse(run.stdout) as {
    errors: number;
    timeouts: number;
    non2xx: number;
    duration: number;
    requests: { total: number };
    latency: { p50: number; p99: number; mean: number };
  };
  if (result.errors + result.timeouts + result.non2xx > 0)
    throw new Error(`autocannon: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx`);
  return {
    requests: result.requests.total,
    seconds: result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    mean: result.latency.mean,
  };
}

/**
 * 6. GET /users/:id/profile: the profile API (buildApp: zod-validated id, snapshot decoded and
 * checked, response schema) against a bare Fastify route doing one HGETALL of the same key; both
 * in their own process, autocannon in a third.
 */
export const httpRead: Benchmark = async (ctx) => {
  const { rounds, seconds, warmupSeconds, connections } = ctx.config.http;
  const streams = benchStreams('http');
  const keyPrefix = 'snap_http_';
  // One profile with some of everything, built by the real pipeline (replay of its events).
  const pipeline = ctx.redis.pipeline();
  pipeline.xadd(
    streams.updates,
    '*',
    'user_id',
    USER,
    'command',
    'register',
    'name',
    'Duffy',
    'surename',
    'Duck',
    'birth_date',
    '1937-04-17',
  );
  for (let i = 2; i <= 21; i++)
    pipeline.xadd(streams.friends, '*', 'user_id', USER, 'command', 'add', 'friend_id', String(i));
  for (let i = 1; i <= 10; i++)
    pipeline.xadd(streams.activity, '*', 'user_id', USER, 'action', 'like', 'page', `Page ${i}`);
  for (const kind of ['kick', 'dislike', 'comment', 'comment'])
    pipeline.xadd(streams.activity, '*', 'user_id', USER, 'command', kind, 'object', 'Bugs');
  throwFirstError(await pipeline.exec());
  const eventStore = new RedisEventStore({ redis: ctx.redis, catalog: profileCatalog(streams) });
  const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix, projection: 'profiles' });
  await replay({ redis: ctx.redis, eventStore, snapshots, handlers: profileHandlers(streams) });

  const api = new Worker(
    'profile api',
    'profile-server.ts',
    [ctx.server.url, JSON.stringify(streams), keyPrefix, 'group_http', '0'],
    { env: cpuProfileEnv('profile-api') },
  );
  // The same API keeping no rendered profile (PROFILE_CACHE_MB=0): what every GET costs when the profile changed since the last one.
  const uncached = new Worker('profile api, PROFILE_CACHE_MB=0', 'profile-server.ts', [
    ctx.server.url,
    JSON.stringify(streams),
    keyPrefix,
    'group_http',
    '0',
    '0',
  ]);
  const bare = new Worker('bare fastify', 'bare-server.ts', [ctx.server.url, keyPrefix]);
  const agent = new http.Agent({ keepAlive: false });
  try {
    const [apiPort, barePort, uncachedPort] = (await Promise.all(
      [api, bare, uncached].map(
        async (w) => (await w.waitFor<{ type: 'listening'; port: number }>('listening', 60_000)).port,
      ),
    )) as [number, number, number];
    const check = await getJson(agent, apiPort, `/users/${USER}/profile`);
    const profile = check.body as { friends?: unknown[]; likedPages?: unknown[] };
    if (check.status !== 200 || profile.friends?.length !== 20 || profile.likedPages?.length !== 10)
      throw new Error(`GET profile: unexpected answer ${check.status} ${JSON.stringify(check.body)}`);
    const bareCheck = await getJson(agent, barePort, `/users/${USER}/profile`);
    if (bareCheck.status !== 200) throw new Error(`bare route: ${bareCheck.status}`);

    ctx.log(
      `GET profile: autocannon -c ${connections}, warm-up ${warmupSeconds} s each, then ${rounds} alternating rounds of ${seconds} s each`,
    );
    if (warmupSeconds > 0) {
      await cannon(barePort, warmupSeconds, connections);
      await cannon(apiPort, warmupSeconds, connections);
      await cannon(uncachedPort, warmupSeconds, connections);
    }
    const bareRounds: Cannon[] = [];
    const apiRounds: Cannon[] = [];
    const uncachedRounds: Cannon[] = [];
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so neither always follows the other.
      const order =
        i % 2 === 0
          ? ([
              [barePort, bareRounds],
              [apiPort, apiRounds],
            ] as const)
          : ([
              [apiPort, apiRounds],
              [barePort, bareRounds],
            ] as const);
      for (const [port, out] of order) out.push(await cannon(port, seconds, connections));
      uncachedRounds.push(await cannon(uncachedPort, seconds, connections));
    }
    const baseline = combine(bareRounds);
    const redsource = combine(apiRounds);
    const uncachedResult = combine(uncachedRounds);

    await Promise.all(
      [api, bare, uncached].map(async (w) => {
        w.send({ type: 'stop' });
        await w.waitFor('stopped', 30_000);
      }),
    );
    const ratio = redsource.rps / baseline.rps;
    const throughput = judge(ratio, 1, fmt.ratio);
    const latency = judge(redsource.p99, baseline.p99, (v) => `${v} ms`, true);
    return {
      rows: [
        {
          n: 6,
          figure: `GET /users/:id/profile, autocannon -c ${connections}, ${rounds}×${seconds} s: req/s`,
          redsource: fmt.rate(redsource.rps, 'req/s'),
          baseline: `bare Fastify + one HGETALL: ${fmt.rate(baseline.rps, 'req/s')}`,
          ratio: fmt.ratio(ratio),
          goal: '≥1.0× req/s',
          met: throughput.met,
          verdict: throughput.verdict,
        },
        {
          n: 6,
          figure: 'same: latency p99 (mean)',
          redsource: `${redsource.p99} ms (${fmt.ms(redsource.mean)})`,
          baseline: `${baseline.p99} ms (${fmt.ms(baseline.mean)})`,
          ratio: fmt.ratio(redsource.mean / baseline.mean),
          goal: 'p99 not worse',
          met: latency.met,
          verdict: latency.verdict,
        },
        {
          n: 6,
          figure:
            'GET profile, the API keeping no rendered profile (PROFILE_CACHE_MB=0: as for a profile changed since its last GET)',
          redsource: `${fmt.rate(uncachedResult.rps, 'req/s')}, p99 ${uncachedResult.p99} ms`,
          baseline: `bare: ${fmt.rate(baseline.rps, 'req/s')}`,
          ratio: fmt.ratio(uncachedResult.rps / baseline.rps),
          goal: '',
          met: undefined,
          verdict: '',
        },
      ],
      notes: [
        `GET profile: ${rounds} alternating rounds per server; per-round req/s API ${apiRounds.map((r) => Math.round(r.requests / r.seconds)).join(', ')}, bare ${bareRounds.map((r) => Math.round(r.requests / r.seconds)).join(', ')}; ` +
          `autocannon reports latency in whole milliseconds (p99 here: median of the rounds; p50 ${redsource.p50} ms vs ${baseline.p50} ms); the latency row's ratio is of the means. ` +
          'API as `serve` wires it (edge options, response schema, ETag, metrics) with request logging off and RATE_LIMIT_MAX=0; ' +
          'its rendered-profile cache on (PROFILE_CACHE_MB default): the profile does not change during the rounds, so every GET after the first reads `_inc` and `_rev` (one HMGET) and sends the kept body. ' +
          `The uncached API ran a round after each pair: ${uncachedRounds.map((r) => Math.round(r.requests / r.seconds)).join(', ')} req/s.`,
      ],
    };
  } finally {
    agent.destroy();
    await Promise.all([api.stop(), bare.stop(), uncached.stop()]);
  }
};
