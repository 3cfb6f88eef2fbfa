/**
 * Baseline (a), the seed's own loop: XREADGROUP COUNT 10 over the three streams, then per entry one
 * HSET (HDEL / HINCRBY where the event removes or counts) and one XACK, each awaited in turn.
 *
 * argv: redisUrl streamsJson keyPrefix group expectedEntries
 */
import { Redis } from 'ioredis';
import { parseXReadReply } from '@redsource/event-store';
import type { ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { baselineWrite, streamList } from '../support/backlog.ts';
import { arg, nextMessage, peakRssMiB, post, runWorker } from '../support/worker-side.ts';
import { createGroups } from './groups.ts';

runWorker(async () => {
  const streams = JSON.parse(arg(1, 'streams')) as ProfileStreams;
  const [keyPrefix, group, expected] = [arg(2, 'keyPrefix'), arg(3, 'group'), Number(arg(4, 'expectedEntries'))];
  const redis = new Redis(arg(0, 'redisUrl'), { connectionName: 'bench:seed-loop' });
  const names = streamList(streams);
  await createGroups(redis, names, group);
  post({ type: 'ready' });
  await nextMessage('go');
  const cpuBefore = process.cpuUsage();
  let done = 0;
  while (done < expected) {
    const reply = await redis.xreadgroup(
      'GROUP',
      group,
      'seed',
      'COUNT',
      10,
      'BLOCK',
      100,
      'STREAMS',
      ...names,
      ...names.map(() => '>'),
    );
    for (const { stream, entries } of parseXReadReply(reply)) {
      for (const entry of entries) {
        const [command, args] = baselineWrite(streams, keyPrefix, stream, entry.id, entry.fields);
        await redis.call(command, args);
        await redis.xack(stream, group, entry.id);
        done++;
      }
    }
  }
  const cpu = process.cpuUsage(cpuBefore);
  post({ type: 'done', entries: done, peakRssMiB: peakRssMiB(), cpuMs: (cpu.user + cpu.system) / 1000 });
  redis.disconnect();
});
