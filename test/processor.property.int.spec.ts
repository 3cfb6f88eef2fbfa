/**
 * The processor against the reference model, property-based: fast-check generates command
 * sequences (raw XADDs of valid, poison, oddly named and non-UTF-8 entries; typed appends with
 * event ids, resends included; processor restarts; checks), runs them against a real Redis and a
 * running StreamProcessor, and shrinks a failure to its smallest sequence. At every check, every
 * entry is either applied as the reference fold says or dead-lettered, once, with a reason and its
 * exact bytes.
 */
import { isUtf8 } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { EventInput } from '@redsource/event-store';
import { DeadLetters, replay, type StreamProcessor } from '@redsource/processor';
import { anyBytes, anyName, personalFieldName } from './support/arbitraries.ts';
import { isolatedProfileSetup } from './support/profile-setup.ts';
import { referenceFold, snapshotDifferences } from './support/model.ts';
import { unprocessed } from './support/backlog.ts';
import { eventually, useTestRedis } from './support/redis.ts';

const ctx = useTestRedis();

type Setup = ReturnType<typeof isolatedProfileSetup>;
type StreamKey = 'updates' | 'activity' | 'friends';
/** What the generator means an entry to be: applied, dead-lettered, or either (the decoder decides). */
type Intent = 'valid' | 'poison' | 'any';
type Field = string | Buffer;

interface Model {
  /** Every entry appended, per stream, with its intent. */
  readonly entries: { stream: StreamKey; entryId: string; intent: Intent; fields: Field[] }[];
  /** Event ids appended through the store, per stream (the window is far larger than any run). */
  readonly eventIds: Map<string, string>;
}

interface Real {
  readonly setup: Setup;
  processor: StreamProcessor;
}

const USERS = ['1', '2', '3'];
const entry = (stream: StreamKey, fields: Field[]): [StreamKey, Field[]] => [stream, fields];
const COUNTER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const user = fc.constantFrom(...USERS);
const member = anyName().filter((n) => n !== '');
/** An activity command: it names a counter, so only counter names are valid ones. */
const command = fc
  .oneof(anyName(), personalFieldName())
  .filter((c) => COUNTER.test(c) && c !== 'like' && c !== 'unlike');

const valid: fc.Arbitrary<[StreamKey, Field[]]> = fc.oneof(
  fc
    .tuple(
      user,
      fc.string({ minLength: 1, maxLength: 8 }),
      fc.uniqueArray(fc.tuple(personalFieldName(), fc.string({ maxLength: 8 })), {
        selector: ([n]) => n,
        maxLength: 3,
      }),
    )
    .filter(([, , fields]) =>
      fields.every(
        ([n]) => !['id', 'userId', 'friends', 'likedPages', 'activity', 'name', 'surname', 'surename'].includes(n),
      ),
    )
    .map(([u, name, fields]) =>
      entry('updates', ['user_id', u, 'command', 'register', 'name', name, ...fields.flat()]),
    ),
  fc
    .tuple(
      user,
      personalFieldName().filter((n) => !['id', 'userId', 'friends', 'likedPages', 'activity', 'surename'].includes(n)),
      fc.string({ maxLength: 8 }),
    )
    .map(([u, n, v]) => entry('updates', ['user_id', u, 'action', 'update', n, v])),
  user.map((u) => entry('updates', ['user_id', u, 'command', 'delete'])),
  fc
    .tuple(user, fc.constantFrom('like', 'unlike'), fc.constantFrom('page', 'object'), member)
    .map(([u, c, f, p]) => entry('activity', ['user_id', u, 'command', c, f, p])),
  fc.tuple(user, command).map(([u, c]) => entry('activity', ['user_id', u, 'command', c])),
  fc
    .tuple(user, fc.constantFrom('add', 'remove'), fc.constantFrom(...USERS, '__proto__', 'constructor', 'toString'))
    .filter(([u, , f]) => u !== f)
    .map(([u, c, f]) => entry('friends', ['user_id', u, 'command', c, 'friend_id', f])),
);

