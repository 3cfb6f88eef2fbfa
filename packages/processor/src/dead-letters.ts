import { readFileSync } from 'node:fs';
import type { Redis, Result } from 'ioredis';
import { processorKeys } from './keys.ts';
import { escapeBytes } from './not-utf8.ts';

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
  /**
   * The original entry's fields as text: as written when UTF-8; a field that is not shows each
   * byte of an invalid sequence as `\xHH` (and a backslash as `\\`), as `redsource dlq show` prints it.
   */
  readonly fields: readonly string[];
  /** The original entry's fields byte for byte: what retry appends. */
  readonly bytes: readonly Buffer[];
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
    const entries = await this.redis.xrangeBuffer(
      processorKeys.deadLetters(stream),
      from,
      '+',
      'COUNT',
      options.count ?? 100,
    );
    return entries.map(([entryId, fields]) => toDeadLetter(entryId, fields));
  }

  async show(stream: string, id: string): Promise<DeadLetter | undefined> {
    if (!ENTRY_ID.test(id)) return undefined;
    const [entry] = await this.redis.xrangeBuffer(processorKeys.deadLetters(stream), id, id);
    return entry && toDeadLetter(entry[0], entry[1]);
  }

  /**
   * Appends the original entry to the stream again, byte for byte (a new entry, after everything already there)
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

/** A dead-letter entry, read as bytes: `original` (exact bytes, as netstrings) when it has it, else the older `fields` JSON text. */
function toDeadLetter(id: Buffer, items: readonly Buffer[]): DeadLetter {
  const record = new Map<string, Buffer>();
  for (let i = 0; i + 1 < items.length; i += 2) record.set((items[i] as Buffer).toString(), items[i + 1] as Buffer);
  const text = (name: string) => record.get(name)?.toString() ?? '';
  const original = record.get('original');
  const bytes = original ? parseNetstrings(original) : parseFieldsJson(text('fields')).map((f) => Buffer.from(f));
  return {
    id: id.toString(),
    stream: text('stream'),
    entryId: text('entry_id'),
    reason: text('reason'),
    fields: bytes.map(escapeBytes),
    bytes,
    group: text('group'),
    deadAt: Number(text('dead_at') || 0),
  };
}

function parseFieldsJson(json: string): string[] {
  try {
    const parsed: unknown = JSON.parse(json || '[]');
    return Array.isArray(parsed) ? parsed.map(String) : [];
  } catch {
    return [];
  }
}

/** `<length>:<bytes>,` per item (as apply-batch.lua writes them); a malformed tail is left out. */
function parseNetstrings(data: Buffer): Buffer[] {
  const items: Buffer[] = [];
  let pos = 0;
  while (pos < data.length) {
    const colon = data.indexOf(0x3a, pos);
    const length = colon < 0 ? NaN : Number(data.subarray(pos, colon).toString());
    if (!Number.isSafeInteger(length) || colon + 1 + length > data.length) break;
    items.push(data.subarray(colon + 1, colon + 1 + length));
    pos = colon + length + 2;
  }
  return items;
}
