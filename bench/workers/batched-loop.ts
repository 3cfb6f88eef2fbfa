/**
 * Baseline (b), a hand-written batched loop: XREADGROUP COUNT 1000 over the three streams, one
 * pipeline per batch with one HSET / HDEL / HINCRBY per entry and one XACK per stream.
 *
 * argv: redisUrl streamsJson keyPrefix group expectedEntries
 */
import { Redis } from 'ioredis';
import { parseXReadReply } from '@redsource/event-store';
import type { ProfileStreams } from '../../apps/profile-api/src/domain/events.ts';
import { baselineWrite, streamList, throwFirstError } from '../support/backlog.ts';
import { arg, nextMessage, peakRssMiB, post, runWorker } from '../support/worker-side.ts';
import { createGroups } from './groups.ts';

runWorker(async () => {
  const streams = JSON.parse(arg(1, 'streams')) as ProfileStreams;
  const [keyPrefix, group, expected] = [arg(2, 'keyPrefix'), arg(3, 'group'), Number(arg(4, 'expectedEntries'))];
  const redis = new Redis(arg(0, 'redisUrl'), { connectionName: 'bench:batched-loop' });
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
      'batched',
      'COUNT',
      1000,
      'BLOCK',
      100,
      'STREAMS',
      ...names,
      ...names.map(() => '>'),
    );
    const pipeline = redis.pipeline();
    for (const { stream, entries } of parseXReadReply(reply)) {
      if (entries.length === 0) continue;
      for (const entry of entries) {
        const [command, args] = baselineWrite(streams, keyPrefix, stream, entry.id, entry.fields);
        pipeline.call(command, args);
      }
      pipeline.xack(stream, group, ...entries.map((e) => e.id));
      done += entries.length;
    }
    if (pipeline.length > 0) throwFirstError(await pipeline.exec());
  }
  const cpu = process.cpuUsage(cpuBefore);
  post({ type: 'done', entries: done, peakRssMiB: peakRssMiB(), cpuMs: (cpu.user + cpu.system) / 1000 });
  redis.disconnect();
});
