import { readFileSync } from 'node:fs';
import type { Redis, Result } from 'ioredis';
import { toStreamEntries, type StreamEntry } from '@redsource/event-store';
import { processorKeys } from './keys.ts';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    redsourceRedrive(deadLetters: string, stream: string, deadId: string): Result<string | null, Context>;
  }
}

const ENTRY_ID = /^\d+-\d+$/;

const redriveSource = readFileSync(new URL('./scripts/redrive-2.lua', import.meta.url), 'utf8');

/** An entry that could not be applied, with why. */
export interface DeadLetter {
  /** Its id in the dead-letter stream (what show/retry/drop take). */
  readonly id: string;
  readonly stream: string;
  /** Its id in the original stream. */
  readonly entryId: string;
  readonly reason: string;
  /** The original entry's fields, as written. */
  readonly fields: readonly string[];
  readonly group: string;
  /** When it was dead-lettered (ms since epoch). */
  readonly deadAt: number;
}

/** List, inspect, re-drive and drop dead-lettered entries of a stream. */
export class DeadLetters {
  constructor(private readonly redis: Redis) {
    if (typeof (redis as Partial<Redis>).redsourceRedrive !== 'function') {
      redis.defineCommand('redsourceRedrive', { numberOfKeys: 2, lua: redriveSource });
    }
  }

  async count(stream: string): Promise<number> {
    return this.redis.xlen(processorKeys.deadLetters(stream));
  }

  /** Oldest first; page with `after` (the last id seen). */
  async list(stream: string, options: { count?: number; after?: string } = {}): Promise<DeadLetter[]> {
    const from = options.after ? `(${options.after}` : '-';
    const entries = toStreamEntries(await this.redis.xrange(processorKeys.deadLetters(stream), from, '+', 'COUNT', options.count ?? 100));
    return entries.map((e) => toDeadLetter(e));
  }

  async show(stream: string, id: string): Promise<DeadLetter | undefined> {
    if (!ENTRY_ID.test(id)) return undefined;
    const [entry] = toStreamEntries(await this.redis.xrange(processorKeys.deadLetters(stream), id, id));
    return entry && toDeadLetter(entry);
  }

  /**
   * Appends the original fields to the stream again (a new entry, after everything already there)
   * and removes the dead letter. Fix what made it fail first: the handler, or the data by dropping it.
   * Returns the new entry id, or undefined if there is no such dead letter.
   */
  async retry(stream: string, id: string): Promise<string | undefined> {
    if (!ENTRY_ID.test(id)) return undefined;
    return (await this.redis.redsourceRedrive(processorKeys.deadLetters(stream), stream, id)) ?? undefined;
  }

  async drop(stream: string, id: string): Promise<boolean> {
    if (!ENTRY_ID.test(id)) return false;
    return (await this.redis.xdel(processorKeys.deadLetters(stream), id)) === 1;
  }
}

function toDeadLetter(entry: StreamEntry): DeadLetter {
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < entry.fields.length; i += 2) record[entry.fields[i] as string] = entry.fields[i + 1] as string;
  let fields: string[] = [];
  try {
    const parsed: unknown = JSON.parse(record['fields'] ?? '[]');
    if (Array.isArray(parsed)) fields = parsed.map(String);
  } catch {
    fields = [];
  }
  return {
    id: entry.id,
    stream: record['stream'] ?? '',
    entryId: record['entry_id'] ?? '',
    reason: record['reason'] ?? '',
    fields,
    group: record['group'] ?? '',
    deadAt: Number(record['dead_at'] ?? 0),
  };
}
