import type { RecordedEvent } from '@redsource/event-store';
import type { SnapshotChange } from '@redsource/snapshot-store';
import { DuplicateHandlerError } from './errors.ts';

/** Folds one event into snapshot changes. Runs again on redelivery, so it must not have other effects. */
export type Handler<Data = unknown> = (
  event: RecordedEvent<string, Data>,
) =>
  | SnapshotChange
  | readonly SnapshotChange[]
  | undefined
  | Promise<SnapshotChange | readonly SnapshotChange[] | undefined>;

/**
 * Handlers per stream and event type; type `*` catches the types with no handler of their own, and a
 * stream name ending in `*` matches every stream that starts with what precedes it (`orders:*`).
 */
export class HandlerRegistry {
  private readonly handlers = new Map<string, Map<string, Handler>>();

  on<Data = unknown>(stream: string, type: string, handler: Handler<Data>): this {
    let byType = this.handlers.get(stream);
    if (!byType) this.handlers.set(stream, (byType = new Map<string, Handler>()));
    if (byType.has(type)) throw new DuplicateHandlerError(stream, type);
    byType.set(type, handler as Handler);
    return this;
  }

  /** Registers every handler of a map `{ stream: { type: handler } }`. */
  register(handlers: Readonly<Record<string, Readonly<Record<string, Handler>>>>): this {
    for (const [stream, byType] of Object.entries(handlers)) {
      for (const [type, handler] of Object.entries(byType)) this.on(stream, type, handler);
    }
    return this;
  }

  /** Streams registered by exact name. */
  get streams(): string[] {
    return [...this.handlers.keys()].filter((s) => !s.endsWith('*'));
  }

  /** Prefixes registered as `<prefix>*`: they match every stream whose name starts with the prefix. */
  get streamPrefixes(): string[] {
    return [...this.handlers.keys()].filter((s) => s.endsWith('*')).map((s) => s.slice(0, -1));
  }

  find(stream: string, type: string): Handler | undefined {
    const byType =
      this.handlers.get(stream) ?? this.handlers.get(`${longestPrefix(this.streamPrefixes, stream) ?? '\u0000'}*`);
    return byType?.get(type) ?? byType?.get('*');
  }

  /** Runs the handler of an event; an event with no handler has no effect. Synchronous handlers stay synchronous. */
  run(event: RecordedEvent): readonly SnapshotChange[] | Promise<readonly SnapshotChange[]> {
    const handler = this.find(event.stream, event.type);
    if (!handler) return [];
    const result = handler(event);
    return result instanceof Promise ? result.then(toChangeList) : toChangeList(result);
  }
}

function toChangeList(result: SnapshotChange | readonly SnapshotChange[] | undefined): readonly SnapshotChange[] {
  if (result === undefined) return [];
  return isChangeList(result) ? result : [result];
}

function isChangeList(value: SnapshotChange | readonly SnapshotChange[]): value is readonly SnapshotChange[] {
  return Array.isArray(value);
}

export function longestPrefix(prefixes: readonly string[], name: string): string | undefined {
  return prefixes.filter((p) => name.startsWith(p)).sort((a, b) => b.length - a.length)[0];
}
