import { describe, expect, it } from 'vitest';
import { streamStatus, type StatusOptions, type StreamProcessor, type StreamStatus } from '@redsource/processor';
import { compareEntryIds } from '@redsource/snapshot-store';
import { partitionKeys } from '../src/partitions/keys.ts';
import { PartitionedStreams } from '../src/partitions/streams.ts';
import { partitionOfSubject } from '../src/partitions/subject.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';

const ctx = useTestRedis();
const P = 4;

type ReadOptions = Pick<StatusOptions, 'partitions' | 'scanLimit'>;

/** The file's streams on their own names, read with `streamStatus` as the app does (the catalog's subject fields). */
function scenario(partitions = P) {
  const setup = isolatedProfileSetup(ctx.redis);
  const streams = [setup.streams.updates, setup.streams.activity, setup.streams.friends];
  const read = async (options: ReadOptions = { partitions }): Promise<StreamStatus[]> =>
    streamStatus({
      redis: ctx.redis,
      snapshots: setup.snapshots,
      group: setup.group,
      streams,
      subjectFields: (stream) => setup.eventStore.catalog.subjectFields(stream),
      ...options,
    });
  const row = async (stream: string, options?: ReadOptions): Promise<StreamStatus> => {
    const found = (await read(options)).find((r) => r.stream === stream);
    if (!found) throw new Error(`no row for ${stream}`);
    return found;
  };
  /** The group, the partition count and every partition's cursor, as a processor sets them at its start (from the beginning); nothing applied. */
  const prepare = (stream: string) =>
    new PartitionedStreams(ctx.redis, setup.group, partitions).prepare(
      stream,
      '0',
      setup.snapshots.cursorKey(stream),
      (p) => setup.snapshots.cursorKey(stream, p),
    );
  const started = async (settings: Parameters<typeof setup.processor>[1]): Promise<StreamProcessor> => {
    const processor = ctx.track(
      setup.processor(ctx.server.client(), {
        partitions,
        heartbeatMs: 50,
        rebalanceIntervalMs: 50,
        leaseMs: 1_000,
        ...settings,
      }),
    );
    await processor.start();
    return processor;
  };
  return { setup, streams, read, row, prepare, started };
}

/** Registrations of `users` (round-robin) under explicit ids `agoMs` in the past: their age is known. */
async function register(
  stream: string,
  users: readonly string[],
  count: number,
  agoMs = 60_000,
): Promise<{ id: string; user: string }[]> {
  const base = Date.now() - agoMs;
  const added: { id: string; user: string }[] = [];
  const pipeline = ctx.redis.pipeline();
  for (let i = 0; i < count; i++) {
    const user = users[i % users.length] as string;
    const id = `${base}-${i}`;
    pipeline.xadd(stream, id, 'user_id', user, 'command', 'register', 'name', `Name ${user}`);
    added.push({ id, user });
  }
  for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
  return added;
}

const users = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'];
type Entry = { id: string; user: string };
/** Per partition, the ids of its entries after `cursors[p]`. */
const waitingIn = (entries: readonly Entry[], cursors: readonly string[]) => {
  const out = cursors.map(() => [] as string[]);
  for (const e of entries) {
    const p = partitionOfSubject(e.user, cursors.length);
    if (compareEntryIds(e.id, cursors[p] ?? '0-0') > 0) out[p]?.push(e.id);
  }
  return out;
};
/** Entries after the lowest of `cursors`. */
const afterLowest = (entries: readonly Entry[], cursors: readonly string[]) => {
  const lowest = cursors.reduce((min, c) => (compareEntryIds(c, min) < 0 ? c : min));
  return entries.filter((e) => compareEntryIds(e.id, lowest) > 0).length;
};

