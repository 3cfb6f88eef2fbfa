import { InvalidArgumentError } from 'commander';
import { SNAPSHOT_ID } from '@redsource/snapshot-store';

/** Exit codes of every command (the README's table). */
export const EXIT = {
  ok: 0,
  /** The command ran and failed: Redis unreachable or refusing, bad configuration, a rebuild running, a dead letter not found. */
  failed: 1,
  /** The command line is wrong: unknown command or option, a missing or invalid argument. Nothing was done. */
  usage: 2,
} as const;

/** A command line that parsed but makes no sense (exit 2, one line, nothing done). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The message the HTTP API answers a bad id with (GET /users/:id/profile), for the same rule. */
const ID_RULE = '1-64 characters from A-Z, a-z, 0-9, _ and -';

/** `--users 1,2`: user ids checked as the API checks them (SNAPSHOT_ID); commander reports a bad one and exits 2. */
export function parseUserIds(value: string): string[] {
  const ids = value.split(',').map((id) => id.trim());
  const bad = ids.find((id) => !SNAPSHOT_ID.test(id));
  if (bad !== undefined) {
    throw new InvalidArgumentError(
      bad === ''
        ? `an empty id in '${value}' (ids are ${ID_RULE}, comma-separated)`
        : `'${bad}' is not a user id: ids are ${ID_RULE}`,
    );
  }
  return [...new Set(ids)];
}
