import { createHash } from 'node:crypto';
import { nestingDepth } from '@redsource/event-store';

/**
 * Which partition a subject belongs to: the first 32 bits of its SHA-1, modulo the count (stable
 * across processes, versions and languages: a cursor means the same entries to every processor).
 */
export function partitionOfSubject(subject: string, partitions: number): number {
  return Number.parseInt(createHash('sha1').update(subject, 'utf8').digest('hex').slice(0, 8), 16) % partitions;
}

/**
 * The subject of a raw entry: the first of `subjectFields` among a flat entry's fields (the last
 * occurrence of a name counts), or in an envelope's `data` object (a non-negative integer counts,
 * written plainly), else the envelope's `subject` attribute. `data` nested deeper than 1000 levels
 * is not looked into (an entry the event store refuses anyway: it is dead-lettered, its partition
 * orders nothing).
 */
export function subjectOfEntry(fields: readonly string[], subjectFields: readonly string[]): string | undefined {
  const flat = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) flat.set(fields[i] as string, fields[i + 1] as string);
  if (!flat.has('specversion')) {
    for (const name of subjectFields) {
      const value = flat.get(name);
      if (value !== undefined) return value;
    }
    return undefined;
  }
  const data = flat.get('data');
  // The event store's decoder stops at 1000 levels of nesting (Redis' cjson did too): so does this.
  if (data !== undefined && nestingDepth(data) <= MAX_DEPTH) {
    let decoded: unknown;
    try {
      decoded = JSON.parse(data);
    } catch {
      decoded = undefined;
    }
    if (typeof decoded === 'object' && decoded !== null && !Array.isArray(decoded)) {
      for (const name of subjectFields) {
        const value = Object.hasOwn(decoded, name) ? (decoded as Record<string, unknown>)[name] : undefined;
        if (typeof value === 'string') return value;
        if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 2 ** 53)
          return value.toFixed(0);
      }
    }
  }
  return flat.get('subject');
}

const MAX_DEPTH = 1_000;

/** The partition of a raw entry. */
export function partitionOfEntry(
  fields: readonly string[],
  subjectFields: readonly string[],
  partitions: number,
): number {
  const subject = subjectOfEntry(fields, subjectFields);
  return subject === undefined ? 0 : partitionOfSubject(subject, partitions);
}

/** Subjects hashed once each, up to this many remembered (then forgotten all at once). */
const REMEMBERED_SUBJECTS = 100_000;

/**
 * The partition of each entry a processor reads (every entry of its streams: it keeps its own
 * partitions' ones). The flat form (the seed's, any client's XADD) is looked up without a copy of
 * the fields, and each subject is hashed once.
 */
export class PartitionFinder {
  private readonly bySubject = new Map<string, number>();
  private readonly fieldNames = new Map<string, Buffer[]>();
  private readonly byBytes = new Map<string, number>();

  constructor(
    readonly partitions: number,
    private readonly subjectFields: (stream: string) => readonly string[],
  ) {}

  entry(stream: string, fields: readonly string[]): number {
    const subject = isEnvelope(fields)
      ? subjectOfEntry(fields, this.subjectFields(stream))
      : flatSubject(fields, this.subjectFields(stream));
    return subject === undefined ? 0 : this.subject(subject);
  }

  /**
   * The partition of an entry read as bytes, decoding only what the subject needs: the flat form's
   * subject field (as text, as a reader of the entry as text would see it); an envelope is decoded whole.
   */
  rawEntry(stream: string, fields: readonly Buffer[]): number {
    let names = this.fieldNames.get(stream);
    if (!names) this.fieldNames.set(stream, (names = this.subjectFields(stream).map((name) => Buffer.from(name))));
    // Lengths first: most names differ in length, and that costs no call into Buffer.equals.
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const field = fields[i] as Buffer;
      if (field.length === SPECVERSION.length && field.equals(SPECVERSION))
        return this.entry(
          stream,
          fields.map((f) => f.toString()),
        );
    }
    for (const name of names) {
      for (let i = fields.length - (fields.length % 2) - 2; i >= 0; i -= 2) {
        const field = fields[i] as Buffer;
        if (field.length === name.length && field.equals(name)) return this.subjectBytes(fields[i + 1] as Buffer);
      }
    }
    return 0;
  }

  /** A subject given as bytes: remembered by its bytes, hashed as the text a reader decodes them to. */
  private subjectBytes(bytes: Buffer): number {
    const key = bytes.toString('latin1');
    let partition = this.byBytes.get(key);
    if (partition === undefined) {
      if (this.byBytes.size >= REMEMBERED_SUBJECTS) this.byBytes.clear();
      partition = this.subject(bytes.toString());
      this.byBytes.set(key, partition);
    }
    return partition;
  }

  subject(subject: string): number {
    let partition = this.bySubject.get(subject);
    if (partition === undefined) {
      if (this.bySubject.size >= REMEMBERED_SUBJECTS) this.bySubject.clear();
      partition = partitionOfSubject(subject, this.partitions);
      this.bySubject.set(subject, partition);
    }
    return partition;
  }
}

const SPECVERSION = Buffer.from('specversion');

function isEnvelope(fields: readonly string[]): boolean {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'specversion') return true;
  return false;
}

function flatSubject(fields: readonly string[], subjectFields: readonly string[]): string | undefined {
  for (const name of subjectFields) {
    for (let i = fields.length - (fields.length % 2) - 2; i >= 0; i -= 2) {
      if (fields[i] === name) return fields[i + 1];
    }
  }
  return undefined;
}
