import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Fastify, { type FastifyInstance } from 'fastify';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  DeadLetters,
  partitionOfSubject,
  streamStatus,
  type StreamProcessor,
  type StreamStatus,
} from '@redsource/processor';
import { buildApp } from '../src/http/app.ts';
import { dashboardRoutes } from '../src/http/routes/dashboard.ts';
import { eventually, unique, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { xaddAll, type RawCommand } from '../../../test/support/model.ts';
import { PartitionedStreams } from '../../../packages/processor/src/partitions/streams.ts';

/** Debian's chromium (`apt-get install -y chromium`; .ci/run installs it). Without it this file is skipped. */
const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`dashboard.e2e: skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);

/** UPDATE_SCREENSHOTS=1 refreshes the README's picture; otherwise the screenshot goes to the temp dir. */
const SCREENSHOT = process.env['UPDATE_SCREENSHOTS']
  ? fileURLToPath(new URL('../../../docs/dashboard.png', import.meta.url))
  : join(tmpdir(), 'redsource-dashboard.png');

let setup: ReturnType<typeof isolatedProfileSetup>;
let processor: StreamProcessor | undefined;
let app: FastifyInstance | undefined;
let browser: Browser | undefined;
let page: Page;
let base: string;
const consumer = unique('dashboard-consumer');
/** The processor's default partition count (the app's too, without REDSOURCE_PARTITIONS). */
const ALL_PARTITIONS = Array.from({ length: 12 }, (_, p) => p);
/** A stream whose name is markup: it must show as text. Added to the status only for the escaping test. */
const hostile = unique('<img src=x onerror="window.__xss=1">');
const extraStreams: string[] = [];
/** The catalog's subject fields (none for a stream outside it), as the app passes them. */
const subjectFields = (stream: string) =>
  setup.eventStore.catalog.has(stream) ? setup.eventStore.catalog.subjectFields(stream) : [];

const updateCommands = (from: number, count: number): RawCommand[] =>
  Array.from({ length: count }, (_, i) => [
    setup.streams.updates,
    'user_id',
    `u${from + i}`,
    'command',
    'register',
    'name',
    `User ${from + i}`,
  ]);

/** A figure as the page shows it to a reader ("1,234" → 1234). */
async function shown(stream: string, field: string): Promise<number> {
  const text = await page.locator(`[data-stream="${stream}"] [data-field="${field}"]`).textContent();
  return Number((text ?? '').replace(/,/g, ''));
}

describe.skipIf(!hasChromium)(
  `the dashboard in a real browser${hasChromium ? '' : ` (skipped: ${CHROMIUM} is missing)`}`,
  () => {
    const ctx = useTestRedis();

    beforeAll(async () => {
      setup = isolatedProfileSetup(ctx.redis);
      const { updates, activity, friends } = setup.streams;
      await xaddAll(ctx.redis, [
        ...updateCommands(1, 5),
        [updates, 'user_id', 'u9', 'no_command_here', 'x'],
        [activity, 'user_id', 'u1', 'command', 'like', 'page', 'Looney'],
        [activity, 'user_id', 'u2', 'command', 'kick'],
        [friends, 'user_id', 'u1', 'command', 'add', 'friend_id', 'u2'],
      ]);
      processor = setup.processor(ctx.server.client(), { consumer, heartbeatMs: 200 });
      await processor.start();
      const status = () =>
        streamStatus({
          redis: ctx.redis,
          snapshots: setup.snapshots,
          group: setup.group,
          streams: [updates, activity, friends, ...extraStreams],
          subjectFields,
        });
      const settled = await eventually(
        async () => (await status()).find((s) => s.stream === updates)?.applied === 5,
        15_000,
      );
      expect(settled, 'the processor did not apply the first entries').toBe(true);

      const deadLetters = new DeadLetters(ctx.redis);
      app = await buildApp({
        snapshots: setup.snapshots,
        readiness: async () => ({ redis: true, processor: true }),
        status,
        streams: [updates, activity, friends],
        deadLetters: (stream, count) => deadLetters.list(stream, { count }),
      });
      await app.listen({ port: 0, host: '127.0.0.1' });
      const address = app.server.address();
      base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;

      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
      page = await browser.newPage({ viewport: { width: 1120, height: 720 } });
    });

    afterAll(async () => {
      await browser?.close();
      await app?.close();
      await processor?.stop();
    });

    it('shows every stream, then updates its numbers live, without a reload', async () => {
      const errors: string[] = [];
      page.on('pageerror', (error) => errors.push(error.message));
      page.on('console', (message) => {
        if (message.type() === 'error') errors.push(message.text());
      });
      page.on('response', (response) => {
        if (response.status() >= 400) errors.push(`${response.status()} ${response.url()}`);
      });
      let navigations = 0;
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) navigations += 1;
      });

      await page.goto(`${base}/dashboard`);
      const { updates, activity, friends } = setup.streams;
      for (const stream of [updates, activity, friends]) await page.locator(`[data-stream="${stream}"]`).waitFor();
      await expect.poll(() => shown(updates, 'applied')).toBe(5);
      expect(await shown(updates, 'length')).toBe(6);
      expect(await shown(updates, 'deadLettered')).toBe(1);
      expect(await shown(updates, 'deadLetters')).toBe(1);
      expect(await shown(activity, 'length')).toBe(2);
      expect(await shown(friends, 'length')).toBe(1);
      // The consumer: a live member of the group holding every partition (it runs alone), with its heartbeat.
      const row = page.locator(`[data-stream="${updates}"] tr[data-consumer="${consumer}"]`);
      await row.waitFor();
      expect(await row.locator('td').nth(1).textContent()).toBe('yes');
      await expect.poll(() => row.locator('td').nth(2).textContent()).toBe(`0–${ALL_PARTITIONS.length - 1}`);
      expect(await row.locator('td').nth(3).textContent()).toMatch(/^\d+(\.\d)? (ms|s) ago$/);
      await expect.poll(() => page.locator('#connection').getAttribute('data-state')).toBe('live');

      // Which figures are group-wide (kept in Redis) and which one process's own.
      const card = page.locator(`[data-stream="${updates}"]`);
      expect(await card.locator('.scope').textContent()).toBe('stream and group-wide totals');
      expect(await card.locator('th[data-field="perProcess"]').textContent()).toBe('applied by its process');
      // The dead letters: the command, and a read-only list behind the link.
      expect(await card.locator('[data-field="dlqCommand"]').textContent()).toBe(`redsource dlq list ${updates}`);
      const listUrl = await card
        .locator('a[data-field="dlqLink"]')
        .evaluate((a) => (a as unknown as { href: string }).href);
      const listed = (await (await page.request.get(listUrl)).json()) as {
        deadLetters: { entryId: string; reason: string }[];
      };
      expect(listed.deadLetters).toHaveLength(1);
      expect(listed.deadLetters[0]?.reason).toMatch(/command/);

      // Live: entries appended now show up on the page that is already open.
      await page.evaluate(() => Object.assign(globalThis, { sameDocument: true }));
      const [length, applied] = [await shown(updates, 'length'), await shown(updates, 'applied')];
      // A few seconds of uneven traffic, so the rate chart has a shape.
      const bursts = [10, 25, 5, 30, 15, 20, 8, 12];
      let next = 100;
      for (const [round, size] of bursts.entries()) {
        await xaddAll(ctx.redis, [
          ...updateCommands(next, size),
          [activity, 'user_id', 'u1', 'command', 'comment', 'object', `post ${round}`],
        ]);
        next += size;
        await sleep(900);
      }
      const added = bursts.reduce((a, b) => a + b, 0);
      await expect.poll(() => shown(updates, 'length'), { timeout: 10_000 }).toBe(length + added);
      await expect.poll(() => shown(updates, 'applied'), { timeout: 10_000 }).toBe(applied + added);
      await expect.poll(() => shown(activity, 'applied'), { timeout: 10_000 }).toBe(2 + bursts.length);
      expect(await page.evaluate(() => (globalThis as { sameDocument?: boolean }).sameDocument)).toBe(true);
      expect(navigations).toBe(1);

      // The rate sparkline has been drawn from successive applied totals.
      expect(await page.locator(`[data-stream="${updates}"] .spark .line`).getAttribute('d')).toMatch(
        /^M[\d.]+,[\d.]+/,
      );
      await expect
        .poll(async () =>
          Number(await page.locator(`[data-stream="${updates}"] [data-field="rate"]`).getAttribute('data-value')),
        )
        .toBeGreaterThanOrEqual(0);

      mkdirSync(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      expect(existsSync(SCREENSHOT)).toBe(true);
      expect(errors).toEqual([]);
    }, 60_000);

    it('shows every partition of a stream: its owner, cursor and what waits in it', async () => {
      const { friends } = setup.streams;
      const card = page.locator(`[data-stream="${friends}"]`);
      const rows = card.locator('table.partitions tbody tr');
      await expect.poll(() => rows.count()).toBe(ALL_PARTITIONS.length);
      await expect
        .poll(() => card.locator('[data-field="partitionSummary"]').textContent())
        .toBe(`${ALL_PARTITIONS.length} of ${ALL_PARTITIONS.length} owned`);
      // The page shows what Redis holds: each partition's lease holder and applied position.
      const status = await streamStatus({
        redis: ctx.redis,
        snapshots: setup.snapshots,
        group: setup.group,
        streams: [friends],
        subjectFields,
      });
      for (const p of status[0]?.partitions ?? []) {
        const cells = rows.nth(p.partition).locator('td');
        expect(await cells.allTextContents()).toEqual([String(p.partition), consumer, p.cursor, '0', '–']);
      }
      expect(status[0]?.partitions.some((p) => p.cursor !== '0-0')).toBe(true);

      // A rebuild holds the stream: entries are read, not applied; they wait in their user's partition, and only there.
      await setup.snapshots.hold(friends);
      try {
        await xaddAll(
          ctx.redis,
          [1, 2, 3, 4].map((i): RawCommand => [friends, 'user_id', 'u5', 'command', 'add', 'friend_id', `f${i}`]),
        );
        const u5 = partitionOfSubject('u5', ALL_PARTITIONS.length);
        await expect.poll(() => rows.nth(u5).locator('td').nth(3).textContent(), { timeout: 10_000 }).toBe('4');
        expect(await rows.nth(u5).getAttribute('data-behind')).toBe('true');
        expect(await rows.nth(u5).locator('td').nth(4).textContent()).toMatch(/^\d+(\.\d)? (ms|s)$/);
        expect(await card.locator('tr[data-behind="true"]').count()).toBe(1);
        expect(await card.locator('[data-field="unapplied"]').textContent()).toBe('4');
        // After the lowest partition cursor too (with those of other partitions' entries read but not yet recorded).
        expect(await shown(friends, 'lag')).toBeGreaterThanOrEqual(4);
        expect(await card.locator('[data-field="state"]').textContent()).toBe('held by a rebuild');
      } finally {
        await setup.snapshots.release(friends);
      }
      await expect.poll(() => card.locator('tr[data-behind="true"]').count(), { timeout: 10_000 }).toBe(0);
      await expect.poll(() => card.locator('[data-field="state"]').textContent()).toBe('up to date');
    }, 30_000);

    it('puts names into the page as text, and shows catch-up and rebuild state', async () => {
      await xaddAll(ctx.redis, [
        [hostile, 'user_id', 'u1', 'command', 'register', 'name', '<b>x</b>'],
        [hostile, 'user_id', 'u2', 'command', 'delete'],
      ]);
      extraStreams.push(hostile);
      const card = page.locator('article.stream').filter({ has: page.locator('h2', { hasText: hostile }) });
      await card.waitFor({ timeout: 10_000 });
      expect(await card.locator('h2').textContent()).toBe(hostile);
      expect(await card.getAttribute('data-stream')).toBe(hostile);
      expect(await page.locator('img').count()).toBe(0);
      expect(await page.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();

      // No processor of the group has started on it: no group, nothing says where its projection will start.
      expect(await card.locator('[data-field="state"]').textContent()).toBe('no group yet');
      expect(await card.locator('[data-field="lag"]').textContent()).toBe('–');
      // The group's processors are listed all the same: they are the group's, not the stream's.
      expect(await card.locator('table.consumers tbody tr').getAttribute('data-consumer')).toBe(consumer);

      // Prepared as a processor does (group, partition cursors), nothing applied yet: two entries to apply, none applied.
      await new PartitionedStreams(ctx.redis, setup.group, ALL_PARTITIONS.length).prepare(
        hostile,
        '0',
        setup.snapshots.cursorKey(hostile),
        (p) => setup.snapshots.cursorKey(hostile, p),
      );
      await expect.poll(() => card.locator('[data-field="state"]').textContent()).toBe('catching up');
      expect(await card.locator('[data-field="lag"]').textContent()).toBe('2');
      expect(await card.locator('[data-field="unapplied"]').textContent()).toBe('2');
      // Outside the event catalog a stream has no subject fields: all its entries are partition 0's, as for the processors.
      expect(await card.locator('tr[data-behind="true"]').count()).toBe(1);
      expect(await card.locator('tr[data-behind="true"]').getAttribute('data-partition')).toBe('0');
      expect(await card.locator('.progress').isVisible()).toBe(true);
      expect(await card.locator('.progress-text').textContent()).toBe('2 to apply · 0.0% applied');

      // A replay holding the stream.
      await setup.snapshots.hold(hostile);
      await expect.poll(() => card.locator('[data-field="state"]').textContent()).toBe('held by a rebuild');
      expect(await card.locator('.progress .bar').getAttribute('data-indeterminate')).toBe('true');
      // The panel for a running rebuild stays hidden while status.json names none.
      expect(await page.locator('#rebuild').isHidden()).toBe(true);
    }, 30_000);

    it('shows a running rebuild in its panel, where the app is given one', async () => {
      const bare = Fastify();
      await bare.register(dashboardRoutes, {
        status: async () => [],
        rebuild: async () => ({ phase: 'building', done: 250, total: 1000, startedAt: Date.now() - 65_000 }),
      });
      try {
        await bare.listen({ port: 0, host: '127.0.0.1' });
        const address = bare.server.address();
        await page.goto(`http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/dashboard`);
        await page.locator('#rebuild').waitFor();
        expect(await page.locator('#rebuild-phase').textContent()).toBe('building');
        expect(await page.locator('#rebuild-text').textContent()).toMatch(
          /^250 of 1,000 entries \(25\.0%\) · running 1 min \d+ s$/,
        );
        expect(await page.locator('#empty').isVisible()).toBe(true);
      } finally {
        await bare.close();
      }
    }, 30_000);

    it('marks the counts of a status that stopped at its scan limit as lower bounds: ≥N', async () => {
      const stream = 'huge_backlog';
      const partition = {
        partition: 0,
        owner: 'c',
        token: '1',
        cursor: '1-0',
        unapplied: 20_000,
        unappliedExact: false,
        oldestUnappliedMs: 5_000,
      };
      const row: StreamStatus = {
        stream,
        group: 'g',
        length: 25_000,
        lastEntryId: undefined,
        lag: 20_000,
        unapplied: 20_000,
        unappliedExact: false,
        oldestUnappliedMs: 5_000,
        backlog: 20_000,
        partitionCount: 1,
        partitions: [partition],
        members: 1,
        consumers: [],
        heldByRebuild: false,
        applied: 10_000,
        skipped: 0,
        deadLettered: 0,
        deadLetters: 0,
        avgBatchMs: undefined,
        lastBatchMs: undefined,
        lastError: undefined,
        lastErrorAt: undefined,
        waiting: undefined,
      };
      const bare = Fastify();
      await bare.register(dashboardRoutes, { status: async () => [row] });
      const fresh = await browser?.newPage({ viewport: { width: 1120, height: 720 } });
      if (!fresh) throw new Error('no browser');
      try {
        await bare.listen({ port: 0, host: '127.0.0.1' });
        const address = bare.server.address();
        await fresh.goto(`http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/dashboard`);
        const card = fresh.locator(`[data-stream="${stream}"]`);
        await card.waitFor();
        expect(await card.locator('[data-field="lag"]').textContent()).toBe('≥20,000');
        expect(await card.locator('[data-field="unapplied"]').textContent()).toBe('≥20,000');
        expect(await card.locator('table.partitions tbody tr td').nth(3).textContent()).toBe('≥20,000');
        expect(await card.locator('.progress-text').textContent()).toBe('≥20,000 to apply · 20.0% applied');
        expect(await fresh.locator('text=unrouted').count()).toBe(0);
      } finally {
        await fresh.close();
        await bare.close();
      }
    }, 30_000);

    it('keeps the last figures, marked stale since when, while status.json fails; honours Retry-After; shows the recent rate at once', async () => {
      const stream = 'rate_stream';
      const state = { applied: 100, fail: false };
      const row = (): StreamStatus => ({
        stream,
        group: 'g',
        length: state.applied,
        lastEntryId: undefined,
        lag: 0,
        unapplied: 0,
        unappliedExact: true,
        oldestUnappliedMs: undefined,
        backlog: 0,
        partitionCount: 1,
        partitions: [
          {
            partition: 0,
            owner: 'c',
            token: '1',
            cursor: '0-0',
            unapplied: 0,
            unappliedExact: true,
            oldestUnappliedMs: undefined,
          },
        ],
        members: 1,
        consumers: [],
        heldByRebuild: false,
        applied: state.applied,
        skipped: 0,
        deadLettered: 0,
        deadLetters: 0,
        avgBatchMs: undefined,
        lastBatchMs: undefined,
        lastError: undefined,
        lastErrorAt: undefined,
        waiting: undefined,
      });
      const bare = Fastify();
      await bare.register(dashboardRoutes, {
        status: async () => {
          if (state.fail) throw new Error('connect ECONNREFUSED');
          return [row()];
        },
      });
      const fresh = await browser?.newPage({ viewport: { width: 1120, height: 720 } });
      if (!fresh) throw new Error('no browser');
      try {
        await bare.listen({ port: 0, host: '127.0.0.1' });
        const address = bare.server.address();
        const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
        // Someone else's page has been polling: the server kept two readings 2 s apart (200 applied in between).
        await fetch(`${url}/dashboard/status.json`);
        await sleep(2_100);
        state.applied = 300;
        await fetch(`${url}/dashboard/status.json`);

        // A page opened now shows a rate with its first figures (today: "–" until a second reading, then 0/s).
        await fresh.goto(`${url}/dashboard`);
        const rate = fresh.locator(`[data-stream="${stream}"] [data-field="rate"]`);
        await rate.waitFor();
        expect(Number(await rate.getAttribute('data-value'))).toBeGreaterThan(50);
        expect(await fresh.locator('#stale').isHidden()).toBe(true);
        const applied = fresh.locator(`[data-stream="${stream}"] [data-field="applied"]`);
        expect(await applied.textContent()).toBe('300');

        // Redis goes away: the figures stay, marked stale with the time of the last reading.
        const polls: number[] = [];
        fresh.on('request', (request) => {
          if (request.url().includes('/dashboard/status.json')) polls.push(Date.now());
        });
        state.fail = true;
        const notice = fresh.locator('#stale');
        await notice.waitFor({ timeout: 5_000 });
        expect(await notice.textContent()).toMatch(
          /^Stale: these are the figures of .+ \(\d+(\.\d)? s ago\)\. Redis is not reachable \(since .+\); retrying\. Retrying in 2\.0 s\.$/,
        );
        expect(Number(await notice.getAttribute('data-since'))).toBeGreaterThan(0);
        expect(await fresh.locator('body').getAttribute('data-stale')).toBe('true');
        expect(await fresh.locator('#connection').getAttribute('data-state')).toBe('stale');
        expect(await applied.textContent()).toBe('300');
        expect(await fresh.locator(`[data-stream="${stream}"]`).count()).toBe(1);

        // 503 with Retry-After: 2 → the page asks every 2 s, not every second.
        const from = polls.length;
        await sleep(4_500);
        const during = polls.slice(from);
        expect(during.length).toBeLessThanOrEqual(3);
        for (let i = 1; i < during.length; i++)
          expect((during[i] ?? 0) - (during[i - 1] ?? 0)).toBeGreaterThanOrEqual(1_900);

        // 429 with Retry-After: 5 → one poll in the next 4 s.
        state.fail = false;
        await expect.poll(() => notice.isHidden(), { timeout: 5_000 }).toBe(true);
        await fresh.route('**/dashboard/status.json*', (route) =>
          route.fulfill({
            status: 429,
            headers: { 'retry-after': '5', 'content-type': 'application/json' },
            body: JSON.stringify({
              statusCode: 429,
              code: 'RS_RATE_LIMITED',
              error: 'Too Many Requests',
              message: 'Rate limit exceeded.',
            }),
          }),
        );
        await notice.waitFor({ timeout: 5_000 });
        const limitedFrom = polls.length;
        await sleep(4_000);
        expect(polls.length - limitedFrom).toBeLessThanOrEqual(1);
        expect(await notice.textContent()).toMatch(/Rate limit exceeded\. Retrying in 5\.0 s\.$/);
        await fresh.unroute('**/dashboard/status.json*');
        await expect.poll(() => notice.isHidden(), { timeout: 8_000 }).toBe(true);
      } finally {
        await fresh.close();
        await bare.close();
      }
    }, 40_000);
  },
);
