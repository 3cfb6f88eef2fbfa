import Table from 'cli-table3';
import type { StreamStatus } from '@redsource/processor';

const ms = (value: number | undefined) =>
  value === undefined ? '-' : value < 10_000 ? `${Math.round(value)}ms` : `${(value / 1000).toFixed(1)}s`;

const count = (value: number | undefined) => (value === undefined ? '-' : String(value));

/** A count from a scan that stopped at its limit is a lower bound: `≥N`. */
const atLeast = (value: number, exact: boolean) => `${exact ? '' : '≥'}${value}`;

/**
 * A plain-text view of `streamStatus()`: one line per stream, then each stream's partitions (owner,
 * cursor, what waits in them) and the group's processors; `--json` prints the objects instead.
 */
export function renderStatus(rows: readonly StreamStatus[], group: string): string {
  const header = [
    'stream',
    'length',
    'lag',
    'unapplied',
    'oldest unapplied',
    'applied',
    'skipped',
    'dead-lettered',
    'dlq now',
    'partitions owned',
    'avg batch',
    'last batch',
    'state',
  ];
  const body = rows.map((r) => [
    r.stream,
    String(r.length),
    r.lag === undefined ? 'no group' : atLeast(r.lag, r.unappliedExact),
    atLeast(r.unapplied, r.unappliedExact),
    ms(r.oldestUnappliedMs),
    String(r.applied),
    String(r.skipped),
    String(r.deadLettered),
    String(r.deadLetters),
    `${r.partitions.filter((p) => p.owner !== undefined).length}/${r.partitionCount}`,
    r.avgBatchMs === undefined ? '-' : `${r.avgBatchMs.toFixed(2)}ms`,
    r.lastBatchMs === undefined ? '-' : `${r.lastBatchMs.toFixed(2)}ms`,
    r.waiting ? `waiting (${r.waiting.kind})` : r.heldByRebuild ? 'held by a rebuild' : 'ok',
  ]);
  const members = rows[0]?.members;
  const lines = [
    `group ${group}${members === undefined ? '' : `, ${members} live member${members === 1 ? '' : 's'}`}`,
    table(header, body),
  ];
  for (const r of rows) {
    if (r.waiting) lines.push(`${r.stream}: ${waitingLine(r.waiting)}`);
  }
  for (const r of rows) {
    if (!r.unappliedExact)
      lines.push(
        `${r.stream}: ≥N: at least N (status reads a bounded number of entries after the lowest partition cursor, and more follow)`,
      );
  }
  for (const r of rows) {
    if (r.lastError)
      lines.push(`${r.stream}: last error ${new Date(r.lastErrorAt ?? 0).toISOString()}: ${r.lastError}`);
  }
  for (const r of rows) {
    lines.push('', `${r.stream}: ${r.partitionCount} partitions`);
    lines.push(
      table(
        ['partition', 'owner', 'token', 'cursor', 'unapplied', 'oldest unapplied'],
        r.partitions.map((p) => [
          String(p.partition),
          p.owner ?? '(free)',
          p.token ?? '-',
          p.cursor,
          atLeast(p.unapplied, p.unappliedExact),
          ms(p.oldestUnappliedMs),
        ]),
      ),
    );
  }
  // The processors are the group's: one table, with the partitions each holds of each stream.
  const consumers = (rows[0]?.consumers ?? []).map((c) => [
    c.name,
    c.member === undefined ? '?' : c.member ? 'yes' : 'no',
    heldPartitions(rows, c.name),
    ms(c.heartbeatAgeMs),
    count(
      rows.reduce<number | undefined>((n, r) => {
        const applied = r.consumers.find((x) => x.name === c.name)?.stats?.applied;
        return applied === undefined ? n : (n ?? 0) + applied;
      }, undefined),
    ),
  ]);
  if (consumers.length > 0)
    lines.push(
      '',
      table(['consumer', 'live member', 'partitions', 'heartbeat age', 'applied (its report)'], consumers),
    );
  else lines.push('', 'no consumers in the group yet');
  return lines.join('\n');
}

function waitingLine(w: NonNullable<StreamStatus['waiting']>): string {
  const since = w.since === undefined ? '' : ` since ${new Date(w.since).toISOString()}`;
  const who =
    w.consumers.length > 0
      ? ` (reported by ${w.consumers.join(', ')})`
      : w.source === 'redis'
        ? ' (Redis refuses writes: no consumer can report it)'
        : '';
  return `waiting on Redis${since}: ${w.reason}${who}; processing resumes by itself when Redis accepts writes`;
}

/** A cli-table3 table without colours: the same text on a terminal, in a file and in a pipe. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const t = new Table({ head: [...head], style: { head: [], border: [], compact: true } });
  t.push(...rows.map((r) => [...r]));
  return t.toString();
}

/** `stream:0-5,9 other:0-11`: the partitions a consumer holds of each stream, or '-'. */
function heldPartitions(rows: readonly StreamStatus[], consumer: string): string {
  const held = rows.flatMap((r) => {
    const partitions = r.consumers.find((c) => c.name === consumer)?.partitions ?? [];
    return partitions.length === 0 ? [] : [`${r.stream}:${ranges(partitions)}`];
  });
  return held.length === 0 ? '-' : held.join(' ');
}

/** `0-5,9`: sorted numbers with runs written as ranges. */
function ranges(numbers: readonly number[]): string {
  const sorted = [...numbers].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const first = sorted[i] as number;
    while (i + 1 < sorted.length && sorted[i + 1] === (sorted[i] as number) + 1) i++;
    parts.push(first === sorted[i] ? String(first) : `${first}-${sorted[i]}`);
  }
  return parts.join(',');
}
