// Append typed events, read them back, follow the stream, and see the errors the store throws.
// Run from the repo root: REDIS_URL=redis://127.0.0.1:6379 npx tsx packages/event-store/examples/quickstart.ts
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { z } from 'zod';
import {
  AppendRejectedError,
  EventCatalog,
  EventValidationError,
  RedisEventStore,
  VersionConflictError,
  eventStoreKeys,
  type StreamDefinition,
} from '@redsource/event-store';

const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const stream = `quickstart_accounts_${randomBytes(4).toString('hex')}`; // unique per run: the Redis may be shared
const broken = `${stream}_broken`; // a stream name whose key will hold a string (step 9)

const accounts: StreamDefinition = {
  schemas: {
    opened: z.object({ accountId: z.string(), owner: z.string().min(1) }),
    deposited: z.object({ accountId: z.string(), amount: z.coerce.number().int().positive() }),
  },
  // The subject is what expectedVersion counts events of.
  subjectOf: (data) => (data as { accountId?: string }).accountId,
};
const catalog = new EventCatalog({ [stream]: accounts, [broken]: accounts });
const store = new RedisEventStore({ redis, catalog, source: 'quickstart' });

try {
  // 1. Append. `no_subject`: account a1 must have no events yet.
  const opened = await store.append(
    stream,
    { type: 'opened', data: { accountId: 'a1', owner: 'Ada' } },
    { expectedVersion: 'no_subject' },
  );
  console.log('opened at', opened.entryIds[0], 'versions', opened.versions);

  // 2. Several events in one atomic call. The event ids make a retry idempotent: a retry writes nothing
  //    and returns the same entry ids (the expectation is not checked again for events already written).
  const batch = [
    { type: 'deposited', data: { accountId: 'a1', amount: 50 }, metadata: { id: 'dep-1' } },
    { type: 'deposited', data: { accountId: 'a1', amount: 25 }, metadata: { id: 'dep-2' } },
  ];
  const first = await store.append(stream, batch, { expectedVersion: 1 });
  const retry = await store.append(stream, batch, { expectedVersion: 1 });
  console.log(
    'first',
    first.versions,
    'retry duplicates',
    retry.duplicates,
    'same ids',
    retry.entryIds.join() === first.entryIds.join(),
  );

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

  // 8. `latest` is the stream's last entry when subscribe() is called, not when iteration starts:
  //    an event appended in between is still seen.
  const live = store.subscribe([stream], { from: 'latest', blockMs: 1_000 });
  await store.append(stream, { type: 'deposited', data: { accountId: 'a1', amount: 5 } });
  for await (const event of live) {
    console.log('latest', event.type, event.data);
    break;
  }

  // 9. Redis refuses the append (the key holds a string, not a stream): nothing is written.
  await redis.set(broken, 'not a stream');
  try {
    await store.append(broken, { type: 'opened', data: { accountId: 'a2', owner: 'Bob' } });
  } catch (error) {
    if (!(error instanceof AppendRejectedError)) throw error;
    console.log(error.code, error.message);
    console.log('still a', await redis.type(broken), '- versions of a2:', await store.version(broken, 'a2'));
  }
} finally {
  // Delete what this run created: the stream and the store's two keys beside it, and the string of step 9.
  await redis.del(
    stream,
    eventStoreKeys.versions(stream),
    eventStoreKeys.eventIds(stream),
    eventStoreKeys.eventIdsByAge(stream),
    broken,
  );
  await redis.quit();
}