const poison: fc.Arbitrary<[StreamKey, Field[]]> = fc.oneof(
  user.map((u) => entry('activity', ['user_id', u, 'command', 'like'])),
  user.map((u) => entry('updates', ['user_id', u, 'command', 'register'])),
  user.map((u) => entry('updates', ['user_id', u, 'command', 'update'])),
  user.map((u) => entry('friends', ['user_id', u, 'command', 'add', 'friend_id', u])),
  fc.constantFrom('a:b', '', 'x'.repeat(65), '{1}').map((u) => entry('activity', ['user_id', u, 'command', 'kick'])),
  user.map((u) => entry('activity', ['user_id', u, 'command', 'like', 'page', 'p1', 'object', 'p2'])),
  user.map((u) => entry('activity', ['user_id', u, 'user_id', u, 'command', 'kick'])),
  fc
    .tuple(
      user,
      anyName().filter((n) => !/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(n)),
    )
    .map(([u, n]) => entry('updates', ['user_id', u, 'command', 'register', 'name', 'N', n, 'v'])),
  // A valid shape with bytes that are not UTF-8 in a value or a name: RS_NOT_UTF8.
  fc
    .tuple(
      user,
      anyBytes(6).filter((b) => !isUtf8(b)),
    )
    .map(([u, bytes]) =>
      entry('activity', ['user_id', u, 'command', 'like', 'page', Buffer.concat([Buffer.from('P'), bytes])]),
    ),
  fc
    .tuple(
      user,
      anyBytes(6).filter((b) => !isUtf8(b)),
    )
    .map(([u, bytes]) => entry('activity', ['user_id', u, 'command', Buffer.concat([Buffer.from('k'), bytes])])),
  fc
    .tuple(
      user,
      anyBytes(6).filter((b) => !isUtf8(b)),
    )
    .map(([u, bytes]) =>
      entry('updates', [
        'user_id',
        u,
        'command',
        'register',
        'name',
        'N',
        Buffer.concat([Buffer.from('f'), bytes]),
        'v',
      ]),
    ),
  // A command that cannot name a counter.
  fc
    .tuple(
      user,
      anyName().filter((c) => c !== '' && !COUNTER.test(c)),
    )
    .map(([u, c]) => entry('activity', ['user_id', u, 'command', c])),
);

const anything: fc.Arbitrary<[StreamKey, Field[]]> = fc
  .tuple(
    fc.constantFrom<StreamKey>('updates', 'activity', 'friends'),
    fc.array(
      fc.oneof(
        anyName(),
        fc.constantFrom(
          'user_id',
          'command',
          'action',
          'specversion',
          'type',
          'data',
          '1',
          'register',
          'kick',
          'add',
          '{"userId":"1"}',
        ),
      ),
      { minLength: 1, maxLength: 5 },
    ),
  )
  .map(([stream, items]) => [stream, items.flatMap((item, i) => [item, items[(i + 1) % items.length] as string])]);

class AppendRaw implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly intent: Intent,
    readonly stream: StreamKey,
    readonly fields: Field[],
  ) {}
  check = () => true;
  async run(model: Model, real: Real): Promise<void> {
    const entryId = (await ctx.redis.xadd(real.setup.streams[this.stream], '*', ...this.fields)) as string;
    model.entries.push({ stream: this.stream, entryId, intent: this.intent, fields: this.fields });
  }
  toString = () =>
    `AppendRaw(${this.intent}, ${this.stream}, ${JSON.stringify(this.fields.map((f) => (typeof f === 'string' ? f : `<${f.toString('hex')}>`)))})`;
}

class AppendWithId implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly eventId: string,
    readonly userId: string,
    readonly type: string,
  ) {}
  check = () => true;
  async run(model: Model, real: Real): Promise<void> {
    const event: EventInput = { type: this.type, data: { userId: this.userId }, metadata: { id: this.eventId } };
    const result = await real.setup.eventStore.append(real.setup.streams.activity, event);
    const earlier = model.eventIds.get(this.eventId);
    // Inside the window a resend is not appended again and answers the original entry.
    if (earlier) {
      expect(result.duplicates).toEqual([0]);
      expect(result.entryIds).toEqual([earlier]);
      return;
    }
    expect(result.duplicates).toEqual([]);
    const entryId = result.entryIds[0] as string;
    model.eventIds.set(this.eventId, entryId);
    model.entries.push({ stream: 'activity', entryId, intent: 'valid', fields: [] });
  }
  toString = () => `AppendWithId(${this.eventId}, ${this.userId}, ${JSON.stringify(this.type)})`;
}

class RestartProcessor implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(_model: Model, real: Real): Promise<void> {
    await real.processor.stop();
    real.processor = ctx.track(real.setup.processor(ctx.server.client(), { rebalanceIntervalMs: 50 }));
    await real.processor.start();
  }
  toString = () => 'RestartProcessor';
}

