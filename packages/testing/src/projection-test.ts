import { deepStrictEqual } from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { z } from 'zod';
import {
  EventCatalog,
  eventStoreKeys,
  type EventInput,
  type EventTypeOf,
  type RecordedEvent,
  type StreamDefinition,
  type StreamDefinitions,
} from '@redsource/event-store';
import {
  createProcessor,
  DeadLetters,
  defineProjection,
  type DeadLetter,
  type HandlerResult,
  type ProcessorSettingsInput,
  type Projection,
  type ProjectionProcessor,
} from '@redsource/processor';

/** What a schema accepts (its input), for an event type of a stream definition. */
type DataInput<Definition extends StreamDefinition, Type extends string> = Definition['schemas'][Type] extends z.ZodType
  ? z.input<Definition['schemas'][Type]>
  : never;

/**
 * An event of a test: its type and data (typed by the catalog's schema), and which stream it goes to
 * as the catalog's key (`orders`, not the name in Redis). `stream` may be left out when the catalog
 * has one stream.
 */
export type TestEvent<Definitions extends StreamDefinitions> = {
  readonly [Key in Extract<keyof Definitions, string>]: {
    readonly [Type in EventTypeOf<Definitions[Key]>]: {
      readonly stream?: Key;
      readonly type: Type extends '*' ? string : Type;
      readonly data: DataInput<Definitions[Key], Type>;
      readonly metadata?: EventInput['metadata'];
    };
  }[EventTypeOf<Definitions[Key]>];
}[Extract<keyof Definitions, string>];

/** Snapshot id → the fields it is expected to have, or `undefined` when no (visible) snapshot is expected. */
export type ExpectedSnapshots = Readonly<Record<string, Readonly<Record<string, unknown>> | undefined>>;

export interface ProjectionTestOptions {
  /** The Redis to run on (a `startRedis()` client, or a shared one: every key a test makes has a name of its own and is deleted). */
  readonly redis: Redis;
  /** How long to wait for the processor to apply or dead-letter every event (default 10 000 ms). */
  readonly timeoutMs?: number;
  /** Processor settings over the test defaults (1 partition, 50 ms reads, 2 deliveries, 1 ms retry backoff). */
  readonly processor?: ProcessorSettingsInput;
  /** Part of every key name the test makes (default: random). Must be 1-32 of `A-Z a-z 0-9 _ -`. */
  readonly namespace?: string;
}

/** The processor did not apply or dead-letter every appended event in time. */
export class ProjectionTestTimeoutError extends Error {
  override readonly name = 'ProjectionTestTimeoutError';
}

/** A `given` event was dead-lettered: the events a scenario starts from must apply. */
export class GivenEventDeadLetteredError extends Error {
  override readonly name = 'GivenEventDeadLetteredError';
  constructor(readonly deadLetters: readonly DeadLetter[]) {
    super(
      `${deadLetters.length} given event(s) were dead-lettered: ${deadLetters.map((d) => `${d.entryId} (${d.reason})`).join('; ')}`,
    );
  }
}

/** What a scenario did, for `then` / `thenDeadLettered` (and your own checks through `run()`). */
export interface ScenarioOutcome {
  /** The snapshot fields of an id (`undefined` when none, or when it was removed), read through the test's copy of the projection. */
  snapshot(id: string): Promise<Readonly<Record<string, unknown>> | undefined>;
  /** The entries of `when` that were dead-lettered, on every stream of the test. */
  readonly deadLetters: readonly DeadLetter[];
}

/**
 * Given/When/Then over a projection, on a real Redis and a real processor (`createProcessor`).
 * Each terminal call (`then`, `thenDeadLettered`, `run`) runs the scenario on a copy of the
 * projection whose streams, consumer group and key prefix carry a name of their own (so tests run in
 * parallel on one Redis): it starts the processor, appends the `given` events and waits until they
 * are applied, appends the `when` events and waits until every one is applied or dead-lettered,
 * checks, stops the processor, and deletes every key it made (`projection.remove`, the streams and
 * the event store's keys). Handlers see the stream names of the catalog, not the copy's.
 *
 * ```ts
 * await projectionTest(orders, { redis })
 *   .given([{ type: 'placed', data: { orderId: 'o1', item: 'book' } }])
 *   .when([{ type: 'shipped', data: { orderId: 'o1' } }])
 *   .then({ o1: { item: 'book', status: 'shipped' } });
 * ```
 */
export function projectionTest<Definitions extends StreamDefinitions>(
  projection: Projection<Definitions>,
  options: ProjectionTestOptions,
): ProjectionScenario<Definitions> {
  return new ProjectionScenario(projection, options, [], []);
}

