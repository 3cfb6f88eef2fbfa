import { describe, expect, it } from 'vitest';
import { streamStatus, type StreamProcessor, type StreamStatus } from '@redsource/processor';
import { partitionKeys } from '../src/partitions/keys.ts';
import { PartitionRouter } from '../src/partitions/router.ts';
import { partitionOfSubject } from '../src/partitions/subject.ts';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';

const ctx = useTestRedis();
const P = 4;

/** The file's streams on their own names, read with `streamStatus` as the app does; a router that routes without applying. */
function scenario(partitions = P) {
  const setup = isolatedProfileSetup(ctx.redis);
  const streams = [setup.streams.updates, setup.streams.activity, setup.streams.friends];
  const read = async (options: { partitions?: number } = { partitions }): Promise<StreamStatus[]> =>
    streamStatus({ redis: ctx.redis, snapshots: setup.snapshots, group: setup.group, streams, ...options });
  const row = async (stream: string, options?: { partitions?: number }): Promise<StreamStatus> => {
    const found = (await read(options)).find((r) => r.stream === stream);
    if (!found) throw new Error(`no row for ${stream}`);
    return found;
  };
  const router = new PartitionRouter(ctx.redis, setup.group, partitions, (stream) => setup.eventStore.catalog.subjectFields(stream));
  /** Creates the source group as a processor does at its start (from the beginning). */
  const group = (stream: string) => ctx.redis.xgroup('CREATE', stream, setup.group, '0', 'MKSTREAM');
  const started = async (settings: Parameters<typeof setup.processor>[1]): Promise<StreamProcessor> => {
    const processor = ctx.track(setup.processor(ctx.server.client(), { partitions, heartbeatMs: 50, rebalanceIntervalMs: 50, leaseMs: 1_000, ...settings }));
    await processor.start();
    return processor;
  };
  return { setup, streams, read, row, router, group, started };
}

/** Registrations of `users` (round-robin) under explicit ids `agoMs` in the past: their age is known. */
async function register(stream: string, users: readonly string[], count: number, agoMs = 60_000): Promise<{ id: string; user: string }[]> {
  const base = Date.now() - agoMs;
  const added: { id: string; user: string }[] = [];
  for (let i = 0; i < count; i++) {
    const user = users[i % users.length] as string;
    const id = `${base}-${i}`;
    await ctx.redis.xadd(stream, id, 'user_id', user, 'command', 'register', 'name', `Name ${user}`);
    added.push({ id, user });
  }
  return added;
}

const users = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'];
const byPartition = (entries: readonly { id: string; user: string }[], partitions = P) => {
  const out = Array.from({ length: partitions }, () => [] as string[]);
  for (const e of entries) out[partitionOfSubject(e.user, partitions)]?.push(e.id);
  return out;
};

