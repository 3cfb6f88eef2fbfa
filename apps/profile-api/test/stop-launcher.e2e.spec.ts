import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { isolatedServiceEnv, ROOT } from '../../../test/support/cli.ts';
import { eventually, freePort, useTestRedis } from '../../../test/support/redis.ts';

/**
 * Issue 10: a process manager stops a service with SIGTERM to the process it started. For
 * `npx pnpm@9 start` that is npx, which dies without passing the signal on (npx → sh → pnpm → sh →
 * node): the service notices its launcher chain broke and stops as for SIGTERM.
 */
const ctx = useTestRedis();
let started: ChildProcess | undefined;
let family: number[] = [];

afterEach(() => {
  for (const pid of [started?.pid, ...family]) if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
  started = undefined;
  family = [];
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Every process below `pid` (from /proc). */
function descendants(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // Exited meanwhile.
    }
  }
  const found: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parents)
      if (parent === p) {
        found.push(child);
        walk(child);
      }
  };
  walk(pid);
  return found;
}

describe('stopping the service the way process managers do', { timeout: 60_000 }, () => {
  it.skipIf(process.platform !== 'linux')(
    'SIGTERM to the `npx pnpm@9 start` process stops the service: port closed, no process left',
    async () => {
      const port = await freePort();
      const env = {
        ...process.env,
        ...isolatedServiceEnv(ctx.server.url),
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
      };
      started = spawn('npx', ['-y', 'pnpm@9', 'start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      started.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      started.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      const up = await eventually(
        async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.ok === true,
        40_000,
        100,
      );
      expect(up, output).toBe(true);
      family = descendants(started.pid ?? 0);
      expect(family.length, 'npx has launched the service through its children').toBeGreaterThan(0);

      const signalledAt = Date.now();
      process.kill(started.pid ?? 0, 'SIGTERM');
      const closed = await eventually(
        async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined)) === undefined,
        5_000,
        50,
      );
      const gone = await eventually(async () => family.every((pid) => !alive(pid)), 5_000, 50);
      console.log(
        `[stop] port closed ${closed} and ${family.length} processes gone ${gone} ${Date.now() - signalledAt} ms after SIGTERM to npx`,
      );
      expect(closed, output).toBe(true);
      expect(gone, `${family.filter(alive).join(' ')} still running\n${output}`).toBe(true);
      expect(output).toMatch(/shutting down: finishing the batch in hand/);
    },
  );
});
