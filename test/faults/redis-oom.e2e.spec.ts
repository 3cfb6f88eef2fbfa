import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { streamStatus } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { runCli } from '../support/cli.ts';
import { describeOutcome, FaultScenario, subjectFields } from '../support/fault-driver.ts';
import { randomCommands, xaddAll } from '../support/model.ts';
import { freePort, useTestRedis } from '../support/redis.ts';

/**
 * Redis out of memory (maxmemory, noeviction) while a backlog is processed: reads still work, every
 * write is refused (routing into partitions, applies, lease renewals). Nothing may be blamed on the
 * entries (no dead letter), nothing lost or applied twice, and every view of the service says why
 * processing waits. The leases run out meanwhile: the processors take their partitions again after.
 */
const ctx = useTestRedis();

const BACKLOG = 40_000;

it('an OOM episode mid-backlog: processors wait, status, /readyz and /metrics say why, then every entry is applied once', async (t) => {
  if (!ctx.server.owned) t.skip();
  // The default REDSOURCE_MAX_DELIVERIES (5), as every fault scenario runs: redeliveries must not matter.
  const s = new FaultScenario(ctx.server, ctx.redis);
  try {
    const port = await freePort();
    const api = runCli(['serve'], { ...s.env('api'), PORT: String(port), HOST: '127.0.0.1' });
    s.processes.set('api', api);
    s.start('p1');
    s.start('p2');
    const base = `http://127.0.0.1:${port}`;
    const get = (path: string) =>
      fetch(`${base}${path}`).then(async (r) => ({ status: r.status, text: await r.text() }));
    const readyAtStart = await poll(
      async () => (await get('/readyz').catch(() => ({ status: 0, text: '' }))).status === 200,
      20_000,
    );
    expect(readyAtStart, api.output()).toBe(true);

    // The backlog piles up while every process is frozen, and the episode starts before they thaw:
    // however fast this machine processes, the whole backlog is in front of them when writes fail.
    const frozen = [...s.processes.values()].map((p) => p.child);
    for (const child of frozen) child.kill('SIGSTOP');
    try {
      await xaddAll(ctx.redis, randomCommands(s.streams, BACKLOG, 500, 21), 1_000);
      await ctx.redis.config('SET', 'maxmemory', '1000000');
    } finally {
      for (const child of frozen) child.kill('SIGCONT');
    }
    const snapshots = new SnapshotStore({ redis: ctx.redis, keyPrefix: s.keyPrefix, projection: 'profiles' });
    const status = () =>
      streamStatus({
        redis: ctx.redis,
        streams: Object.values(s.streams),
        group: s.group,
        snapshots,
        subjectFields: (stream) => subjectFields(s.streams, stream),
      });
    const unappliedAtStart = await s.unprocessed();
    expect(unappliedAtStart, 'the episode must start while the backlog is being processed').toBeGreaterThan(1_000);

    // During the episode: every view names the reason.
    const episodeEnds = Date.now() + 7_000;
    const rows = await status();
    for (const row of rows) expect(row.waiting?.kind, JSON.stringify(row.waiting)).toBe('OOM');
    expect(rows[0]?.waiting?.reason).toMatch(/out of memory/);
    const ready = await poll(async () => {
      const r = await get('/readyz');
      return r.status === 503 && r.text.includes('"processor":"waiting"') ? r : undefined;
    }, 5_000);
    expect(ready?.text, api.output()).toMatch(/"waiting":"OOM: Redis is out of memory/);
    expect((await get('/metrics')).text).toMatch(
      new RegExp(`redsource_stream_waiting\\{stream="${s.streams.activity}",reason="OOM"\\} 1`),
    );
    const dashboard = JSON.parse((await get('/dashboard/status.json')).text) as {
      streams: { waiting?: { kind: string } }[];
    };
    expect(dashboard.streams[0]?.waiting?.kind).toBe('OOM');
    const json = runCli(['status', '--json'], s.env('status'));
    const table = runCli(['status'], s.env('status'));
    await Promise.all([json.exited, table.exited]);
    const jsonRows = JSON.parse(json.output().slice(json.output().indexOf('['))) as { waiting?: { kind: string } }[];
    expect(jsonRows.map((r) => r.waiting?.kind)).toEqual(['OOM', 'OOM', 'OOM']);
    expect(table.output()).toMatch(/waiting on Redis.*OOM/);
    expect(await ctx.redis.xlen(`redsource:{${s.streams.activity}}:dead`)).toBe(0);
    await sleep(Math.max(0, episodeEnds - Date.now()));
    await ctx.redis.config('SET', 'maxmemory', '0');

    const resumed = Date.now();
    const outcome = await s.settle(40_000);
    const line = `${describeOutcome('oom', outcome, 0)}, settled ${Date.now() - resumed} ms after the episode`;
    console.log(line);
    const context = `${line}\n${outcome.differences.slice(0, 5).join('\n')}\n${s.logs()}`;
    expect(outcome.inStreams, context).toBe(BACKLOG);
    expect(outcome.deadLettered, context).toBe(0);
    expect(outcome.deadLetterEntries, context).toBe(0);
    expect(outcome.applied, context).toBe(BACKLOG);
    expect(outcome.pending, context).toBe(0);
    expect(outcome.unapplied, context).toBe(0);
    expect(outcome.differences, context).toEqual([]);
    // Writable again: the waiting reason is gone everywhere.
    expect(await poll(async () => (await status()).every((r) => r.waiting === undefined), 10_000)).toBe(true);
    expect(await poll(async () => (await get('/readyz')).status === 200, 10_000)).toBe(true);
  } finally {
    await ctx.redis.config('SET', 'maxmemory', '0');
    await s.stopAll();
  }
}, 90_000);

async function poll<T>(check: () => Promise<T>, timeoutMs: number): Promise<T | undefined> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > end) return undefined;
    await sleep(50);
  }
}