export class ProjectionScenario<Definitions extends StreamDefinitions> {
  constructor(
    private readonly projection: Projection<Definitions>,
    private readonly options: ProjectionTestOptions,
    private readonly givenEvents: readonly TestEvent<Definitions>[],
    private readonly whenEvents: readonly TestEvent<Definitions>[],
  ) {}

  /** Events that happened before: appended and applied first (a dead-lettered one fails the test). */
  given(events: TestEvent<Definitions> | readonly TestEvent<Definitions>[]): ProjectionScenario<Definitions> {
    return new ProjectionScenario(
      this.projection,
      this.options,
      [...this.givenEvents, ...toList(events)],
      this.whenEvents,
    );
  }

  /** The events under test: appended after the given ones are applied. */
  when(events: TestEvent<Definitions> | readonly TestEvent<Definitions>[]): ProjectionScenario<Definitions> {
    return new ProjectionScenario(this.projection, this.options, this.givenEvents, [
      ...this.whenEvents,
      ...toList(events),
    ]);
  }

  /**
   * Runs the scenario and checks each listed snapshot's fields (exactly), or that it has none
   * (`undefined`). Rejects with node's AssertionError (with a diff) when they differ. Not a promise:
   * call it with the expected snapshots and await what it returns.
   */
  then(expected: ExpectedSnapshots): Promise<void> {
    if (typeof expected !== 'object' || expected === null) {
      return Promise.reject(
        new TypeError(
          'projectionTest: a scenario is not a promise; end it with .then({ <snapshot id>: { <field>: <value> } }) and await that',
        ),
      );
    }
    return this.execute(async (outcome) => {
      const actual: Record<string, Readonly<Record<string, unknown>> | undefined> = {};
      for (const id of Object.keys(expected)) actual[id] = await outcome.snapshot(id);
      deepStrictEqual(
        actual,
        { ...expected },
        `projection '${this.projection.name}': the snapshots differ from the expected ones`,
      );
    });
  }

  /** Runs the scenario and checks how many `when` events were dead-lettered, or that the predicate holds for them. */
  thenDeadLettered(expected: number | ((deadLetters: readonly DeadLetter[]) => boolean)): Promise<void> {
    return this.execute((outcome) => {
      if (typeof expected === 'number') {
        deepStrictEqual(
          outcome.deadLetters.length,
          expected,
          `projection '${this.projection.name}': ${outcome.deadLetters.length} event(s) dead-lettered, expected ${expected}`,
        );
      } else if (!expected(outcome.deadLetters)) {
        throw new Error(
          `projection '${this.projection.name}': the predicate does not hold for the dead letters ${JSON.stringify(outcome.deadLetters.map((d) => ({ entryId: d.entryId, reason: d.reason })))}`,
        );
      }
      return Promise.resolve();
    });
  }

  /** Runs the scenario and hands `check` what happened (before the keys are deleted). */
  run(check: (outcome: ScenarioOutcome) => Promise<void> | void): Promise<void> {
    return this.execute(async (outcome) => {
      await check(outcome);
    });
  }

  private async execute(check: (outcome: ScenarioOutcome) => Promise<void>): Promise<void> {
    const { redis } = this.options;
    const namespace = this.options.namespace ?? `rt${randomBytes(5).toString('hex')}`;
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(namespace))
      throw new TypeError(`projectionTest: namespace '${namespace}' must be 1-32 of A-Z a-z 0-9 _ -`);
    const copy = isolate(this.projection, namespace);
    const processor: ProjectionProcessor = createProcessor(copy.projection, {
      connection: redis,
      partitions: 1,
      blockMs: 50,
      rebalanceIntervalMs: 50,
      retryBackoffMs: 1,
      maxDeliveries: 2,
      ...this.options.processor,
    });
    const store = copy.projection.eventStore(redis);
    const deadLetters = new DeadLetters(redis);
    const appended = new Map<string, number>();
    const used = new Set<string>(copy.projection.streams);
    const timeoutMs = this.options.timeoutMs ?? 10_000;