describe('streamStatus on partitioned processing', () => {
  it('counts what waits in each partition in the source stream: its entries after its cursor, with their age; lag from the lowest cursor', async () => {
    const s = scenario();
    const stream = s.setup.streams.updates;
    const entries = await register(stream, users, 12);
    const all = waitingIn(entries, ['0-0', '0-0', '0-0', '0-0']);
    expect(all.filter((ids) => ids.length > 0).length, 'the users spread over several partitions').toBeGreaterThan(1);

    // No group on the stream yet: nothing says where the projection will start.
    let row = await s.row(stream);
    expect(row).toMatchObject({
      length: 12,
      lastEntryId: entries[11]?.id,
      lag: undefined,
      backlog: undefined,
      unapplied: 0,
      unappliedExact: true,
      partitionCount: P,
    });
    expect(row.partitions.map((p) => p.unapplied)).toEqual([0, 0, 0, 0]);

    // Prepared as a processor does, nothing applied: every entry waits in its subject's partition.
    await s.prepare(stream);
    row = await s.row(stream);
    expect(row).toMatchObject({ lag: 12, unapplied: 12, backlog: 12, unappliedExact: true });
    expect(row.oldestUnappliedMs).toBeGreaterThanOrEqual(59_000);
    expect(row.oldestUnappliedMs).toBeLessThan(70_000);
    expect(row.partitions.map((p) => p.partition)).toEqual([0, 1, 2, 3]);
    expect(row.partitions.map((p) => p.unapplied)).toEqual(all.map((ids) => ids.length));
    for (const p of row.partitions) {
      expect(p).toMatchObject({ owner: undefined, token: undefined, cursor: '0-0', unappliedExact: true });
      if (p.unapplied === 0) expect(p.oldestUnappliedMs).toBeUndefined();
      else expect(p.oldestUnappliedMs).toBeGreaterThanOrEqual(59_000);
    }
    expect(row.consumers).toEqual([]);
    expect(row.members).toBe(0);

    // Cursors anywhere in the stream, also at another partition's entry (the position its holder read through):
    // each partition counts only its own entries after its own cursor.
    const busy = all.findIndex((ids) => ids.length >= 2);
    const cursors = [0, 1, 2, 3].map((p) => (p === busy ? (all[p]?.[0] ?? '0-0') : (entries[7]?.id ?? '')));
    for (const [p, cursor] of cursors.entries()) await ctx.redis.set(s.setup.snapshots.cursorKey(stream, p), cursor);
    const expected = waitingIn(entries, cursors);
    row = await s.row(stream);
    expect(row.partitions.map((p) => p.cursor)).toEqual(cursors);
    expect(row.partitions.map((p) => p.unapplied)).toEqual(expected.map((ids) => ids.length));
    expect(row).toMatchObject({
      lag: afterLowest(entries, cursors),
      unapplied: expected.flat().length,
      backlog: expected.flat().length,
    });
    expect(row.lag).toBeGreaterThan(row.unapplied);
  });

  it('shows the holder of every partition and its cursor; nothing unapplied once applied', async () => {
    const s = scenario();
    const stream = s.setup.streams.updates;
    const entries = await register(stream, users, 12);
    const processor = await s.started({ consumer: 'p1' });
    expect(
      await eventually(async () => {
        const r = await s.row(stream);
        return r.applied === 12 && r.consumers[0]?.stats?.applied === 12;
      }, 15_000),
    ).toBe(true);

    const row = await s.row(stream);
    expect(row).toMatchObject({
      unapplied: 0,
      backlog: 0,
      oldestUnappliedMs: undefined,
      unappliedExact: true,
      members: 1,
      heldByRebuild: false,
    });
    const cursors = row.partitions.map((p) => p.cursor);
    expect(row.lag).toBe(afterLowest(entries, cursors));
    // The leases of this stream's partitions (the processor holds those of the other streams too, with other tokens).
    const tokens = new Map(processor.partitions.filter((p) => p.stream === stream).map((p) => [p.partition, p.token]));
    expect(tokens.size).toBe(P);
    const own = waitingIn(entries, ['0-0', '0-0', '0-0', '0-0']);
    for (const p of row.partitions) {
      expect(p).toMatchObject({ owner: 'p1', token: tokens.get(p.partition), unapplied: 0 });
      // At or past the partition's last entry (maybe at another partition's: where its holder read through).
      expect(compareEntryIds(p.cursor, own[p.partition]?.at(-1) ?? '0-0')).toBeGreaterThanOrEqual(0);
    }
    expect(row.consumers).toEqual([
      expect.objectContaining({
        name: 'p1',
        member: true,
        partitions: [0, 1, 2, 3],
        heartbeatAgeMs: expect.any(Number),
        stats: expect.objectContaining({ applied: 12 }),
      }),
    ]);

    // Stopped: it hands its partitions back and leaves; its last report stays.
    await processor.stop();
    const after = await s.row(stream);
    expect(after.partitions.map((p) => p.owner)).toEqual([undefined, undefined, undefined, undefined]);
    expect(after.members).toBe(0);
    expect(after.consumers).toEqual([expect.objectContaining({ name: 'p1', member: false, partitions: [] })]);
    // Idle partitions' cursors may have moved up to the read position since (an empty read writes them): not any more now.
    const stopped = after.partitions.map((p) => p.cursor);

    // New entries of one user while no processor runs: exactly those wait, in that user's partition.
    const more = await register(stream, ['u1'], 3, 1_000);
    const u1 = partitionOfSubject('u1', P);
    const waiting = await s.row(stream);
    expect(waiting.partitions.map((p) => p.unapplied)).toEqual([0, 1, 2, 3].map((p) => (p === u1 ? 3 : 0)));
    expect(waiting).toMatchObject({ unapplied: 3, backlog: 3, lag: afterLowest([...entries, ...more], stopped) });
    expect(waiting.partitions.map((p) => p.cursor)).toEqual(stopped);
    expect(waiting.partitions[u1]?.oldestUnappliedMs).toBeGreaterThanOrEqual(900);
    expect(waiting.partitions[u1]?.oldestUnappliedMs).toBeLessThan(30_000);
  });

  it("shows two processors sharing the streams' partitions, each row with the ones each holds of its stream", async () => {
    const s = scenario();
    const a = await s.started({ consumer: 'a' });
    const b = await s.started({ consumer: 'b' });
    // 3 streams x 4 partitions: 12 units, 6 each.
    expect(await eventually(async () => a.partitions.length === 6 && b.partitions.length === 6, 10_000)).toBe(true);
    const held = (p: StreamProcessor, stream: string) =>
      p.partitions.filter((x) => x.stream === stream).map((x) => x.partition);
    const tokenOf = (stream: string, partition: number) =>
      [a, b].flatMap((p) => p.partitions).find((x) => x.stream === stream && x.partition === partition)?.token;
    const consistent = await eventually(async () => {
      const rows = await s.read();
      return rows.every(
        (row) =>
          row.consumers.find((c) => c.name === 'a')?.partitions.join() === held(a, row.stream).join() &&
          row.consumers.find((c) => c.name === 'b')?.partitions.join() === held(b, row.stream).join(),
      );
    }, 5_000);
    expect(consistent).toBe(true);
    const rows = await s.read();
    expect(rows.map((r) => r.stream).sort()).toEqual([...s.streams].sort());
    for (const row of rows) {
      expect(row.members).toBe(2);
      expect(row.consumers.map((c) => [c.name, c.member])).toEqual([
        ['a', true],
        ['b', true],
      ]);
      // Each partition's lease is that stream's own: its holder and token.
      for (const p of row.partitions) {
        expect(p.owner, `${row.stream} ${p.partition}`).toBe(held(a, row.stream).includes(p.partition) ? 'a' : 'b');
        expect(p.token, `${row.stream} ${p.partition}`).toBe(tokenOf(row.stream, p.partition));
      }
    }
    // Every unit held by one of them, 6 each over the rows.
    for (const name of ['a', 'b'])
      expect(rows.reduce((n, row) => n + (row.consumers.find((c) => c.name === name)?.partitions.length ?? 0), 0)).toBe(
        6,
      );
  });

  it('reads the partition count the stream is prepared with, whatever the caller configured', async () => {
    const s = scenario();
    const [prepared, other] = [s.setup.streams.updates, s.setup.streams.friends];
    const entries = await register(prepared, users, 6);
    await s.prepare(prepared);
    expect(await ctx.redis.get(partitionKeys.count(prepared, s.setup.group))).toBe(String(P));
    const rows = await s.read({ partitions: 6 });
    const preparedRow = rows.find((r) => r.stream === prepared);
    expect(preparedRow?.partitionCount).toBe(P);
    // Each entry counted in its partition of P, not of 6.
    expect(preparedRow?.partitions.map((p) => p.unapplied)).toEqual(
      waitingIn(entries, ['0-0', '0-0', '0-0', '0-0']).map((ids) => ids.length),
    );
    expect(rows.find((r) => r.stream === other)?.partitionCount).toBe(6);
    // Nothing configured and nothing stored: the processor's default.
    expect((await s.read({})).find((r) => r.stream === other)?.partitions).toHaveLength(12);
  });

  it('counts at most scanLimit entries after the lowest cursor, a page at a time, and then says the counts are lower bounds', async () => {
    const s = scenario();
    const stream = s.setup.streams.updates;
    // More than two XRANGE pages.
    const entries = await register(stream, users, 12_001);
    await s.prepare(stream);
    const all = waitingIn(entries, ['0-0', '0-0', '0-0', '0-0']).map((ids) => ids.length);

    let row = await s.row(stream);
    expect(row).toMatchObject({ lag: 12_001, unapplied: 12_001, unappliedExact: true });
    expect(row.partitions.map((p) => [p.unapplied, p.unappliedExact])).toEqual(all.map((n) => [n, true]));
    expect(row.oldestUnappliedMs).toBeGreaterThanOrEqual(59_000);
    // Exactly at the limit: still exact.
    expect(await s.row(stream, { partitions: P, scanLimit: 12_001 })).toMatchObject({
      lag: 12_001,
      unappliedExact: true,
    });

    row = await s.row(stream, { partitions: P, scanLimit: 10_000 });
    const counted = waitingIn(entries.slice(0, 10_000), ['0-0', '0-0', '0-0', '0-0']).map((ids) => ids.length);
    expect(row).toMatchObject({ lag: 10_000, unapplied: 10_000, backlog: 10_000, unappliedExact: false });
    expect(row.partitions.map((p) => [p.unapplied, p.unappliedExact])).toEqual(counted.map((n) => [n, false]));

    // The scan starts at the lowest cursor: cursors past most of the stream leave little to read.
    for (let p = 0; p < P; p++) await ctx.redis.set(s.setup.snapshots.cursorKey(stream, p), entries[11_990]?.id ?? '');
    row = await s.row(stream, { partitions: P, scanLimit: 100 });
    expect(row).toMatchObject({ lag: 10, unapplied: 10, unappliedExact: true });
  });

  it("shows the stream's pre-partition cursor for partitions that have none yet", async () => {
    const s = scenario();
    const stream = s.setup.streams.friends;
    const entries = await register(stream, users, 6);
    // Processed before partitions: the group and one cursor for the stream, no partition cursor yet.
    await ctx.redis.xgroup('CREATE', stream, s.setup.group, '0');
    await ctx.redis.set(s.setup.snapshots.cursorKey(stream), entries[3]?.id ?? '');
    const row = await s.row(stream);
    expect(row.partitions.map((p) => p.cursor)).toEqual([0, 1, 2, 3].map(() => entries[3]?.id));
    expect(row).toMatchObject({ lag: 2, unapplied: 2 });
  });

  it('says when a rebuild holds the stream', async () => {
    const s = scenario();
    const stream = s.setup.streams.friends;
    expect((await s.row(stream)).heldByRebuild).toBe(false);
    await s.setup.snapshots.hold(stream);
    expect((await s.row(stream)).heldByRebuild).toBe(true);
    await s.setup.snapshots.release(stream);
    expect((await s.row(stream)).heldByRebuild).toBe(false);
  });
});