describe('streamStatus on partitioned processing', () => {
  it('says where entries wait: not routed (lag), routed to a partition and not applied (unapplied), with their age', async () => {
    const s = scenario();
    const stream = s.setup.streams.updates;
    const entries = await register(stream, users, 12);
    const expected = byPartition(entries);
    expect(expected.filter((ids) => ids.length > 0).length, 'the users spread over several partitions').toBeGreaterThan(1);

    // No group on the stream yet: nothing can say how much of it will be routed.
    let row = await s.row(stream);
    expect(row).toMatchObject({ length: 12, lastEntryId: entries[11]?.id, lag: undefined, routedTo: undefined, backlog: undefined, unapplied: 0, partitionCount: P });

    await s.group(stream);
    row = await s.row(stream);
    expect(row).toMatchObject({ lag: 12, routedTo: '0-0', unapplied: 0, backlog: 12, oldestUnappliedMs: undefined });
    expect(row.oldestUnroutedMs).toBeGreaterThanOrEqual(59_000);
    expect(row.oldestUnroutedMs).toBeLessThan(70_000);

    expect((await s.router.route(stream)).routed).toBe(12);
    row = await s.row(stream);
    expect(row).toMatchObject({ lag: 0, routedTo: entries[11]?.id, oldestUnroutedMs: undefined, unapplied: 12, backlog: 12 });
    expect(row.oldestUnappliedMs).toBeGreaterThanOrEqual(59_000);
    expect(row.partitions.map((p) => p.partition)).toEqual([0, 1, 2, 3]);
    // Each partition holds exactly its subjects' entries; no processor holds any of them.
    expect(row.partitions.map((p) => p.unapplied)).toEqual(expected.map((ids) => ids.length));
    for (const p of row.partitions) {
      expect(p).toMatchObject({ owner: undefined, token: undefined, cursor: '0-0' });
      if (p.unapplied === 0) expect(p.oldestUnappliedMs).toBeUndefined();
      else expect(p.oldestUnappliedMs).toBeGreaterThanOrEqual(59_000);
    }
    expect(row.consumers).toEqual([]);
    expect(row.members).toBe(0);
  });

  it('shows the holder of every partition and its cursor; nothing unapplied once applied, though each cursor entry stays in its partition stream', async () => {
    const s = scenario();
    const stream = s.setup.streams.updates;
    const entries = await register(stream, users, 12);
    const expected = byPartition(entries);
    const processor = await s.started({ consumer: 'p1' });
    expect(await eventually(async () => {
      const r = await s.row(stream);
      return r.applied === 12 && r.consumers[0]?.stats?.applied === 12;
    }, 15_000)).toBe(true);

    const row = await s.row(stream);
    expect(row).toMatchObject({ lag: 0, unapplied: 0, backlog: 0, oldestUnappliedMs: undefined, members: 1, heldByRebuild: false });
    const tokens = new Map(processor.partitions.map((p) => [p.partition, p.token]));
    for (const p of row.partitions) {
      const ids = expected[p.partition] ?? [];
      expect(p).toMatchObject({ owner: 'p1', token: tokens.get(p.partition), cursor: ids[ids.length - 1] ?? '0-0', unapplied: 0 });
      // The apply script trims below the cursor: the cursor's own entry is still there, and is not unapplied.
      expect(await ctx.redis.xlen(partitionKeys.stream(stream, s.setup.group, p.partition))).toBe(ids.length > 0 ? 1 : 0);
    }
    expect(row.consumers).toEqual([
      expect.objectContaining({ name: 'p1', member: true, partitions: [0, 1, 2, 3], heartbeatAgeMs: expect.any(Number), stats: expect.objectContaining({ applied: 12 }) }),
    ]);

    // Stopped: it hands its partitions back and leaves; its last report stays.
    await processor.stop();
    const after = await s.row(stream);
    expect(after.partitions.map((p) => p.owner)).toEqual([undefined, undefined, undefined, undefined]);
    expect(after.members).toBe(0);
    expect(after.consumers).toEqual([expect.objectContaining({ name: 'p1', member: false, partitions: [] })]);

    // New entries of one user, routed while no processor runs: exactly those wait, in that user's partition.
    const more = await register(stream, ['u1'], 3, 1_000);
    const u1 = partitionOfSubject('u1', P);
    await s.router.route(stream);
    const waiting = await s.row(stream);
    expect(await ctx.redis.xlen(partitionKeys.stream(stream, s.setup.group, u1))).toBe(4);
    expect(waiting.partitions.map((p) => p.unapplied)).toEqual([0, 1, 2, 3].map((p) => (p === u1 ? 3 : 0)));
    expect(waiting).toMatchObject({ lag: 0, unapplied: 3, backlog: 3 });
    expect(waiting.partitions[u1]?.cursor).toBe((expected[u1] ?? []).at(-1) ?? '0-0');
    expect(waiting.partitions[u1]?.oldestUnappliedMs).toBeGreaterThanOrEqual(900);
    expect(more).toHaveLength(3);
  });

  it('shows two processors sharing the partitions, each with the ones it holds', async () => {
    const s = scenario();
    const stream = s.setup.streams.activity;
    const a = await s.started({ consumer: 'a' });
    const b = await s.started({ consumer: 'b' });
    expect(await eventually(async () => a.partitions.length === 2 && b.partitions.length === 2, 10_000)).toBe(true);
    const held = (p: StreamProcessor) => p.partitions.map((x) => x.partition);
    const consistent = await eventually(async () => {
      const row = await s.row(stream);
      return row.consumers.find((c) => c.name === 'a')?.partitions.join() === held(a).join() && row.consumers.find((c) => c.name === 'b')?.partitions.join() === held(b).join();
    }, 5_000);
    expect(consistent).toBe(true);
    const row = await s.row(stream);
    expect(row.members).toBe(2);
    expect(row.consumers.map((c) => [c.name, c.member])).toEqual([['a', true], ['b', true]]);
    for (const p of row.partitions) expect(p.owner).toBe(held(a).includes(p.partition) ? 'a' : 'b');
    // The same leases in every stream's row: a lease covers its partition of every stream.
    for (const other of await s.read()) expect(other.partitions.map((p) => p.owner)).toEqual(row.partitions.map((p) => p.owner));
  });

  it('reads the partition count the stream is routed with, whatever the caller configured', async () => {
    const s = scenario();
    const [routed, unrouted] = [s.setup.streams.updates, s.setup.streams.friends];
    await register(routed, users, 3);
    await s.group(routed);
    await s.router.route(routed);
    expect(await ctx.redis.get(partitionKeys.count(routed, s.setup.group))).toBe(String(P));
    const rows = await s.read({ partitions: 6 });
    const routedRow = rows.find((r) => r.stream === routed);
    expect(routedRow?.partitionCount).toBe(P);
    expect(routedRow?.partitions).toHaveLength(P);
    expect(rows.find((r) => r.stream === unrouted)?.partitionCount).toBe(6);
    // Nothing configured and nothing stored: the processor's default.
    expect((await s.read({})).find((r) => r.stream === unrouted)?.partitions).toHaveLength(12);
  });

  it('counts exactly after a cursor moved without a trim (a rebuild switch-over), and where XINFO cannot tell the lag', async () => {
    const s = scenario();
    const stream = s.setup.streams.updates;
    const entries = await register(stream, ['u1'], 10);
    await s.group(stream);
    await s.router.route(stream);
    const p = partitionOfSubject('u1', P);
    // The switch-over sets a partition's cursor forward and trims nothing.
    await ctx.redis.set(s.setup.snapshots.cursorKey(stream, p), entries[3]?.id ?? '');
    let row = await s.row(stream);
    expect(row.partitions[p]).toMatchObject({ cursor: entries[3]?.id, unapplied: 6 });
    expect(row.unapplied).toBe(6);
    expect(row.partitions[p]?.oldestUnappliedMs).toBeGreaterThanOrEqual(59_000);

    // An entry deleted after the routed point: XINFO GROUPS answers lag null; it is counted instead.
    const late = await register(stream, ['u2'], 3, 1_000);
    await ctx.redis.xdel(stream, late[1]?.id ?? '');
    const info = ((await ctx.redis.xinfo('GROUPS', stream)) as unknown[][])[0] ?? [];
    expect(info[info.indexOf('lag') + 1]).toBeNull();
    row = await s.row(stream);
    expect(row).toMatchObject({ lag: 2, unapplied: 6, backlog: 8 });
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
