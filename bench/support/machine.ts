import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly os: string;
  readonly node: string;
  readonly redis: string;
  readonly date: string;
  /** 1-minute load average when the run started and when it ended: other work on the machine skews the figures. */
  loadAtStart: number;
  loadAtEnd: number;
}

export function describeMachine(redisVersion: string): Machine {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (match?.[1]) cpu = match[1].trim();
  } catch {
    // not Linux: os.cpus() it is
  }
  return {
    cpu,
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    redis: redisVersion,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    loadAtStart: os.loadavg()[0] ?? 0,
    loadAtEnd: Number.NaN,
  };
}

export function machineLine(m: Machine): string {
  const load = `load average ${m.loadAtStart.toFixed(2)} at start${Number.isNaN(m.loadAtEnd) ? '' : `, ${m.loadAtEnd.toFixed(2)} at end`}`;
  return `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB RAM, ${m.os}; Node ${m.node}; Redis ${m.redis}; ${m.date}; ${load}`;
}
