import type { StreamEntry } from './types.ts';

/** XRANGE / XREVRANGE / XCLAIM reply → entries. Entries deleted from the stream come back with null fields: kept as []. */
export function toStreamEntries(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply)) return [];
  return reply.map((item) => {
    const [id, fields] = item as [string, string[] | null];
    return { id, fields: fields ?? [] };
  });
}

/** XREAD / XREADGROUP reply → entries per stream (null = nothing arrived). */
export function parseXReadReply(reply: unknown): { stream: string; entries: StreamEntry[] }[] {
  if (!Array.isArray(reply)) return [];
  return reply.map((item) => {
    const [stream, entries] = item as [string, unknown];
    return { stream, entries: toStreamEntries(entries) };
  });
}
