import { createHash } from 'node:crypto';

/**
 * A weak ETag for a profile: the snapshot's revision (for people reading logs) and a hash of the
 * profile's JSON body (what makes it right: a rebuilt snapshot can pass through a revision number with
 * other content, a hash cannot).
 */
export function profileEtag(revision: number, body: string): string {
  const hash = createHash('sha1').update(body).digest('base64url').slice(0, 22);
  return `W/"${revision}-${hash}"`;
}

/** RFC 9110 If-None-Match: `*` or a list of tags, compared weakly (W/ ignored). */
export function ifNoneMatchHits(header: string | string[] | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const opaque = stripWeak(etag);
  const tags = (Array.isArray(header) ? header.join(',') : header).split(',').map((t) => t.trim());
  return tags.some((tag) => tag === '*' || stripWeak(tag) === opaque);
}

const stripWeak = (tag: string) => (tag.startsWith('W/') ? tag.slice(2) : tag);
