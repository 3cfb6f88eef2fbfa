/**
 * A rebuild of every snapshot from the streams, in a process of its own (for its peak RSS):
 * `redsource`: replay() from packages/processor with the profile handlers (pages of 1000);
 * `handwritten`: XRANGE pages of 1000, one pipeline per page with one HSET / HDEL / HINCRBY per entry.
 *
 * argv: mode redisUrl streamsJson keyPrefix projection
 */
import { Redis } from 'ioredis';
import { RedisEventStore, toStreamEntries } from '@redsource/event-store';
import { replay } from '@redsource/processor';
import { SnapshotStore } from '@redsource/snapshot-store';
import { profileCatalog, type ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { profileHandlers } from '../../apps/profile-api/src/domain/handlers.ts';
import { baselineWrite, streamList, throwFirstError } from '../support/backlog.ts';
import { arg, nextMessage, peakRssMiB, post, runWorker } from '../support/worker-side.ts';

const PAGE = 1_000;

runWorker(async () => {
  const mode = arg(0, 'mode');
  const streams = JSON.parse(arg(2, 'streams')) as ProfileStreams;
  const keyPrefix = arg(3, 'keyPrefix');
  const redis = new Redis(arg(1, 'redisUrl'), { connectionName: `bench:replay:${mode}` });
  const eventStore = new RedisEventStore({ redis, catalog: profileCatalog(streams), source: 'redsource/profile-api' });
  const snapshots = new SnapshotStore({ redis, keyPrefix, projection: arg(4, 'projection') });
  await redis.ping();
  post({ type: 'ready' });
  await nextMessage('go');
  const cpuBefore = process.cpuUsage();
  let entries = 0;
  if (mode === 'redsource') {
    const result = await replay({ redis, eventStore, snapshots, handlers: profileHandlers(streams), pageSize: PAGE });
    entries = result.done;
    if (result.stepped > 0) throw new Error(`replay dead-lettered ${result.stepped} entries`);
  } else {
    for (const stream of streamList(streams)) {
      let from = '-';
      for (;;) {
        const page = toStreamEntries(await redis.xrange(stream, from, '+', 'COUNT', PAGE));
        if (page.length === 0) break;
        const pipeline = redis.pipeline();
        for (const entry of page) {
          const [command, args] = baselineWrite(streams, keyPrefix, stream, entry.id, entry.fields);
          pipeline.call(command, args);
        }
        throwFirstError(await pipeline.exec());
        entries += page.length;
        if (page.length < PAGE) break;
        from = `(${page[page.length - 1]?.id ?? ''}`;
      }
    }
  }
  const cpu = process.cpuUsage(cpuBefore);
  post({ type: 'done', entries, peakRssMiB: peakRssMiB(), cpuMs: (cpu.user + cpu.system) / 1000 });
  redis.disconnect();
});
