import { isUtf8 } from 'node:buffer';
import type { Redis } from 'ioredis';
import { EventStoreError, type StreamEntry } from '@redsource/event-store';

/** An entry holds bytes that are not UTF-8: decoded as text they would become U+FFFD, so distinct inputs would become one. */
export class NotUtf8Error extends EventStoreError {
  constructor(
    readonly stream: string,
    readonly entryId: string,
    readonly field: string,
    readonly inName: boolean,
  ) {
    super(
      'RS_NOT_UTF8',
      inName
        ? `the name of a field of entry ${entryId} is not UTF-8 (${field}); append it as UTF-8 text`
        : `field '${field}' of entry ${entryId} is not UTF-8; append its value as UTF-8 text (or encode binary data, e.g. base64)`,
    );
  }
}

/**
 * ioredis decodes replies as UTF-8 and turns bytes that are not into U+FFFD. Only an entry whose
 * text shows U+FFFD can be such an entry: the one check every entry pays, synchronously.
 */
export function mayBeNotUtf8(entry: StreamEntry): boolean {
  for (const field of entry.fields) if (field.includes('\ufffd')) return true;
  return false;
}

/**
 * Reads an entry that mayBeNotUtf8 again as bytes and checks them (a genuine U+FFFD in valid
 * UTF-8 is just a character). Returns the error to dead-letter it with, or undefined.
 */
export async function notUtf8(redis: Redis, stream: string, entry: StreamEntry): Promise<NotUtf8Error | undefined> {
  const [found] = await redis.xrangeBuffer(stream, entry.id, entry.id);
  const fields = found?.[1] ?? [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i] as Buffer;
    if (!isUtf8(name)) return new NotUtf8Error(stream, entry.id, escapeBytes(name), true);
    if (!isUtf8(fields[i + 1] as Buffer)) return new NotUtf8Error(stream, entry.id, name.toString(), false);
  }
  return undefined;
}

/**
 * Bytes as text: valid UTF-8 as it is, each byte of an invalid sequence as `\xHH` (as redis-cli
 * shows them), and a backslash as `\\` so the escapes cannot be confused with what was written.
 * Valid UTF-8 input is returned unchanged.
 */
export function escapeBytes(bytes: Buffer): string {
  if (isUtf8(bytes)) return bytes.toString();
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i] as number;
    const length =
      lead < 0x80
        ? 1
        : lead >= 0xc2 && lead <= 0xdf
          ? 2
          : lead >= 0xe0 && lead <= 0xef
            ? 3
            : lead >= 0xf0 && lead <= 0xf4
              ? 4
              : 0;
    const sequence = length > 0 ? bytes.subarray(i, i + length) : undefined;
    if (sequence && sequence.length === length && isUtf8(sequence)) {
      const text = sequence.toString();
      out += text === '\\' ? '\\\\' : text;
      i += length;
    } else {
      out += `\\x${lead.toString(16).padStart(2, '0')}`;
      i += 1;
    }
  }
  return out;
}
