import { SingleBar } from 'cli-progress';
import type { ReplayProgress } from '@redsource/processor';

/** Progress of a replay: a cli-progress bar with rate and ETA on a terminal, a plain line every `everyMs` otherwise. */
export function progressReporter(out: NodeJS.WriteStream = process.stderr, everyMs = 5_000) {
  return out.isTTY ? barReporter(out) : lineReporter(out, everyMs);
}

const rateOf = (p: ReplayProgress) => (p.elapsedMs > 0 ? Math.round((p.done * 1000) / p.elapsedMs) : 0);

function barReporter(out: NodeJS.WriteStream) {
  const bar = new SingleBar({
    stream: out,
    format: '{phase} [{bar}] {percentage}% {value}/{total} entries, {rate}/s, eta {eta_formatted}',
    barCompleteChar: '#',
    barIncompleteChar: '.',
    hideCursor: true,
    etaBuffer: 50,
  });
  let started = false;
  const update = (p: ReplayProgress) => {
    const payload = { phase: p.phase, rate: rateOf(p) };
    if (!started) {
      started = true;
      bar.start(p.total, p.done, payload);
    } else {
      bar.setTotal(p.total);
      bar.update(p.done, payload);
    }
  };
  return {
    update,
    finish(p: ReplayProgress) {
      update(p);
      bar.stop();
    },
  };
}

function lineReporter(out: NodeJS.WriteStream, everyMs: number) {
  let lastAt = 0;
  const line = (p: ReplayProgress) => {
    const rate = rateOf(p);
    const left = Math.max(p.total - p.done, 0);
    const eta = rate > 0 ? `${Math.ceil(left / rate)}s` : '?';
    const pct = p.total > 0 ? Math.min(100, Math.floor((p.done / p.total) * 100)) : 100;
    return `replay ${p.phase}: ${p.done}/${p.total} entries (${pct}%), ${rate}/s, eta ${eta}, stream ${p.stream}\n`;
  };
  return {
    update(p: ReplayProgress) {
      const now = Date.now();
      if (now - lastAt < everyMs) return;
      lastAt = now;
      out.write(line(p));
    },
    finish(p: ReplayProgress) {
      out.write(line(p));
    },
  };
}