    const append = async (events: readonly TestEvent<Definitions>[]) => {
      // One append per run of events to the same stream, in order.
      for (let i = 0; i < events.length;) {
        const stream = copy.streamOf(events[i]?.stream);
        const batch: EventInput[] = [];
        for (; i < events.length && copy.streamOf(events[i]?.stream) === stream; i++) {
          const event = events[i];
          if (event)
            batch.push({ type: event.type, data: event.data, ...(event.metadata ? { metadata: event.metadata } : {}) });
        }
        used.add(stream);
        await store.append(stream, batch);
        appended.set(stream, (appended.get(stream) ?? 0) + batch.length);
      }
    };
    const settle = async () => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const stats = processor.stats();
        const behind = [...appended].filter(([stream, count]) => {
          const s = stats[stream];
          return copy.handled.has(stream) && (s ? s.applied + s.skipped + s.deadLettered : 0) < count;
        });
        if (behind.length === 0) return;
        if (Date.now() > deadline) {
          throw new ProjectionTestTimeoutError(
            `projection '${this.projection.name}': not every event was applied or dead-lettered within ${timeoutMs} ms (${behind
              .map(
                ([stream, count]) =>
                  `${copy.original.get(stream) ?? stream}: ${count} appended, stats ${JSON.stringify(stats[stream] ?? {})}`,
              )
              .join('; ')}); raise timeoutMs if the handlers are slow`,
          );
        }
        await sleep(10);
      }
    };
    const listDeadLetters = async () =>
      (await Promise.all([...used].map((stream) => deadLetters.list(stream, { count: 10_000 })))).flat();

    try {
      await processor.start();
      await append(this.givenEvents);
      await settle();
      const givenDead = await listDeadLetters();
      if (givenDead.length > 0) throw new GivenEventDeadLetteredError(givenDead);
      await append(this.whenEvents);
      await settle();
      const snapshots = copy.projection.snapshots(redis);
      await check({
        deadLetters: await listDeadLetters(),
        snapshot: async (id) => {
          const snapshot = await snapshots.read(id);
          return snapshot?.exists ? { ...snapshot.fields } : undefined; // a plain object, for deepStrictEqual
        },
      });
    } finally {
      await processor.stop();
      await copy.projection.remove(redis, { force: true });
      const keys = [...used].flatMap((stream) => [stream, ...Object.values(eventStoreKeys).map((key) => key(stream))]);
      if (keys.length > 0) await redis.del(...keys);
    }
  }
}

interface IsolatedProjection {
  readonly projection: Projection;
  /** The copy's stream (name in Redis) of a catalog key; the only stream when the key is left out. */
  streamOf(key: string | undefined): string;
  /** The copy's streams that have handlers. */
  readonly handled: ReadonlySet<string>;
  /** Copy's stream name → the catalog's. */
  readonly original: ReadonlyMap<string, string>;
}

/** The projection with its streams, name and key prefix in a namespace of their own, its handlers unchanged. */
function isolate(projection: Projection, namespace: string): IsolatedProjection {
  if (projection.streamPrefixes.length > 0) {
    throw new TypeError(
      `projectionTest: '${projection.name}' reads streams by prefix (${projection.streamPrefixes.join(', ')}*): only projections of named streams are supported`,
    );
  }
  const { catalog } = projection;
  const keys = Object.keys(catalog.definitions);
  const definitions: Record<string, StreamDefinition> = {};
  const handlers: Record<string, Record<string, (event: RecordedEvent) => HandlerResult | Promise<HandlerResult>>> = {};
  const byKey = new Map<string, string>();
  const original = new Map<string, string>();
  for (const key of keys) {
    const definition = catalog.definitions[key];
    if (!definition) continue;
    const stream = catalog.streamOf(key);
    const renamed = `${namespace}:${stream}`;
    definitions[key] = { ...definition, stream: renamed };
    byKey.set(key, renamed);
    original.set(renamed, stream);
    for (const type of Object.keys(definition.schemas)) {
      if (!projection.handlers.find(stream, type)) continue;
      (handlers[key] ??= {})[type] = (event) => projection.handlers.run({ ...event, stream });
    }
  }
  const copy = defineProjection({
    name: `${projection.name}.${namespace}`.slice(-128),
    catalog: new EventCatalog(definitions),
    keyPrefix: `${namespace}:${projection.keyPrefix}`,
    handlers,
  });
  return {
    projection: copy,
    handled: new Set(copy.streams),
    original,
    streamOf(key) {
      if (key === undefined) {
        if (keys.length !== 1)
          throw new TypeError(
            `projectionTest: the catalog has ${keys.length} streams (${keys.join(', ')}): give each event its \`stream\``,
          );
        key = keys[0] ?? '';
      }
      const stream = byKey.get(key);
      if (!stream)
        throw new TypeError(`projectionTest: the catalog has no stream '${key}' (it has ${keys.join(', ')})`);
      return stream;
    },
  };
}

function toList<T>(events: T | readonly T[]): readonly T[] {
  return Array.isArray(events) ? (events as readonly T[]) : [events as T];
}
