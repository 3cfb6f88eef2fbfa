import { fork, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

/** Repository root: where `node_modules/tsx` and `node_modules/autocannon` live. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Every process the bench starts (redis-server, workers, redis-benchmark, autocannon) is recorded
 * here, so that it can be stopped by its pid whatever happens: normal end, an exception, Ctrl-C.
 */
const live = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopProcess(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Stops everything still running, children first (they may be using the redis-server). */
export async function stopAll(lastOf?: ChildProcess): Promise<void> {
  const others = [...live].filter((c) => c !== lastOf);
  await Promise.all(others.map((c) => stopProcess(c)));
  if (lastOf) await stopProcess(lastOf);
}

// Last resort: whatever is still alive when this process exits is killed by its pid.
process.once('exit', () => {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

/** A plain child process (a tool such as redis-benchmark or autocannon), its output collected. */
export function runTool(
  command: string,
  args: readonly string[],
  options: SpawnOptions = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = track(spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...options }));
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8_000)));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface WorkerMessage {
  readonly type: string;
}

/**
 * A worker: a TypeScript module run by tsx in a child process, talking JSON over the IPC channel.
 * Messages are kept until someone waits for their type, so none is lost to timing.
 */
export class Worker {
  readonly child: ChildProcess;
  private readonly inbox: WorkerMessage[] = [];
  private readonly waiters: { type: string; resolve: (m: WorkerMessage) => void; reject: (e: Error) => void }[] = [];
  private output = '';
  private exitInfo: string | undefined;
  /** Resolves once the worker has posted `ready` (loaded its code, connected); awaiting it twice is fine. */
  readonly ready: Promise<void>;

  constructor(
    readonly name: string,
    module: string,
    args: readonly string[],
    options: { env?: Readonly<Record<string, string>>; execArgv?: readonly string[] } = {},
  ) {
    this.child = track(
      fork(fileURLToPath(new URL(`../workers/${module}`, import.meta.url)), [...args], {
        cwd: ROOT,
        execArgv: ['--import', 'tsx', ...(options.execArgv ?? [])],
        env: { ...process.env, ...options.env },
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        serialization: 'json',
      }),
    );
    const keep = (d: Buffer) => (this.output = (this.output + d.toString()).slice(-4_000));
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.child.on('message', (message: WorkerMessage) => {
      const index = this.waiters.findIndex((w) => w.type === message.type || message.type === 'error');
      const waiter = index >= 0 ? this.waiters.splice(index, 1)[0] : undefined;
      if (!waiter) return void this.inbox.push(message);
      if (message.type === 'error')
        waiter.reject(new Error(`${this.name}: ${String((message as { message?: unknown }).message)}`));
      else waiter.resolve(message);
    });
    this.child.once('exit', (code, signal) => {
      this.exitInfo = `exited (code ${code}, signal ${signal})`;
      for (const w of this.waiters.splice(0))
        w.reject(new Error(`${this.name} ${this.exitInfo} while waiting for '${w.type}'. Output:\n${this.output}`));
    });
    this.ready = this.waitFor('ready', 180_000).then(() => undefined);
    // Whoever awaits `ready` sees a failure; nobody awaiting it must not crash the bench.
    this.ready.catch(() => undefined);
  }

  send(message: WorkerMessage & Record<string, unknown>): void {
    if (this.child.connected) this.child.send(message);
  }

  /** The next message of that type (an `error` message from the worker rejects instead). */
  waitFor<T extends WorkerMessage>(type: string, timeoutMs = 600_000): Promise<T> {
    const error = this.inbox.findIndex((m) => m.type === 'error');
    if (error >= 0)
      return Promise.reject(new Error(`${this.name}: ${String((this.inbox[error] as { message?: unknown }).message)}`));
    const index = this.inbox.findIndex((m) => m.type === type);
    if (index >= 0) return Promise.resolve(this.inbox.splice(index, 1)[0] as T);
    if (this.exitInfo)
      return Promise.reject(new Error(`${this.name} ${this.exitInfo} before '${type}'. Output:\n${this.output}`));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: no '${type}' within ${timeoutMs} ms. Output:\n${this.output}`)),
        timeoutMs,
      );
      this.waiters.push({
        type,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** Asks the worker to leave (it exits on its own after `exit`), then makes sure by pid. */
  async stop(): Promise<void> {
    this.send({ type: 'exit' });
    const exited = new Promise<void>((resolve) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) resolve();
      else this.child.once('exit', () => resolve());
    });
    await Promise.race([exited, sleep(3_000)]);
    await stopProcess(this.child);
  }
}
