// Apply stream entries to snapshot hashes exactly once and in order, then read the snapshots.
// Run from the repo root: REDIS_URL=redis://127.0.0.1:6379 npx tsx packages/snapshot-store/examples/quickstart.ts
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { InvalidMutationError, SnapshotStore, snapshotKeys, type BatchEntry } from '@redsource/snapshot-store';

const redis = new Redis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const run = randomBytes(4).toString('hex'); // unique per run: the Redis may be shared
const stream = `quickstart_users_${run}`;
const deadLetters = `redsource:{${stream}}:dead`; // the name the processor uses; same cluster slot as the stream
const group = 'quickstart';

const snapshots = new SnapshotStore({
  redis,
  keyPrefix: `quickstart_user_${run}_`,
  projection: 'profiles',
  fieldsSchema: z.object({ name: z.string().optional(), city: z.string().optional() }),
});

try {
  // The store does not read the stream's contents: the caller turns entries into changes.
  // It does use the stream to order them, so the entries must be in it.
  await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
  const e1 = String(await redis.xadd(stream, '*', 'type', 'register'));
  const e2 = String(await redis.xadd(stream, '*', 'type', 'like'));
  const e3 = String(await redis.xadd(stream, '*', 'type', 'move'));
  const e4 = String(await redis.xadd(stream, '*', 'type', 'garbage'));
  const e5 = String(await redis.xadd(stream, '*', 'type', 'rename'));
  await redis.xreadgroup('GROUP', group, 'c1', 'STREAMS', stream, '>'); // all five now pending for c1

  // What a handler would make of each entry: changes to snapshots, or a reason to dead-letter it.
  const register: BatchEntry = {
    entryId: e1,
    changes: [{ snapshotId: 'u1', mutations: [{ op: 'create' }, { op: 'replaceFields', fields: { name: 'Ada' } }] }],
  };
  const like: BatchEntry = {
    entryId: e2,
    changes: [
      {
        snapshotId: 'u1',
        mutations: [
          { op: 'addMember', set: 'likedPages', member: 'valkey.io' }, // op 1 of the entry
          { op: 'addMember', set: 'likedPages', member: 'redis.io' }, // op 2: listed after valkey.io
          { op: 'increment', counter: 'likes', by: 2 },
        ],
      },
    ],
  };
  const move: BatchEntry = {
    entryId: e3,
    changes: [{ snapshotId: 'u1', mutations: [{ op: 'setFields', fields: { city: 'Turin' } }] }],
  };
  const garbage: BatchEntry = {
    entryId: e4,
    deadLetter: { reason: 'no handler for garbage', fields: ['type', 'garbage'] },
  };
  const rename: BatchEntry = {
    entryId: e5,
    changes: [{ snapshotId: 'u1', mutations: [{ op: 'setFields', fields: { name: 'Ada L.' } }] }],
  };
  const apply = (entries: BatchEntry[]) =>
    snapshots.applyBatch({ stream, entries, deadLetterStream: deadLetters, ackGroup: group });

  // e3 cannot go before e2: the batch stops at e3 (blockedAt); only e1 is applied and acked.
  console.log('e1+e3', await apply([register, move]));
  // The rest in one atomic step: apply e2 and e3, dead-letter e4, move the cursor, XACK all three.
  console.log('e2..e4', await apply([like, move, garbage]));
  // A redelivery of everything is recognised by the cursor: skipped (and acked), not applied again.
  console.log('again', await apply([register, like, move, garbage]));
  // While the stream is held (a rebuild switching snapshots over), nothing is applied: held, blockedAt e5.
  await snapshots.hold(stream);
  console.log('held', await apply([rename]));
  await snapshots.release(stream);
  console.log('released', await apply([rename]));

  console.log('pending', await redis.xpending(stream, group));
  console.log('snapshot', await snapshots.read('u1'));
  console.log('hash', await redis.hgetall(snapshots.key('u1')));
  console.log('cursor', await snapshots.cursor(stream), '=', e5);
  console.log('totals', await snapshots.totals(stream));
  console.log('dead letters', await redis.xrange(deadLetters, '-', '+'));

  // Bad mutations are refused before anything reaches Redis.
  try {
    await snapshots.applyBatch({
      stream,
      deadLetterStream: deadLetters,
      entries: [
        { entryId: e5, changes: [{ snapshotId: 'u1', mutations: [{ op: 'increment', counter: 'likes', by: 0.5 }] }] },
      ],
    });
  } catch (error) {
    if (!(error instanceof InvalidMutationError)) throw error;
    console.log(error.code, error.message);
  }
} finally {
  // Delete what this run created: stream (and its group), cursor, totals, hold flag (if still set),
  // dead-letter stream and its set of dead-lettered ids, snapshot.
  await redis.del(
    stream,
    snapshots.cursorKey(stream),
    snapshots.totalsKey(stream),
    snapshots.holdKey(stream),
    deadLetters,
    snapshotKeys.deadLettered(stream),
    snapshots.key('u1'),
  );
  await redis.quit();
}
