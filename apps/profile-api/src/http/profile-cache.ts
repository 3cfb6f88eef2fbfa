import type { SnapshotVersion } from '@redsource/snapshot-store';

/** A profile as sent: the JSON body and its ETag, for one version of its snapshot. */
export interface RenderedProfile {
  readonly body: string;
  readonly etag: string;
}

interface Entry extends RenderedProfile {
  readonly incarnation: string;
  readonly revision: string;
  readonly bytes: number;
}

/**
 * Profiles as last sent, by user id, each for the snapshot version it was rendered from
 * (SnapshotStore.version): a GET reads that version (two small fields) and sends the rendering again
 * while it is current, instead of reading, decoding and serialising the whole snapshot. Bounded by
 * the bytes of the bodies kept: past `capacityBytes` the oldest renderings are dropped, and a body
 * larger than an eighth of it is not kept at all; 0 keeps none.
 */
export class ProfileCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(readonly capacityBytes: number) {}

  get size(): number {
    return this.entries.size;
  }

  get keptBytes(): number {
    return this.bytes;
  }

  /** Whether some rendering of this profile is kept: only then is its current version worth reading. */
  holds(id: string): boolean {
    return this.entries.has(id);
  }

  /** The rendering of exactly this version, if kept. A version without an incarnation matches nothing. */
  get(id: string, version: SnapshotVersion): RenderedProfile | undefined {
    const entry = this.entries.get(id);
    if (!entry || version.incarnation === undefined) return undefined;
    return entry.incarnation === version.incarnation && entry.revision === version.revision ? entry : undefined;
  }

  set(id: string, version: SnapshotVersion, rendered: RenderedProfile): void {
    this.forget(id);
    const bytes = Buffer.byteLength(rendered.body) + Buffer.byteLength(rendered.etag);
    if (version.incarnation === undefined || bytes > this.capacityBytes / 8) return;
    for (const [oldest] of this.entries) {
      if (this.bytes + bytes <= this.capacityBytes) break;
      this.forget(oldest);
    }
    this.entries.set(id, { ...rendered, incarnation: version.incarnation, revision: version.revision, bytes });
    this.bytes += bytes;
  }

  private forget(id: string): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    this.entries.delete(id);
    this.bytes -= entry.bytes;
  }
}
