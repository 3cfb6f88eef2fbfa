/** Every error the snapshot store throws; `code` is stable, grep for it. */
export class SnapshotStoreError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A handler produced a mutation the store cannot carry out (bad name, non-integer increment). */
export class InvalidMutationError extends SnapshotStoreError {
  constructor(detail: string) {
    super('RS_MUTATION_INVALID', `Invalid snapshot mutation: ${detail}. Fix the handler that produced it.`);
  }
}

/** A snapshot hash holds data its schema rejects (written by something other than redsource?). */
export class CorruptSnapshotError extends SnapshotStoreError {
  constructor(key: string, detail: string) {
    super(
      'RS_SNAPSHOT_CORRUPT',
      `Snapshot '${key}' does not match its schema: ${detail}. Rebuild the snapshots by replaying the streams (the profile app: \`redsource replay\`).`,
    );
  }
}

/** The snapshot id cannot name a snapshot key (empty, too long, or with characters outside [A-Za-z0-9_-]). */
export class InvalidSnapshotIdError extends SnapshotStoreError {
  constructor(id: string) {
    super(
      'RS_SNAPSHOT_ID_INVALID',
      `Snapshot id '${id.slice(0, 80)}' is invalid: use 1-64 characters from A-Z, a-z, 0-9, '_' and '-'.`,
    );
  }
}

export class InvalidSnapshotStoreOptionsError extends SnapshotStoreError {
  constructor(detail: string) {
    super('RS_SNAPSHOT_OPTIONS_INVALID', `Invalid snapshot store options: ${detail}.`);
  }
}
