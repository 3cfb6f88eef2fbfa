import { createHash } from 'node:crypto';
import { nestingDepth } from '@redsource/event-store';

/**
 * Which partition a subject belongs to: the first 32 bits of its SHA-1, modulo the count. Written
 * once here and once in route.lua (redis.sha1hex); the two must agree.
 */
export function partitionOfSubject(subject: string, partitions: number): number {
  return Number.parseInt(createHash('sha1').update(subject, 'utf8').digest('hex').slice(0, 8), 16) % partitions;
}

/**
 * The subject of a raw entry, as route.lua finds it: the first of `subjectFields` among a flat
 * entry's fields, or in an envelope's `data` object (a non-negative integer counts, written
 * plainly), else the envelope's `subject` attribute. `data` nested deeper than 1000 levels is not
 * looked into (cjson's limit). Text only cjson takes for JSON (`0x10`, `01`) may differ here: such an
 * entry fails to decode anyway and is dead-lettered, so its partition orders nothing.
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
  // route.lua's JSON decoder (Redis' cjson) stops at 1000 levels of nesting: so does this mirror.
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
        if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 2 ** 53) return value.toFixed(0);
      }
    }
  }
  return flat.get('subject');
}

const MAX_DEPTH = 1_000;

/** The partition route.lua puts a raw entry in. */
export function partitionOfEntry(fields: readonly string[], subjectFields: readonly string[], partitions: number): number {
  const subject = subjectOfEntry(fields, subjectFields);
  return subject === undefined ? 0 : partitionOfSubject(subject, partitions);
}
