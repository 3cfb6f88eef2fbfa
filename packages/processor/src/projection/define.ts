import type { Redis } from 'ioredis';
import {
  RedisEventStore,
  type EventCatalog,
  type EventDataOf,
  type EventTypeOf,
  type RecordedEvent,
  type StreamDefinition,
  type StreamDefinitions,
} from '@redsource/event-store';
import { SnapshotStore, type SnapshotChange } from '@redsource/snapshot-store';
import { InvalidProjectionError } from '../errors.ts';
import { HandlerRegistry, type Handler } from '../handlers.ts';
import { GROUP_NAME } from '../partitions/keys.ts';
import { removeProjection, type RemoveProjectionOptions, type RemovedProjection } from './remove.ts';

export type HandlerResult = SnapshotChange | readonly SnapshotChange[] | undefined;

/**
 * Folds one event of type `Type` of a stream into snapshot changes. `event.data` is what the
 * stream's schema for that type outputs; for `*` (the types with no schema of their own) `event.type`
 * is any name and the data is the `*` schema's.
 */
export type ProjectionHandler<Definition extends StreamDefinition, Type extends string> = (
  event: RecordedEvent<Type extends '*' ? string : Type, EventDataOf<Definition, Type>>,
) => HandlerResult | Promise<HandlerResult>;

/** Per catalog key, per event type of that stream: its handler. Keys and types the catalog lacks do not compile. */
export type ProjectionHandlers<Definitions extends StreamDefinitions> = {
  readonly [Key in keyof Definitions]?: {
    readonly [Type in EventTypeOf<Definitions[Key]>]?: ProjectionHandler<Definitions[Key], Type>;
  };
};

export interface ProjectionDefinition<Definitions extends StreamDefinitions> {
  /** Names its cursors, totals and rebuild state; the default consumer group of its processors. 1-128 of `A-Z a-z 0-9 _ . : -`. */
  readonly name: string;
  /** The streams and their event schemas: handlers are checked against it, and events decoded with it. */
  readonly catalog: EventCatalog<Definitions>;
  /** Snapshot key = keyPrefix + snapshot id. No other projection's prefix may start with it (removal deletes by prefix). */
  readonly keyPrefix: string;
  readonly handlers: ProjectionHandlers<NoInfer<Definitions>>;
}

/**
 * A projection: which events of which streams fold into which snapshots. Defined once (see
 * `defineProjection`); `createProcessor` runs it, `replay` rebuilds it, `remove` deletes what it owns.
 */
export class Projection<Definitions extends StreamDefinitions = StreamDefinitions> {
  readonly name: string;
  readonly keyPrefix: string;
  readonly catalog: EventCatalog<Definitions>;
  /** The handlers, registered under the streams' names in Redis. */
  readonly handlers: HandlerRegistry;

  constructor(definition: ProjectionDefinition<Definitions>) {
    if (!GROUP_NAME.test(definition.name))
      throw new InvalidProjectionError(
        `name '${definition.name}' must be 1-128 characters from A-Z a-z 0-9 _ . : - (it is part of key names)`,
      );
    if (!/^[A-Za-z0-9_:.{}-]{1,256}$/.test(definition.keyPrefix)) {
      throw new InvalidProjectionError(
        `keyPrefix '${definition.keyPrefix}' must be 1-256 characters from A-Z a-z 0-9 _ : . - { }`,
      );
    }
    this.name = definition.name;
    this.keyPrefix = definition.keyPrefix;
    this.catalog = definition.catalog;
    this.handlers = new HandlerRegistry();
    // The one widening: the codec decodes each event through the schema that typed its handler.
    const byKey = definition.handlers as Readonly<
      Record<string, Readonly<Record<string, Handler | undefined>> | undefined>
    >;
    for (const key of Object.keys(byKey)) {
      const stream = definition.catalog.streamOf(key as Extract<keyof Definitions, string>);
      const { schemas } = definition.catalog.definition(stream);
      for (const [type, handler] of Object.entries(byKey[key] ?? {})) {
        if (!Object.hasOwn(schemas, type))
          throw new InvalidProjectionError(
            `'${key}' declares no event type '${type}' (it has ${Object.keys(schemas).join(', ')})`,
          );
        if (handler) this.handlers.on(stream, type, handler);
      }
    }
    if (this.streams.length === 0 && this.streamPrefixes.length === 0)
      throw new InvalidProjectionError(`'${this.name}' has no handler: give at least one`);
  }

  /** The streams it reads, by their names in Redis (those declared as `<prefix>*` are in streamPrefixes). */
  get streams(): string[] {
    return this.handlers.streams;
  }

  get streamPrefixes(): string[] {
    return this.handlers.streamPrefixes;
  }

  /** Its snapshots, read and written through `redis`. */
  snapshots(redis: Redis): SnapshotStore {
    return new SnapshotStore({ redis, keyPrefix: this.keyPrefix, projection: this.name });
  }

  /** An event store over its catalog (to append, read, or `replay` it). */
  eventStore(redis: Redis): RedisEventStore {
    return new RedisEventStore({ redis, catalog: this.catalog });
  }

  /** Deletes every key it owns: see removeProjection. */
  remove(redis: Redis, options: RemoveProjectionOptions = {}): Promise<RemovedProjection> {
    return removeProjection(redis, this, options);
  }
}

/**
 * Defines a projection from an event catalog: each handler's `event.data` is typed by the catalog's
 * schema for its stream and type (a type the stream does not declare, or a key the catalog lacks,
 * does not compile), and the streams are named once, in the catalog.
 *
 * ```ts
 * const orders = defineProjection({
 *   name: 'orders', catalog, keyPrefix: 'order_',
 *   handlers: { orders: { placed: ({ data }) => ({ snapshotId: data.orderId, mutations: [{ op: 'create' }] }) } },
 * });
 * ```
 */
export function defineProjection<Definitions extends StreamDefinitions>(
  definition: ProjectionDefinition<Definitions>,
): Projection<Definitions> {
  return new Projection(definition);
}