/** A rebuild from the log while the processor is stopped: nothing is applied or dead-lettered a second time. */
class Rebuild implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(model: Model, real: Real): Promise<void> {
    await checkAgainstModel(model, real.setup);
    await real.processor.stop();
    const { setup } = real;
    await replay({
      redis: ctx.redis,
      eventStore: setup.eventStore,
      snapshots: setup.snapshots,
      handlers: setup.handlers,
    });
    real.processor = ctx.track(setup.processor(ctx.server.client(), { rebalanceIntervalMs: 50 }));
    await real.processor.start();
  }
  toString = () => 'Rebuild';
}

class Check implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(model: Model, real: Real): Promise<void> {
    await checkAgainstModel(model, real.setup);
  }
  toString = () => 'Check';
}

async function checkAgainstModel(model: Model, setup: Setup): Promise<void> {
  const dead = new DeadLetters(ctx.redis);
  for (const key of ['updates', 'activity', 'friends'] as const) {
    const stream = setup.streams[key];
    const entries = model.entries.filter((e) => e.stream === key);
    const handled = async () => {
      const t = await setup.snapshots.totals(stream);
      return t.applied + t.deadLettered;
    };
    expect(
      await eventually(async () => (await handled()) >= entries.length, 10_000),
      `${key}: ${await handled()} of ${entries.length} handled`,
    ).toBe(true);
    expect(await handled()).toBe(entries.length);
    // No entry of the stream after its partition's cursor, nothing pending in the group.
    expect(
      await unprocessed(
        ctx.redis,
        stream,
        setup.group,
        setup.snapshots,
        setup.eventStore.catalog.subjectFields(stream),
      ),
    ).toEqual({ unapplied: 0, pending: 0 });
    const letters = await dead.list(stream, { count: 10_000 });
    const byEntry = new Map(letters.map((l) => [l.entryId, l]));
    // Each entry dead-lettered at most once, every dead letter with a reason that has a code.
    expect(byEntry.size).toBe(letters.length);
    for (const letter of letters) expect(letter.reason).toMatch(/^RS_[A-Z0-9_]+/);
    for (const entry of entries) {
      const letter = byEntry.get(entry.entryId);
      if (entry.intent === 'valid')
        expect(letter?.reason, `${entry.entryId} ${JSON.stringify(entry.fields.map(String))}`).toBeUndefined();
      if (entry.intent === 'poison')
        expect(letter, `${entry.entryId} ${JSON.stringify(entry.fields.map(String))}`).toBeDefined();
      // A dead letter keeps the entry's exact bytes.
      if (letter && entry.fields.length > 0)
        expect(letter.bytes.map((b) => b.toString('hex'))).toEqual(
          entry.fields.map((f) => Buffer.from(f).toString('hex')),
        );
    }
  }
  // Everything that was not dead-lettered is in the snapshots exactly as the pure fold says.
  const expected = await referenceFold(setup.eventStore, setup.streams, ctx.redis);
  expect(await snapshotDifferences(setup.snapshots, expected)).toEqual([]);
  const keys = await ctx.redis.keys(`${setup.keyPrefix}*`);
  for (const key of keys)
    expect(expected.has(key.slice(setup.keyPrefix.length)), `snapshot ${key} the fold does not produce`).toBe(true);
}

const commands = fc.commands(
  [
    valid.map(([s, f]) => new AppendRaw('valid', s, f)),
    poison.map(([s, f]) => new AppendRaw('poison', s, f)),
    anything.map(([s, f]) => new AppendRaw('any', s, f)),
    fc
      .tuple(fc.constantFrom('id-a', 'id-b', 'id-c', 'id-d'), user, command)
      .map(([id, u, t]) => new AppendWithId(id, u, t)),
    fc.constant(new RestartProcessor()),
    fc.constant(new Rebuild()),
    fc.constant(new Check()),
  ],
  { maxCommands: 25 },
);

describe('the processor against the reference model (fast-check, real Redis)', () => {
  it('any sequence of appends, restarts and checks: every entry applied as the fold says or dead-lettered once, with a reason and its bytes', async () => {
    await fc.assert(
      fc.asyncProperty(commands, async (cmds) => {
        const setup = isolatedProfileSetup(ctx.redis);
        const real: Real = {
          setup,
          processor: ctx.track(setup.processor(ctx.server.client(), { rebalanceIntervalMs: 50 })),
        };
        await real.processor.start();
        const model: Model = { entries: [], eventIds: new Map() };
        try {
          await fc.asyncModelRun(() => ({ model, real }), cmds);
          await checkAgainstModel(model, setup);
        } finally {
          await real.processor.stop();
        }
      }),
      { numRuns: Number(process.env['FUZZ_RUNS'] ?? 150), interruptAfterTimeLimit: 45_000 },
    );
  }, 60_000);
});
