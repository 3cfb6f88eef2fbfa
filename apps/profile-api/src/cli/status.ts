import Table from 'cli-table3';
import type { StreamStatus } from '@redsource/processor';

const ms = (value: number | undefined) => (value === undefined ? '-' : value < 10_000 ? `${Math.round(value)}ms` : `${(value / 1000).toFixed(1)}s`);

/** A plain-text table of `streamStatus()`; `--json` prints the objects instead. */
export function renderStatus(rows: readonly StreamStatus[], group: string): string {
  const header = ['stream', 'length', 'lag', 'pending', 'oldest pending', 'unapplied', 'applied', 'skipped', 'dead-lettered', 'dlq now', 'avg batch', 'last batch', 'cursor', 'waiting'];
  const body = rows.map((r) => [
    r.stream,
    String(r.length),
    r.lag === undefined ? '-' : String(r.lag),
    String(r.pending),
    ms(r.oldestPendingMs),
    String(r.unapplied),
    String(r.applied),
    String(r.skipped),
    String(r.deadLettered),
    String(r.deadLetters),
    r.avgBatchMs === undefined ? '-' : `${r.avgBatchMs.toFixed(2)}ms`,
    r.lastBatchMs === undefined ? '-' : `${r.lastBatchMs.toFixed(2)}ms`,
    r.cursor,
    r.waiting?.kind ?? '-',
  ]);
  const lines = [`group ${group}`, table(header, body)];
  for (const r of rows) {
    if (r.waiting) lines.push(`${r.stream}: ${waitingLine(r.waiting)}`);
  }
  for (const r of rows) {
    if (r.lastError) lines.push(`${r.stream}: last error ${new Date(r.lastErrorAt ?? 0).toISOString()}: ${r.lastError}`);
  }
  const consumers = rows.flatMap((r) =>
    r.consumers.map((c) => [r.stream, c.name, String(c.pending), ms(c.idleMs), ms(c.heartbeatAgeMs), String(c.stats?.applied ?? '-')]),
  );
  if (consumers.length > 0) lines.push('', table(['stream', 'consumer', 'pending', 'idle', 'heartbeat age', 'applied (its report)'], consumers));
  else lines.push('', 'no consumers in the group yet');
  return lines.join('\n');
}

function waitingLine(w: NonNullable<StreamStatus['waiting']>): string {
  const since = w.since === undefined ? '' : ` since ${new Date(w.since).toISOString()}`;
  const who = w.consumers.length > 0 ? ` (reported by ${w.consumers.join(', ')})` : w.source === 'redis' ? ' (Redis refuses writes: no consumer can report it)' : '';
  return `waiting on Redis${since}: ${w.reason}${who}; processing resumes by itself when Redis accepts writes`;
}

/** A cli-table3 table without colours: the same text on a terminal, in a file and in a pipe. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const t = new Table({ head: [...head], style: { head: [], border: [], compact: true } });
  t.push(...rows.map((r) => [...r]));
  return t.toString();
}
