// Append typed events, read them back, follow the stream, and see the errors the store throws.
// Run from the repo root: REDIS_URL=redis://127.0.0.1:6379 npx tsx packages/event-store/examples/quickstart.ts
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { EventCatalog, EventValidationError, RedisEventStore, VersionConflictError, eventStoreKeys } from '@redsource/event-store';

const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const stream = `quickstart_accounts_${randomBytes(4).toString('hex')}`; // unique per run: the Redis may be shared

const catalog = new EventCatalog({
  [stream]: {
    schemas: {
      opened: z.object({ accountId: z.string(), owner: z.string().min(1) }),
      deposited: z.object({ accountId: z.string(), amount: z.coerce.number().int().positive() }),
    },
    // The subject is what expectedVersion counts events of.
    subjectOf: (data) => (data as { accountId?: string }).accountId,
  },
});
const store = new RedisEventStore({ redis, catalog, source: 'quickstart' });

try {
  // 1. Append. `no_subject`: account a1 must have no events yet.
  const opened = await store.append(stream, { type: 'opened', data: { accountId: 'a1', owner: 'Ada' } }, { expectedVersion: 'no_subject' });
  console.log('opened at', opened.entryIds[0], 'versions', opened.versions);

  // 2. Several events in one atomic call; the event id makes a retry idempotent.
  const batch = [
    { type: 'deposited', data: { accountId: 'a1', amount: 50 }, metadata: { id: 'dep-1' } },
    { type: 'deposited', data: { accountId: 'a1', amount: 25 }, metadata: { id: 'dep-2' } },
  ];
  const first = await store.append(stream, batch, { expectedVersion: 1 });
  const retry = await store.append(stream, batch, { expectedVersion: 1 });
  console.log('first', first.versions, 'retry duplicates', retry.duplicates, 'same ids', retry.entryIds.join() === first.entryIds.join());

  // 3. Optimistic concurrency: a1 now has 3 events, not 1. Nothing is written.
  try {
    await store.append(stream, { type: 'deposited', data: { accountId: 'a1', amount: 1 } }, { expectedVersion: 1 });
  } catch (error) {
    if (!(error instanceof VersionConflictError)) throw error;
    console.log(error.code, 'expected', error.expected, 'actual', error.actual);
  }

  // 4. Validation: the schema rejects the data; nothing is written.
  try {
    await store.append(stream, { type: 'deposited', data: { accountId: 'a1', amount: -5 } });
  } catch (error) {
    if (!(error instanceof EventValidationError)) throw error;
    console.log(error.code, error.issues);
  }

  // 5. Any client may XADD the flat form; it decodes to the same kind of event.
  await redis.xadd(stream, '*', 'command', 'deposited', 'accountId', 'a1', 'amount', '10');

  // 6. Read everything back, in order, one XRANGE page at a time.
  for await (const event of store.read(stream, { pageSize: 2 })) {
    console.log('read', event.entryId, event.format, event.type, event.data);
  }
  console.log('version of a1:', await store.version(stream, 'a1')); // the flat entry was not appended through the store

  // 7. Follow the stream (XREAD BLOCK on a connection of its own); breaking out closes that connection.
  let seen = 0;
  for await (const event of store.subscribe([stream], { from: 'beginning', blockMs: 1_000 })) {
    console.log('subscribe', event.entryId, event.type);
    if (++seen === 2) break;
  }
} finally {
  // Delete what this run created: the stream and the store's two keys beside it.
  await redis.del(stream, eventStoreKeys.versions(stream), eventStoreKeys.eventIds(stream));
  await redis.quit();
}
