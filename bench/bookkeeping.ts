import { eventStoreKeys, RedisEventStore, type EventInput } from '@redsource/event-store';
import { processorKeys, StreamProcessor } from '@redsource/processor';
import { SnapshotStore, snapshotKeys } from '@redsource/snapshot-store';
import { profileCatalog } from '../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../apps/profile-api/src/domain/handlers.ts';
import { benchStreams, throwFirstError } from './support/backlog.ts';
import type { Benchmark } from './support/context.ts';

interface Checkpoint {
  readonly appended: number;
  /** MEMORY USAGE of the event-id hash + its by-age sorted set, and how many ids they hold. */
  readonly idBytes: number;
  /** MEMORY USAGE of the event-id hash alone: all that was kept, never trimmed, before the window. */
  readonly hashBytes: number;
  readonly ids: number;
  readonly deadLetteredBytes: number;
  readonly deadLetteredIds: number;
  readonly streamLength: number;
  readonly usedMemory: number;
}

const BATCH = 500;
const kib = (bytes: number) => `${(bytes / 1024).toFixed(bytes < 10_240 ? 1 : 0)} KiB`;
const mib = (bytes: number) => `${(bytes / 1_048_576).toFixed(1)} MiB`;

/**
 * 7. Nothing grows forever: a long run of appends with event ids (a resend of some inside the window
 * each batch) plus raw entries that are dead-lettered, one processor with retention. At each
 * checkpoint, once the processor has caught up: the memory of the event-id window, of the
 * dead-lettered-ids set, and the server's used_memory. The operator drops the dead letters at each
 * checkpoint (`redsource dlq drop --all`): the dead-letter stream is an inbox, not bookkeeping.
 */
