import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { streamStatus, type StreamProcessor, type StreamStatus } from '@redsource/processor';
import { renderStatus } from '../src/cli/status.ts';
import { ROOT } from '../../../test/support/cli.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';
import { xaddAll, type RawCommand } from '../../../test/support/model.ts';

const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const PARTITIONS = 4;
const CONSUMER = 'status-cli-consumer';

const ctx = useTestRedis();
let setup: ReturnType<typeof isolatedProfileSetup>;
let processor: StreamProcessor | undefined;

/** The partition of a subject (the processors' function), computed here on its own. */
const partitionOf = (subject: string) =>
  Number.parseInt(createHash('sha1').update(subject).digest('hex').slice(0, 8), 16) % PARTITIONS;

/** The status of `streams` as the CLI reads it (the catalog's subject fields, REDSOURCE_PARTITIONS). */
const readStatus = (streams: readonly string[], scanLimit?: number): Promise<StreamStatus[]> =>
  streamStatus({
    redis: ctx.redis,
    snapshots: setup.snapshots,
    group: setup.group,
    streams,
    partitions: PARTITIONS,
    subjectFields: (stream) => setup.eventStore.catalog.subjectFields(stream),
    scanLimit,
  });

/** `redsource <args>` on this file's names, stdout apart from stderr (where the start line and logs go). */
function cli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = {
    ...process.env,
    REDIS_URL: ctx.server.url,
    STREAM_UPDATES: setup.streams.updates,
    STREAM_ACTIVITY: setup.streams.activity,
    STREAM_FRIENDS: setup.streams.friends,
    SNAPSHOT_PREFIX: setup.keyPrefix,
    REDSOURCE_GROUP: setup.group,
    REDSOURCE_PARTITIONS: String(PARTITIONS),
    LOG_LEVEL: 'warn',
  };
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

/** The body rows of the cli-table3 table that follows `title` in `text`, as trimmed cells. */
function tableAfter(text: string, title: string): string[][] {
  const lines = text.split('\n');
  const start = lines.indexOf(title);
  if (start < 0) throw new Error(`no line '${title}' in:\n${text}`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 1)) {
    if (!/^[│┌├└]/.test(line)) break;
    if (line.startsWith('│'))
      rows.push(
        line
          .split('│')
          .slice(1, -1)
          .map((c) => c.trim()),
      );
  }
  return rows.slice(1);
}

