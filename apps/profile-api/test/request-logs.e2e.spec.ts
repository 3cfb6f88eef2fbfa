import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { eventually, useTestRedis } from '../../../test/support/redis.ts';
import { isolatedServiceEnv, ROOT, runCli, type CliProcess } from '../../../test/support/cli.ts';
import { useProfileApps } from './app-harness.ts';

const ctx = useTestRedis();
const apps = useProfileApps(ctx);
const children: CliProcess[] = [];
afterEach(async () => {
  for (const run of children.splice(0)) {
    run.child.kill('SIGTERM');
    await run.exited;
  }
});

function capturedLogger(level: string) {
  const lines: { level: number; msg: string; req?: { url?: string }; res?: { statusCode?: number } }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as (typeof lines)[number]);
      done();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

const POLLED = ['/dashboard', '/dashboard/app.js', '/dashboard/status.json', '/metrics', '/healthz', '/readyz'];
const requestLines = <T extends { msg: string }>(lines: T[]) =>
  lines.filter((l) => l.msg === 'incoming request' || l.msg === 'request completed');

describe('request logs', () => {
  it('logs the dashboard polling, /metrics and the health checks at debug, every other request at info', async () => {
    const info = capturedLogger('info');
    const app = await apps.app({ logger: info.logger, status: async () => [] });
    for (const url of POLLED) expect((await app.inject(url)).statusCode, url).toBeLessThan(500);
    expect(requestLines(info.lines)).toEqual([]);
    await app.inject('/users/1/profile?wait=x');
    expect(requestLines(info.lines).map((l) => [l.level, l.msg])).toEqual([
      [30, 'incoming request'],
      [30, 'request completed'],
    ]);

    const debug = capturedLogger('debug');
    const verbose = await apps.app({ logger: debug.logger, status: async () => [] });
    for (const url of POLLED) await verbose.inject(url);
    const lines = requestLines(debug.lines);
    expect(lines.length).toBe(POLLED.length * 2);
    expect(new Set(lines.map((l) => l.level))).toEqual(new Set([20]));
  });

  it('keeps a failing polled request (5xx) at its usual level', async () => {
    const info = capturedLogger('info');
    const app = await apps.app({
      logger: info.logger,
      readiness: async () => {
        throw new Error('boom');
      },
    });
    expect((await app.inject('/readyz')).statusCode).toBe(500);
    expect(requestLines(info.lines).map((l) => l.msg)).toEqual(['request completed']);
  });
});

/** A log line as a child process wrote it, from the logger the CLI makes (runtime/logger.ts). */
function logOnce(env: Record<string, string>, viaTerminal: boolean): Promise<string> {
  const script = `import { createLogger } from './apps/profile-api/src/runtime/logger.ts'; import { createRedactor } from './apps/profile-api/src/runtime/redact.ts'; createLogger({ level: 'info', redactor: createRedactor() }).info({ port: 1234 }, 'hello');`;
  const command = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', JSON.stringify(script)].join(' ');
  // `script` gives the child a terminal (a pseudo-tty); without it stderr is a pipe.
  const [file, args] = viaTerminal
    ? ['script', ['-qec', `${command} 2>&1`, '/dev/null']]
    : ['sh', ['-c', `${command} 2>&1`]];
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', () => resolve(out));
  });
}

describe('the process log', () => {
  it('is pino-pretty on a terminal, JSON lines on a pipe or under CI', async () => {
    const noCi = { CI: '' };
    const pretty = await logOnce(noCi, true);
    expect(pretty).toMatch(/INFO.*hello/);
    expect(pretty).not.toContain('{"level"');
    expect(JSON.parse((await logOnce(noCi, false)).trim())).toMatchObject({ level: 30, msg: 'hello', port: 1234 });
    expect((await logOnce({ CI: 'true' }, true)).trim()).toMatch(/^\{"level":30,.*"msg":"hello"\}$/);
  }, 30_000);

  it('with PORT=0 names the port actually bound', async () => {
    const service = runCli(['api'], {
      ...isolatedServiceEnv(ctx.server.url),
      PORT: '0',
      HOST: '127.0.0.1',
      CI: 'true',
    });
    children.push(service);
    const port = await eventually(
      async () => Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(service.output())?.[1] ?? 0),
      20_000,
      50,
    );
    expect(port, service.output()).toBeGreaterThan(0);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    const line = service
      .output()
      .split('\n')
      .find((l) => l.includes('listening on'));
    expect(JSON.parse(line ?? '{}')).toMatchObject({ port });
  }, 30_000);
});