export const bookkeeping: Benchmark = async (ctx) => {
  const { events, checkpoints, maxIds, poisonEvery, users } = ctx.config.bookkeeping;
  const streams = benchStreams('bookkeeping');
  const stream = streams.activity;
  const client = ctx.server.client('bench:bookkeeping');
  const catalog = profileCatalog(streams);
  const store = new RedisEventStore({ redis: client, catalog, idempotency: { maxIds } });
  const snapshots = new SnapshotStore({ redis: client, keyPrefix: 'bk_snapshot_', projection: 'bookkeeping' });
  const processor = new StreamProcessor({
    redis: ctx.server.client('bench:bookkeeping:processor'),
    eventStore: new RedisEventStore({ redis: client, catalog }),
    snapshots,
    handlers: profileHandlers(streams),
    streams: [stream],
    group: 'bench-bookkeeping',
    retention: true,
    blockMs: 100,
  });
  await processor.start();

  const measure = async (appended: number): Promise<Checkpoint> => {
    const usage = async (key: string) => Number((await client.memory('USAGE', key, 'SAMPLES', '0')) ?? 0);
    const info = await client.info('memory');
    const hashBytes = await usage(eventStoreKeys.eventIds(stream));
    return {
      appended,
      idBytes: hashBytes + (await usage(eventStoreKeys.eventIdsByAge(stream))),
      hashBytes,
      ids: await client.zcard(eventStoreKeys.eventIdsByAge(stream)),
      deadLetteredBytes: await usage(snapshotKeys.deadLettered(stream)),
      deadLetteredIds: await client.scard(snapshotKeys.deadLettered(stream)),
      streamLength: await client.xlen(stream),
      usedMemory: Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0),
    };
  };
  // Caught up: every entry applied or dead-lettered, the stream trimmed, and the dead-lettered ids of
  // the trimmed entries forgotten (retention forgets them just after its XTRIM, so a checkpoint taken
  // between the two would count ids about to go). Bounded: a retention that never forgets shows as a miss.
  const caughtUp = async (entries: number) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const totals = await snapshots.totals(stream);
      if (totals.applied + totals.deadLettered >= entries && (await client.xlen(stream)) <= 1) {
        if ((await client.scard(snapshotKeys.deadLettered(stream))) <= 1 || Date.now() > deadline) return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  const points: Checkpoint[] = [];
  let appended = 0;
  let entries = 0;
  let resends = 0;
  let recognised = 0;
  const started = performance.now();
  try {
    for (let c = 1; c <= checkpoints; c++) {
      const until = Math.round((events * c) / checkpoints);
      while (appended < until) {
        const size = Math.min(BATCH, until - appended);
        const batch: EventInput[] = Array.from({ length: size }, (_, i) => ({
          type: 'kick',
          data: { userId: String((appended + i) % users) },
          metadata: { id: `bk-${appended + i}` },
        }));
        await store.append(stream, batch);
        // A resend of a few events of the previous batch (a retry after a lost reply): inside the window.
        if (appended >= BATCH) {
          const resent = batch.slice(0, 5).map((e, i) => ({ ...e, metadata: { id: `bk-${appended - BATCH + i}` } }));
          resends += resent.length;
          recognised += (await store.append(stream, resent)).duplicates.length;
        }
        const pipeline = client.pipeline();
        const poison = Math.floor(size / poisonEvery);
        // A `like` without its page: dead-lettered (RS_EVENT_INVALID).
        for (let i = 0; i < poison; i++) pipeline.xadd(stream, '*', 'user_id', String(i % users), 'command', 'like');
        throwFirstError(await pipeline.exec());
        appended += size;
        entries += size + poison;
      }
      await caughtUp(entries);
      await client.xtrim(processorKeys.deadLetters(stream), 'MAXLEN', 0);
      const point = await measure(appended);
      points.push(point);
      ctx.log(
        `bookkeeping: ${appended} appended, ids ${point.ids} (${kib(point.idBytes)}), dead-lettered ids ${point.deadLetteredIds}, used_memory ${mib(point.usedMemory)}`,
      );
    }
  } finally {
    await processor.stop();
    client.disconnect();
  }
  const seconds = (performance.now() - started) / 1000;
  const deadLettered = (await ctx.redis.hget(snapshotKeys.totals(stream, 'bookkeeping'), 'deadLettered')) ?? '0';
  // Flat from the first checkpoint at which the window is full.
  const full = points.filter((p) => p.ids >= maxIds);
  const memories = full.map((p) => p.usedMemory);
  const growth = memories.length > 0 ? Math.max(...memories) / Math.min(...memories) : Number.NaN;
  const first = full[0] ?? points[0];
  const last = points[points.length - 1];
  const bytesPerId = last && last.ids > 0 ? last.idBytes / last.ids : Number.NaN;
  // Before the window only the hash was kept, every id forever: its bytes per id times every id.
  const unbounded = last && last.ids > 0 ? (last.hashBytes / last.ids) * events : Number.NaN;
  const met =
    growth <= 1.1 &&
    resends === recognised &&
    (last?.ids ?? Infinity) <= maxIds &&
    points.every((p) => p.deadLetteredIds <= 1);
  return {
    rows: [
      {
        n: 7,
        figure: `bookkeeping memory, ${events.toLocaleString('en')} appends with ids + ${deadLettered} dead-lettered, window ${maxIds.toLocaleString('en')} ids, retention on`,
        redsource: `event ids ${kib(first?.idBytes ?? 0)} → ${kib(last?.idBytes ?? 0)}; dead-lettered ids ≤ ${Math.max(...points.map((p) => p.deadLetteredIds))}; used_memory ${mib(first?.usedMemory ?? 0)} → ${mib(last?.usedMemory ?? 0)}`,
        baseline: `never trimmed (before): ~${mib(unbounded)} of ids and ${deadLettered} dead-lettered ids at the end, growing`,
        ratio: `${growth.toFixed(2)}×`,
        goal: 'used_memory flat once the window is full (≤1.10×), every resend in the window recognised, dead-lettered ids of trimmed entries forgotten',
        met,
        verdict: `${growth.toFixed(2)}× used_memory, ${recognised}/${resends} resends recognised, dead-lettered ids ≤ ${Math.max(...points.map((p) => p.deadLetteredIds))} at each checkpoint`,
      },
    ],
    notes: [
      `7: ${seconds.toFixed(0)} s; at each checkpoint (appended: ids held, their MEMORY USAGE, dead-lettered ids, stream length, used_memory): ` +
        points
          .map(
            (p) =>
              `${p.appended.toLocaleString('en')}: ${p.ids} ids ${kib(p.idBytes)}, ${p.deadLetteredIds} dl ids (${p.deadLetteredBytes} B), xlen ${p.streamLength}, ${mib(p.usedMemory)}`,
          )
          .join('; ') +
        `. ~${bytesPerId.toFixed(0)} B per remembered id (hash + sorted set).`,
    ],
  };
};
