/** One line of the results table: an absolute figure, its baseline from the same run, the goal. */
export interface Row {
  /** Benchmark number from the issue (1-6). */
  readonly n: number;
  readonly figure: string;
  readonly redsource: string;
  readonly baseline: string;
  readonly ratio: string;
  readonly goal: string;
  /** undefined: informative row, no goal. */
  readonly met: boolean | undefined;
  /** How far from the goal, e.g. `0.62× < 1.5×`. */
  readonly verdict: string;
}

export const COLUMNS = ['#', 'figure', 'redsource', 'baseline (same run)', 'ratio', 'goal', 'met'] as const;

function cells(row: Row): string[] {
  const met = row.met === undefined ? '' : `${row.met ? 'yes' : 'NO'}${row.verdict ? ` (${row.verdict})` : ''}`;
  return [String(row.n), row.figure, row.redsource, row.baseline, row.ratio, row.goal, met];
}

/** The table as fixed-width text for the terminal. */
export function renderText(rows: readonly Row[]): string {
  const all = [[...COLUMNS], ...rows.map(cells)];
  const widths = COLUMNS.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join(' | ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('-+-');
  const out = [line(all[0] ?? []), rule];
  let section = rows[0]?.n;
  for (const row of rows) {
    if (row.n !== section) {
      out.push(rule);
      section = row.n;
    }
    out.push(line(cells(row)));
  }
  return out.join('\n');
}

/** The same table in Markdown. */
export function renderMarkdown(rows: readonly Row[]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const out = [`| ${COLUMNS.join(' | ')} |`, `|${COLUMNS.map((c) => (c === '#' ? '--:' : '---')).join('|')}|`];
  for (const row of rows) out.push(`| ${cells(row).map(esc).join(' | ')} |`);
  return out.join('\n');
}

export const fmt = {
  rate: (perSecond: number, unit = 'ev/s') =>
    perSecond >= 1e6
      ? `${(perSecond / 1e6).toFixed(2)}M ${unit}`
      : perSecond >= 1e4
        ? `${(perSecond / 1e3).toFixed(1)}k ${unit}`
        : `${Math.round(perSecond)} ${unit}`,
  ms: (ms: number) => (ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(2)} ms`),
  ratio: (r: number) => (Number.isFinite(r) ? `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×` : 'n/a'),
  mib: (mib: number) => `${mib.toFixed(0)} MiB`,
  count: (n: number) =>
    n >= 1e6 && n % 1e6 === 0 ? `${n / 1e6}M` : n >= 1e3 && n % 1e3 === 0 ? `${n / 1e3}k` : String(n),
};

/** Value at quantile q (0..1) of the samples, nearest rank. */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1] as number;
}
