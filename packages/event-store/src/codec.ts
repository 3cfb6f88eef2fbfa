import { randomUUID } from 'node:crypto';
import type { EventCatalog } from './catalog.ts';
import { EventStoreError, UndecodableEntryError } from './errors.ts';
import type { EventInput, RecordedEvent, WireFormat } from './types.ts';

/** Field names that carry the event type in the flat form. The seed uses both. */
export const DEFAULT_TYPE_FIELDS: readonly string[] = ['command', 'action'];

/** CloudEvents 1.0 attributes the envelope form uses; `specversion` tells the two forms apart. */
const ENVELOPE_MARKER = 'specversion';
const ENVELOPE_ATTRIBUTES = new Set([
  'specversion',
  'id',
  'source',
  'type',
  'subject',
  'time',
  'datacontenttype',
  'data',
]);

export interface CodecOptions {
  readonly typeFields?: readonly string[];
  /** CloudEvents `source` written on append. */
  readonly source?: string;
}

/**
 * Turns stream entries into typed events and back. Both wire forms decode to the same event:
 * the flat form (`user_id 1 command register name Duffy`, as any client writes it) and the
 * CloudEvents envelope with JSON `data` the framework writes (nested values survive).
 */
export class EventCodec {
  private readonly typeFields: readonly string[];
  private readonly source: string;

  constructor(
    private readonly catalog: EventCatalog,
    options: CodecOptions = {},
  ) {
    this.typeFields = options.typeFields ?? DEFAULT_TYPE_FIELDS;
    this.source = options.source ?? 'redsource';
  }

  /** Validates an event and returns the entry fields to XADD, plus its subject. */
  encode(
    stream: string,
    event: EventInput,
  ): { fields: string[]; subject: string | undefined; eventId: string | undefined } {
    const data = this.catalog.parse(stream, event.type, event.data);
    const subject = event.metadata?.subject ?? this.catalog.subjectOf(stream, data);
    const eventId = event.metadata?.id;
    const fields = ['specversion', '1.0', 'id', eventId ?? randomUUID()];
    fields.push('source', event.metadata?.source ?? this.source, 'type', event.type);
    if (subject !== undefined) fields.push('subject', subject);
    fields.push('time', event.metadata?.time ?? isoTimeNow(), 'datacontenttype', 'application/json');
    fields.push('data', JSON.stringify(data));
    return { fields, subject, eventId };
  }

  /** Decodes one entry; throws UndecodableEntryError or EventValidationError (both EventStoreError). */
  decode(stream: string, entryId: string, fields: readonly string[]): RecordedEvent {
    const record = toRecord(stream, entryId, fields);
    return Object.hasOwn(record, ENVELOPE_MARKER)
      ? this.decodeEnvelope(stream, entryId, record)
      : this.decodeFlat(stream, entryId, record);
  }

  /** Like decode, but returns the error instead of throwing it, so a batch can go on. */
  tryDecode(stream: string, entryId: string, fields: readonly string[]): RecordedEvent | EventStoreError {
    try {
      return this.decode(stream, entryId, fields);
    } catch (error) {
      if (error instanceof EventStoreError) return error;
      throw error;
    }
  }

  private decodeFlat(stream: string, entryId: string, record: Record<string, string>): RecordedEvent {
    // Once per entry on the processor's hot path: no intermediate arrays or sets.
    let type: string | undefined;
    for (const field of this.typeFields) {
      if (!Object.hasOwn(record, field)) continue;
      if (type === undefined) type = record[field];
      else if (record[field] !== type) {
        const present = this.typeFields.filter((f) => Object.hasOwn(record, f));
        throw new UndecodableEntryError(
          stream,
          entryId,
          `type fields disagree (${present.map((f) => `${f}=${record[f]}`).join(', ')})`,
        );
      }
    }
    if (type === undefined) {
      throw new UndecodableEntryError(stream, entryId, `no type field (one of ${this.typeFields.join(', ')})`);
    }
    // Null-prototype objects here and below: a field may be called `__proto__` or `constructor`.
    const raw = Object.create(null) as Record<string, string>;
    for (const key in record) if (!this.typeFields.includes(key)) raw[key] = record[key] as string;
    const data = this.catalog.parse(stream, type, raw);
    return freezeEvent({ type, data, stream, entryId, format: 'flat', metadata: {} });
  }

  private decodeEnvelope(stream: string, entryId: string, record: Record<string, string>): RecordedEvent {
    const type = record['type'];
    if (!type) throw new UndecodableEntryError(stream, entryId, 'envelope without a type attribute');
    let payload: unknown = {};
    if (record['data'] !== undefined) {
      // Redis' cjson reads no deeper: such data could not be read by a script either.
      if (nestingDepth(record['data']) > MAX_DATA_DEPTH)
        throw new UndecodableEntryError(stream, entryId, `envelope data nests deeper than ${MAX_DATA_DEPTH} levels`);
      try {
        payload = JSON.parse(record['data']);
      } catch {
        throw new UndecodableEntryError(stream, entryId, 'envelope data is not valid JSON');
      }
    }
    const data = this.catalog.parse(stream, type, payload);
    const metadata = Object.create(null) as Record<string, string>;
    for (const attribute of ['id', 'source', 'subject', 'time'] as const) {
      const value = record[attribute];
      if (value !== undefined) metadata[attribute] = value;
    }
    for (const key of Object.keys(record)) {
      if (!ENVELOPE_ATTRIBUTES.has(key)) metadata[key] = record[key] as string;
    }
    return freezeEvent({ type, data, stream, entryId, format: 'envelope', metadata });
  }
}

const MAX_DATA_DEPTH = 1_000;

/**
 * The current time as an ISO 8601 string, formatted once per millisecond: a batch of events encoded
 * in the same millisecond shares it, and formatting a Date costs more than the rest of an envelope.
 */
function isoTimeNow(): string {
  const now = Date.now();
  if (now !== lastIsoTime.ms) lastIsoTime = { ms: now, text: new Date(now).toISOString() };
  return lastIsoTime.text;
}
let lastIsoTime = { ms: Number.NaN, text: '' };

/** How deep arrays and objects nest in a JSON text (brackets inside strings do not count). */
export function nestingDepth(json: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) deepest = Math.max(deepest, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return deepest;
}

function toRecord(stream: string, entryId: string, fields: readonly string[]): Record<string, string> {
  if (fields.length % 2 !== 0) throw new UndecodableEntryError(stream, entryId, 'odd number of field/value items');
  const record: Record<string, string> = Object.create(null) as Record<string, string>;
  for (let i = 0; i < fields.length; i += 2) {
    const key = fields[i] as string;
    if (Object.hasOwn(record, key)) throw new UndecodableEntryError(stream, entryId, `field '${key}' appears twice`);
    record[key] = fields[i + 1] as string;
  }
  return record;
}

// Readonly by type, not frozen: freezing every event costs the hot path for nothing the compiler does not already give.
function freezeEvent(event: {
  type: string;
  data: unknown;
  stream: string;
  entryId: string;
  format: WireFormat;
  metadata: Record<string, string>;
}): RecordedEvent {
  return event;
}