describe('redsource status', () => {
  beforeAll(async () => {
    setup = isolatedProfileSetup(ctx.redis);
    const { updates, friends } = setup.streams;
    await xaddAll(ctx.redis, [
      ...Array.from({ length: 8 }, (_, i): RawCommand => [
        updates,
        'user_id',
        `u${i}`,
        'command',
        'register',
        'name',
        `User ${i}`,
      ]),
      [friends, 'user_id', 'u1', 'command', 'add', 'friend_id', 'u2'],
    ]);
    processor = setup.processor(ctx.server.client(), {
      consumer: CONSUMER,
      partitions: PARTITIONS,
      heartbeatMs: 50,
      rebalanceIntervalMs: 50,
    });
    await processor.start();
    const read = () => readStatus([updates, friends]);
    expect(
      await eventually(
        async () =>
          (await read()).every((r) => r.applied === r.length && r.partitions.every((p) => p.owner === CONSUMER)),
        15_000,
      ),
    ).toBe(true);
    // A rebuild holds friends: new entries are read and wait, applied by nobody, in u7's partition.
    await setup.snapshots.hold(friends);
    await xaddAll(
      ctx.redis,
      [1, 2, 3].map((i): RawCommand => [friends, 'user_id', 'u7', 'command', 'add', 'friend_id', `g${i}`]),
    );
    expect(
      await eventually(async () => (await read()).find((r) => r.stream === friends)?.unapplied === 3, 10_000),
    ).toBe(true);
  }, 60_000);

  afterAll(async () => {
    await setup.snapshots.release(setup.streams.friends);
    await processor?.stop();
  });

  it('--json prints the whole status: every stream with its partitions, owners, cursors and what waits where', async () => {
    const run = await cli(['status', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const rows = JSON.parse(run.stdout) as StreamStatus[];
    expect(rows.map((r) => r.stream)).toEqual([setup.streams.updates, setup.streams.activity, setup.streams.friends]);
    const friends = rows.find((r) => r.stream === setup.streams.friends);
    const u7 = partitionOf('u7');
    expect(friends).toMatchObject({
      group: setup.group,
      length: 4,
      unapplied: 3,
      unappliedExact: true,
      backlog: 3,
      heldByRebuild: true,
      partitionCount: PARTITIONS,
      members: 1,
    });
    // Not applied in their partition, so after the lowest partition cursor too.
    expect(friends?.lag).toBeGreaterThanOrEqual(3);
    expect(friends).not.toHaveProperty('routedTo');
    expect(friends).not.toHaveProperty('oldestUnroutedMs');
    expect(friends?.partitions.map((p) => [p.partition, p.owner, p.unapplied])).toEqual(
      [0, 1, 2, 3].map((p) => [p, CONSUMER, p === u7 ? 3 : 0]),
    );
    expect(friends?.partitions[u7]?.oldestUnappliedMs).toBeGreaterThanOrEqual(0);
    expect(friends?.consumers).toEqual([
      expect.objectContaining({ name: CONSUMER, member: true, partitions: [0, 1, 2, 3] }),
    ]);
    // The same as the library reads from Redis (less what ages between the two reads).
    const direct = await readStatus([setup.streams.updates]);
    const updates = rows[0];
    expect(
      updates?.partitions.map(({ partition, owner, token, cursor, unapplied }) => ({
        partition,
        owner,
        token,
        cursor,
        unapplied,
      })),
    ).toEqual(
      direct[0]?.partitions.map(({ partition, owner, token, cursor, unapplied }) => ({
        partition,
        owner,
        token,
        cursor,
        unapplied,
      })),
    );
    expect(updates?.partitions.some((p) => p.cursor !== '0-0')).toBe(true);
  }, 30_000);

  it("the table shows each stream, then each stream's partitions (owner, cursor, unapplied), then the group's processors", async () => {
    const run = await cli(['status']);
    expect(run.code, run.stderr).toBe(0);
    const text = run.stdout;
    expect(text).toMatch(new RegExp(`^group ${setup.group}, 1 live member$`, 'm'));
    const streams = tableAfter(text, `group ${setup.group}, 1 live member`);
    const friendsLine = streams.find((r) => r[0] === setup.streams.friends);
    const status = await readStatus([setup.streams.friends]);
    // stream, length, lag, unapplied, oldest unapplied, applied, ..., partitions owned, ..., state
    expect(text).not.toContain('unrouted');
    expect(friendsLine?.slice(0, 4)).toEqual([setup.streams.friends, '4', String(status[0]?.lag), '3']);
    expect(friendsLine?.[4]).toMatch(/^\d+(\.\d)?m?s$/);
    expect(friendsLine?.[9]).toBe(`${PARTITIONS}/${PARTITIONS}`);
    expect(friendsLine?.at(-1)).toBe('held by a rebuild');
    expect(text).not.toContain('≥');

    const partitions = tableAfter(text, `${setup.streams.friends}: ${PARTITIONS} partitions`);
    const u7 = partitionOf('u7');
    expect(partitions.map((r) => r.slice(0, 5))).toEqual(
      (status[0]?.partitions ?? []).map((p) => [
        String(p.partition),
        CONSUMER,
        p.token ?? '',
        p.cursor,
        p.partition === u7 ? '3' : '0',
      ]),
    );
    expect(partitions[u7]?.[5]).toMatch(/^\d+(\.\d)?m?s$/);
    expect(tableAfter(text, `${setup.streams.activity}: ${PARTITIONS} partitions`)).toHaveLength(PARTITIONS);

    // The last table: the group's processors, each with the partitions it holds of each stream (a
    // lease covers one partition of one stream): alone in the group, this one holds them all.
    const consumers = tableAfter(`processors\n${text.slice(text.lastIndexOf('\n┌') + 1)}`, 'processors');
    const { updates, activity, friends } = setup.streams;
    expect(consumers.map((r) => r.slice(0, 3))).toEqual([
      [CONSUMER, 'yes', `${updates}:0-3 ${activity}:0-3 ${friends}:0-3`],
    ]);
  }, 30_000);

  it('marks the counts of a status that stopped at its scan limit as lower bounds: ≥N', async () => {
    const { friends } = setup.streams;
    // One entry read per stream: friends has at least the 3 held ones after its lowest cursor.
    const rows = await readStatus([friends], 1);
    expect(rows[0]).toMatchObject({ lag: 1, unappliedExact: false });
    const text = renderStatus(rows, setup.group);
    const line = tableAfter(text, `group ${setup.group}, 1 live member`).find((r) => r[0] === friends);
    expect(line?.slice(2, 4)).toEqual(['≥1', `≥${rows[0]?.unapplied ?? ''}`]);
    expect(text).toContain(`${friends}: ≥N: at least N`);
    const partitions = tableAfter(text, `${friends}: ${PARTITIONS} partitions`);
    expect(partitions.map((r) => r[4])).toEqual((rows[0]?.partitions ?? []).map((p) => `≥${p.unapplied}`));
  });
});
