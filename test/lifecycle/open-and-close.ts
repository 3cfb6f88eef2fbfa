// Child process of release.e2e.spec.ts: opens what a processor, the event store, the snapshot store,
// a replay (its lease timer) and the Fastify app open, then stops or closes each. Nothing may be left
// holding the event loop: the process must exit on its own right after printing "closed".
import { setTimeout as sleep } from 'node:timers/promises';
import { replay } from '@redsource/processor';
import { loadConfig } from '../../apps/profile-api/src/config.ts';
import { buildApp } from '../../apps/profile-api/src/http/app.ts';
import { appendSeedEvents, profileComponents } from '../../apps/profile-api/src/runtime/components.ts';
import { connectRedis } from '../../apps/profile-api/src/runtime/redis.ts';

const config = loadConfig();
const redis = connectRedis(config.REDIS_URL ?? 'redis://127.0.0.1:6379', 'redsource:lifecycle-test');
const components = profileComponents(config, redis);
const { eventStore, snapshots, handlers, streams, streamNames } = components;

await appendSeedEvents(components);

// A processor: started, given time to apply the seed events, stopped.
const processor = components.createProcessor({
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
});
await processor.start();
// Applied (or dead-lettered) in their partitions: the snapshot totals of the streams count every seed entry.
const seeded = (await Promise.all(streamNames.map((s) => redis.xlen(s)))).reduce((a, b) => a + b, 0);
const handled = async () =>
  (await Promise.all(streamNames.map((s) => snapshots.totals(s)))).reduce((n, t) => n + t.applied + t.deadLettered, 0);
for (let i = 0; i < 200 && (await handled()) < seeded; i++) await sleep(20);
await processor.stop();

// The event store's subscribe: ended by break, and by an abort while blocked.
for await (const event of eventStore.subscribe([streams.updates], { from: 'beginning', blockMs: 200 })) {
  if (event) break;
}
const abort = new AbortController();
const blocked = (async () => {
  for await (const event of eventStore.subscribe([streams.updates], {
    from: 'latest',
    blockMs: 5_000,
    signal: abort.signal,
  }))
    void event;
})();
await sleep(100);
abort.abort();
await blocked;

// A replay: takes the rebuild lease (a renewal timer) and gives it back.
await replay({ redis, eventStore, snapshots, handlers, streams: streamNames });

// The app: listening, one request served (keep-alive), closed.
const app = await buildApp({
  snapshots,
  streams: streamNames,
  readiness: async () => ({ redis: true, processor: undefined }),
});
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
const port = typeof address === 'object' && address ? address.port : 0;
const answer = await fetch(`http://127.0.0.1:${port}/users/1/profile`);
await answer.text();
await app.close();

await redis.quit();
process.stdout.write(`closed (status ${answer.status})\n`);
// Left for the test's failure message: whatever still holds the event loop half a second later.
setTimeout(() => process.stdout.write(`still active: ${process.getActiveResourcesInfo().join(', ')}\n`), 500).unref();
