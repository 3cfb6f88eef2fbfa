import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * BENCH_CPU_PROF=<dir>: the worker named here writes `<dir>/<name>.cpuprofile`, covering its
 * measured window only (open it in Chrome DevTools → Performance, or speedscope).
 */
export function cpuProfileEnv(name: string): Record<string, string> {
  const dir = process.env['BENCH_CPU_PROF'];
  if (!dir) return {};
  mkdirSync(resolve(dir), { recursive: true });
  return { BENCH_CPU_PROF_FILE: join(resolve(dir), `${name}.cpuprofile`) };
}
