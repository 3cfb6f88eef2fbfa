import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ROOT, isolatedServiceEnv } from '../support/cli.ts';
import { useTestRedis } from '../support/redis.ts';

const ctx = useTestRedis();

interface Timed {
  readonly code: number | null;
  readonly output: string;
  /** ms from spawn to exit. */
  readonly exitedAt: number;
  /** ms from spawn to the first line matching `mark`, if any. */
  readonly markedAt: number | undefined;
}

/** Runs a TypeScript file under tsx in a child process; notes when `mark` is printed and when it exits. */
function runTimed(file: string, env: Record<string, string>, mark: RegExp): Promise<Timed> {
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', file], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let markedAt: number | undefined;
  const collect = (d: Buffer) => {
    output += d.toString();
    if (markedAt === undefined && mark.test(output)) markedAt = Date.now() - started;
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const killer = setTimeout(() => child.kill('SIGKILL'), 25_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(killer);
      resolve({ code, output, exitedAt: Date.now() - started, markedAt });
    }),
  );
}

describe('stop() and close() release everything they opened', () => {
  it('a process that starts and stops a processor, subscribe, a replay and the app exits within 1 s of closing them', async () => {
    const run = await runTimed(
      fileURLToPath(new URL('open-and-close.ts', import.meta.url)),
      { ...isolatedServiceEnv(ctx.server.url), LOG_LEVEL: 'silent' },
      /^closed/m,
    );
    expect(run.code, run.output).toBe(0);
    expect(run.output).toMatch(/^closed \(status 200\)$/m);
    expect(run.output).not.toContain('still active');
    expect(run.markedAt, run.output).toBeDefined();
    expect(run.exitedAt - (run.markedAt ?? 0), run.output).toBeLessThan(1_000);
  });

  it('the processor quickstart exits right after "processor stopped"', async () => {
    const run = await runTimed(
      fileURLToPath(new URL('../../packages/processor/examples/quickstart.ts', import.meta.url)),
      { REDIS_URL: ctx.server.url },
      /processor stopped/,
    );
    expect(run.code, run.output).toBe(0);
    expect(run.markedAt, run.output).toBeDefined();
    expect(run.exitedAt - (run.markedAt ?? 0), run.output).toBeLessThan(1_000);
    expect(run.exitedAt, run.output).toBeLessThan(8_000);
  });
});
