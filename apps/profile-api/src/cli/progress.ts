import type { ReplayProgress } from '@redsource/processor';

/** Progress of a long job: a redrawn bar with rate and ETA on a terminal, a plain line every few seconds otherwise. */
export function progressReporter(out: NodeJS.WriteStream = process.stderr, everyMs = out.isTTY ? 200 : 5_000) {
  let lastAt = 0;
  const render = (p: ReplayProgress) => {
    const rate = p.elapsedMs > 0 ? Math.round((p.done * 1000) / p.elapsedMs) : 0;
    const left = Math.max(p.total - p.done, 0);
    const eta = rate > 0 ? `${Math.ceil(left / rate)}s` : '?';
    const pct = p.total > 0 ? Math.min(100, Math.floor((p.done / p.total) * 100)) : 100;
    if (!out.isTTY) return `replay ${p.phase}: ${p.done}/${p.total} entries (${pct}%), ${rate}/s, eta ${eta}, stream ${p.stream}\n`;
    const width = 30;
    const filled = Math.round((pct / 100) * width);
    return `\r${p.phase} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}% ${p.done}/${p.total} ${rate}/s eta ${eta}   `;
  };
  return {
    update(p: ReplayProgress) {
      const now = Date.now();
      if (now - lastAt < everyMs) return;
      lastAt = now;
      out.write(render(p));
    },
    finish(p: ReplayProgress) {
      out.write(render(p) + (out.isTTY ? '\n' : ''));
    },
  };
}
