/**
 * The child's half of the worker protocol (see Worker in children.ts): messages over the IPC
 * channel, `exit` from the parent ends the process, and so does losing the parent.
 */
interface Message {
  readonly type: string;
}

const inbox: Message[] = [];
const waiters = new Map<string, (m: Message) => void>();

process.on('message', (message: Message) => {
  if (message.type === 'exit') process.exit(0);
  const waiter = waiters.get(message.type);
  if (waiter) {
    waiters.delete(message.type);
    waiter(message);
  } else {
    inbox.push(message);
  }
});
// The parent is gone (crashed, killed): nothing may outlive it. Gone already while this module
// loaded (the event fired before anyone listened): leave now.
process.on('disconnect', () => process.exit(1));
if (!process.connected) process.exit(1);

export function post(message: Message & Record<string, unknown>): void {
  if (!process.connected) process.exit(1);
  process.send?.(message);
}

export function nextMessage<T extends Message>(type: string): Promise<T> {
  const index = inbox.findIndex((m) => m.type === type);
  if (index >= 0) return Promise.resolve(inbox.splice(index, 1)[0] as T);
  return new Promise((resolve) => waiters.set(type, (m) => resolve(m as T)));
}

/** Peak resident set size of this process so far, in MiB. */
export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/** Runs the worker's body; a failure is reported to the parent as an `error` message. */
export function runWorker(body: () => Promise<void>): void {
  body().catch((error: unknown) => {
    post({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    setTimeout(() => process.exit(1), 100);
  });
}

/** Required command-line argument of a worker. */
export function arg(index: number, name: string): string {
  const value = process.argv[2 + index];
  if (value === undefined) throw new Error(`worker argument ${index} (${name}) is missing`);
  return value;
}

/**
 * CPU profile of a measured window only (not the start-up): started here, written to
 * $BENCH_CPU_PROF_FILE by the returned function. Without that variable, nothing happens.
 */
export async function profileWindow(): Promise<() => Promise<void>> {
  const file = process.env['BENCH_CPU_PROF_FILE'];
  if (!file) return async () => undefined;
  const { Session } = await import('node:inspector/promises');
  const { writeFileSync } = await import('node:fs');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
  };
}
