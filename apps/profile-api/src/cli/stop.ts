import { readFileSync } from 'node:fs';
import closeWithGrace from 'close-with-grace';
import type { Logger as Pino } from 'pino';

/** Why a service stops: a signal, its launcher gone, or an error nothing caught. */
export type StopReason = { signal: string } | { launcherGone: string } | { err: Error };

/**
 * Resolves when the service should stop. Signals (SIGINT, SIGTERM, SIGHUP, …) and uncaught errors go
 * through close-with-grace, which also bounds the shutdown: a second signal, or `graceMs` without the
 * process exiting, exits at once with 1. Besides signals, the service watches the processes that
 * launched it (see `launcherChain`): `npx pnpm@9 start` is npx → sh → pnpm → sh → node, and a process
 * manager's SIGTERM reaches only npx, which dies without passing it on, leaving the rest re-parented
 * and the service on its port. When a link of that chain breaks, the service stops as for SIGTERM.
 */
export function untilStopRequested(logger: Pino, graceMs: number, pollMs = 1_000): Promise<StopReason> {
  return new Promise((resolve) => {
    const grace = closeWithGrace(
      {
        delay: graceMs,
        logger: false,
        onTimeout: (delay) => logger.error({ delayMs: delay }, 'shutdown took too long: exiting'),
        onSecondSignal: (signal) => logger.warn({ signal }, 'second signal: exiting now'),
      },
      async ({ signal, err, manual }) => {
        clearInterval(watch);
        if (err) resolve({ err });
        else if (!manual) resolve({ signal: signal ?? 'beforeExit' });
        // The caller closes what it opened and exits; close-with-grace exits with 1 if that takes longer than graceMs.
        await new Promise(() => undefined);
      },
    );
    const chain = launcherChain();
    let gone: string | undefined;
    const watch = setInterval(() => {
      gone = brokenLink(chain);
      if (gone === undefined) return;
      resolve({ launcherGone: gone });
      grace.close();
    }, pollMs);
    watch.unref();
  });
}

/**
 * This process's launchers: (pid, parent pid) pairs from the parent up, while the parent is a node,
 * npm, npx, pnpm, yarn, tsx or sh process (read from /proc on Linux; elsewhere the parent pid alone).
 */
export function launcherChain(): { pid: number; ppid: number }[] {
  const chain = [{ pid: process.pid, ppid: process.ppid }];
  for (let i = 0; i < 16; i++) {
    const top = chain[chain.length - 1];
    if (!top || top.ppid <= 1) break;
    const parent = procInfo(top.ppid);
    if (!parent || !LAUNCHER.test(parent.comm)) break;
    chain.push({ pid: top.ppid, ppid: parent.ppid });
  }
  // Without /proc, only the parent is watched. With it, the topmost launcher's own parent is not (a
  // shell that exits after `nohup npx pnpm@9 start &`, or after `nohup node … &`, is no launcher).
  return procInfo(process.pid) === undefined ? chain : chain.slice(0, -1);
}

const LAUNCHER = /^(node|nodejs|npm|npx|pnpm|yarn|tsx|sh|dash)\b/;

function procInfo(pid: number): { comm: string; ppid: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid …: comm may hold spaces and parentheses, so split at the last ')'.
    const close = stat.lastIndexOf(')');
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    return { comm: stat.slice(stat.indexOf('(') + 1, close), ppid };
  } catch {
    return undefined;
  }
}

/** The first launcher of the chain no longer there, or no longer the child of the one above it. */
function brokenLink(chain: readonly { pid: number; ppid: number }[]): string | undefined {
  for (const link of chain) {
    const ppid = link.pid === process.pid ? process.ppid : procInfo(link.pid)?.ppid;
    if (ppid !== link.ppid) return `pid ${link.pid}'s parent ${link.ppid} exited`;
  }
  return undefined;
}
