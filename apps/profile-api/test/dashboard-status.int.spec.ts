import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { DeadLetters, processorKeys, streamStatus, type StreamStatus } from '@redsource/processor';
import { useTestRedis } from '../../../test/support/redis.ts';
import { useProfileApps } from './app-harness.ts';

const ctx = useTestRedis();
const apps = useProfileApps(ctx);

/** The status read of the file's streams, counting how often it reaches Redis; `fail` makes it throw as an unreachable Redis does. */
function countedStatus() {
  const counter = { calls: 0, fail: false };
  const read = async (): Promise<StreamStatus[]> => {
    counter.calls += 1;
    if (counter.fail) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6390'), { code: 'ECONNREFUSED' });
    return streamStatus({
      redis: ctx.redis,
      snapshots: apps.setup.snapshots,
      group: apps.setup.group,
      streams: apps.streams,
      subjectFields: (s) => apps.setup.eventStore.catalog.subjectFields(s),
    });
  };
  return { counter, read };
}

/** A pino logger writing JSON lines into an array. */
function capturedLogger(level = 'info') {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

describe('GET /dashboard/status.json', () => {
  it('answers any number of pages from one Redis read a second', async () => {
    const { counter, read } = countedStatus();
    const app = await apps.app({ status: read });
    const answers = await Promise.all(Array.from({ length: 40 }, () => app.inject('/dashboard/status.json')));
    expect(answers.map((a) => a.statusCode)).toEqual(answers.map(() => 200));
    expect(counter.calls).toBe(1);
    expect(new Set(answers.map((a) => a.json<{ at: number }>().at)).size).toBe(1);
    await sleep(1_050);
    await app.inject('/dashboard/status.json');
    expect(counter.calls).toBe(2);
  });

  it('lets one address keep many pages open: 600 polls in a row are all answered (the limit was 300 a minute)', async () => {
    const app = await apps.app({ status: countedStatus().read });
    const codes = new Set<number>();
    for (let i = 0; i < 600; i++) codes.add((await app.inject('/dashboard/status.json')).statusCode);
    expect([...codes]).toEqual([200]);
    // Still limited, far above a team's tabs: 50 pages a second per address.
    const answer = await app.inject('/dashboard/status.json');
    expect(Number(answer.headers['x-ratelimit-limit'])).toBe(3000);
  });

  it('gives a page just opened the applied totals of the last minutes (?history=1), so it shows a rate at once', async () => {
    const { read } = countedStatus();
    const app = await apps.app({ status: read });
    const [updates] = apps.streams;
    if (!updates) throw new Error('no stream');
    await app.inject('/dashboard/status.json');
    await sleep(2_100);
    const plain = (await app.inject('/dashboard/status.json')).json<{ history?: unknown }>();
    expect(plain.history).toBeUndefined();
    const body = (await app.inject('/dashboard/status.json?history=1')).json<{
      at: number;
      history: { stream: string; samples: [number, number][] }[];
    }>();
    const samples = body.history.find((h) => h.stream === updates)?.samples ?? [];
    expect(samples.length).toBe(2);
    expect((samples[1]?.[0] ?? 0) - (samples[0]?.[0] ?? 0)).toBeGreaterThanOrEqual(2_000);
    expect((await app.inject('/dashboard/status.json?history=2')).statusCode).toBe(400);
  });

  it('answers 503 with Retry-After while Redis is unreachable, says so once in the log, and once when it is back', async () => {
    const { counter, read } = countedStatus();
    const { logger, lines } = capturedLogger();
    const app = await apps.app({ status: read, logger });
    expect((await app.inject('/dashboard/status.json')).statusCode).toBe(200);
    counter.fail = true;
    for (let i = 0; i < 3; i++) {
      await sleep(1_050);
      const answer = await app.inject('/dashboard/status.json');
      expect(answer.statusCode).toBe(503);
      expect(answer.headers['retry-after']).toBe('2');
      expect(answer.json()).toMatchObject({
        statusCode: 503,
        code: 'RS_UNAVAILABLE',
        message: expect.stringMatching(/^Redis is not reachable \(since \d{4}-/),
      });
    }
    counter.fail = false;
    await sleep(1_050);
    expect((await app.inject('/dashboard/status.json')).statusCode).toBe(200);
    const said = lines.filter((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('dashboard: status'));
    expect(said.map((l) => [l['level'], l['msg']])).toEqual([
      [40, 'dashboard: status not readable; answering 503 (the pages keep their last figures) until it is'],
      [30, 'dashboard: status readable again'],
    ]);
  });
});

describe('GET /dashboard/dead-letters.json', () => {
  it("lists a configured stream's dead letters, read-only and without their fields; 404 for any other name", async () => {
    const [updates] = apps.streams;
    if (!updates) throw new Error('no stream');
    const deadLetters = new DeadLetters(ctx.redis);
    const app = await apps.app({ deadLetters: (stream, count) => deadLetters.list(stream, { count }) });
    // A dead letter as the apply script writes one, its fields holding personal data.
    await ctx.redis.xadd(
      processorKeys.deadLetters(updates),
      '*',
      'stream',
      updates,
      'entry_id',
      '1-1',
      'reason',
      'no command field',
      'group',
      'g',
      'dead_at',
      '1700000000000',
      'fields',
      '["user_id","1","name","Duffy"]',
    );
    const listed = await app.inject(`/dashboard/dead-letters.json?stream=${encodeURIComponent(updates)}`);
    expect(listed.statusCode).toBe(200);
    const body = listed.json<{ stream: string; command: string; deadLetters: Record<string, unknown>[] }>();
    expect(body.stream).toBe(updates);
    expect(body.command).toBe(`redsource dlq list ${updates}`);
    expect(body.deadLetters).toEqual([
      { id: expect.stringMatching(/^\d+-\d+$/), entryId: '1-1', reason: 'no command field', deadAt: 1700000000000 },
    ]);
    expect(listed.body).not.toContain('Duffy');
    expect((await app.inject('/dashboard/dead-letters.json?stream=not_configured')).statusCode).toBe(404);
    expect((await app.inject('/dashboard/dead-letters.json')).statusCode).toBe(400);
  });
});
