import { readFileSync } from 'node:fs';
import { withLuaIncludes } from '@redsource/snapshot-store';

/**
 * One of the processor's Lua scripts (scripts/<name>), with the snapshot store's shared parts
 * included. Resolved from this module so the path holds in the source tree and next to the CLI
 * bundle alike (pnpm build copies scripts/ beside it).
 */
export function processorScript(name: string): string {
  return withLuaIncludes(readFileSync(new URL(`./scripts/${name}`, import.meta.url), 'utf8'));
}
