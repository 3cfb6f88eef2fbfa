import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat (almost always 100). */
const ticksPerSecond = (() => {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(value) && value > 0 ? value : 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU time (user + system, every thread) a process has used so far, in µs, from /proc/<pid>/stat:
 * read before and after a measured window, it gives that window's CPU whatever the process is
 * (a Node child, redis-server). Resolution: one clock tick (10 ms). Undefined where /proc is not.
 */
export function processCpuMicros(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is field 3.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[14 - 3]);
    const stime = Number(fields[15 - 3]);
    return ((utime + stime) / ticksPerSecond) * 1e6;
  } catch {
    return undefined;
  }
}

/** CPU of several processes over a window: `start()` reads them, `stop()` returns µs used by each since. */
export class CpuWindow {
  private readonly before: (number | undefined)[];

  constructor(private readonly pids: readonly (number | undefined)[]) {
    this.before = pids.map(processCpuMicros);
  }

  /** µs per process since construction (NaN where /proc could not be read). */
  used(): number[] {
    return this.pids.map((pid, i) => {
      const now = processCpuMicros(pid);
      const then = this.before[i];
      return now === undefined || then === undefined ? Number.NaN : now - then;
    });
  }
}

/** The machine's CPU time so far, all cores, in µs: busy (everything but idle and iowait) and stolen by the hypervisor. */
export function machineCpuMicros(): { busy: number; steal: number } | undefined {
  try {
    const [, ...values] = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/);
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    const [user, nice, system, , , irq, softirq, steal] = values.slice(0, 8).map(Number);
    const busy = [user, nice, system, irq, softirq].reduce((a: number, b) => a + (b ?? 0), 0);
    return { busy: (busy / ticksPerSecond) * 1e6, steal: ((steal ?? 0) / ticksPerSecond) * 1e6 };
  } catch {
    return undefined;
  }
}

/** Machine-wide CPU over a window: how many cores were busy on average (anyone's work), and stolen. */
export class MachineWindow {
  private readonly before = machineCpuMicros();
  private readonly startedAt = performance.now();

  cores(): { busy: number; steal: number } {
    const now = machineCpuMicros();
    const seconds = (performance.now() - this.startedAt) / 1000;
    if (!now || !this.before) return { busy: Number.NaN, steal: Number.NaN };
    return {
      busy: (now.busy - this.before.busy) / 1e6 / seconds,
      steal: (now.steal - this.before.steal) / 1e6 / seconds,
    };
  }
}
