import type { z } from 'zod';
import { EventValidationError, UnknownEventTypeError, UnknownStreamError, type FieldIssue } from './errors.ts';

/** Event type name → zod schema of its data. The key `*` matches any type not listed. */
export type EventSchemas = Readonly<Record<string, z.ZodType>>;

export interface StreamDefinition {
  /**
   * The stream's name in Redis, when the catalog key is not that name: the key then names the stream
   * in code (`orders`) and the name can come from configuration (`orders_v2`, `orders:*`). Default: the key.
   */
  readonly stream?: string;
  readonly schemas: EventSchemas;
  /** Which entity an event concerns (the user id); used for per-subject versions on append. */
  readonly subjectOf?: (data: unknown) => string | undefined;
  /**
   * Where a raw entry names its subject, for partitioned processing: field names looked up, in this
   * order, among a flat entry's fields or in an envelope's `data`; an envelope's `subject` attribute
   * comes after them. A subject's entries share a partition, so they are applied in order.
   */
  readonly subjectFields?: readonly string[];
  /**
   * The type names the `*` schema accepts (by default any): a type that is not listed and does not
   * match is refused like invalid data (EventValidationError on its `type` field), on append and decode alike.
   */
  readonly otherTypes?: { readonly pattern: RegExp; readonly message: string };
}

/** Catalog key → its stream's definition. */
export type StreamDefinitions = Readonly<Record<string, StreamDefinition>>;

/** The event types a stream declares (`*` included when it has a schema for the others). */
export type EventTypeOf<Definition extends StreamDefinition> = Extract<keyof Definition['schemas'], string>;

/** The data of an event of that type as its schema outputs it (what decoding gives a handler). */
export type EventDataOf<
  Definition extends StreamDefinition,
  Type extends string,
> = Type extends keyof Definition['schemas'] ? z.output<Definition['schemas'][Type]> : never;

/**
 * Which event types each stream carries. Keys are the stream names, or names for them in code whose
 * `stream` gives the name in Redis (from configuration). `Definitions` keeps the schemas' types, so a
 * projection's handlers get each event's data typed from its schema (see `EventDataOf`).
 */
export class EventCatalog<Definitions extends StreamDefinitions = StreamDefinitions> {
  /** The definitions as given, by catalog key. */
  readonly definitions: Definitions;
  private readonly streams: ReadonlyMap<string, StreamDefinition>;

  constructor(definitions: Definitions) {
    this.definitions = definitions;
    this.streams = new Map(
      Object.entries(definitions).map(([key, definition]) => [definition.stream ?? key, definition]),
    );
  }

  /** The stream name in Redis of a catalog key (its `stream`, else the key itself). */
  streamOf(key: Extract<keyof Definitions, string>): string {
    const definition: StreamDefinition | undefined = Object.hasOwn(this.definitions, key)
      ? this.definitions[key]
      : undefined;
    if (!definition) throw new UnknownStreamError(key, Object.keys(this.definitions));
    return definition.stream ?? key;
  }

  get streamNames(): string[] {
    return [...this.streams.keys()];
  }

  has(stream: string): boolean {
    return this.streams.has(stream) || this.matchPrefix(stream) !== undefined;
  }

  definition(stream: string): StreamDefinition {
    const found = this.streams.get(stream) ?? this.matchPrefix(stream);
    if (!found) throw new UnknownStreamError(stream, this.streamNames);
    return found;
  }

  /** A key `<prefix>*` declares every stream whose name starts with the prefix; the longest prefix wins. */
  private matchPrefix(stream: string): StreamDefinition | undefined {
    let best: string | undefined;
    for (const name of this.streams.keys()) {
      if (name.endsWith('*') && stream.startsWith(name.slice(0, -1)) && (!best || name.length > best.length))
        best = name;
    }
    return best === undefined ? undefined : this.streams.get(best);
  }

  /** Validates and normalises an event's data; throws EventValidationError naming the fields at fault. */
  parse(stream: string, type: string, data: unknown): unknown {
    const { schemas, otherTypes } = this.definition(stream);
    // '*' names the schema for the types not listed; it is not a type: an event of type '*' is one of those.
    const listed = type !== '*' && Object.hasOwn(schemas, type);
    const schema = listed ? schemas[type] : schemas['*'];
    if (!schema) throw new UnknownEventTypeError(stream, type, Object.keys(schemas));
    if (!listed && otherTypes && !otherTypes.pattern.test(type))
      throw new EventValidationError(stream, type, [{ field: 'type', message: otherTypes.message }]);
    const result = schema.safeParse(data);
    if (!result.success) throw new EventValidationError(stream, type, toFieldIssues(result.error));
    return result.data;
  }

  /** The field names a raw entry of the stream names its subject with (empty: by `subject` attribute only). */
  subjectFields(stream: string): readonly string[] {
    return this.definition(stream).subjectFields ?? [];
  }

  subjectOf(stream: string, data: unknown): string | undefined {
    return this.definition(stream).subjectOf?.(data);
  }
}

function toFieldIssues(error: z.ZodError): FieldIssue[] {
  return error.issues.map((issue) => ({ field: issue.path.map(String).join('.'), message: issue.message }));
}
