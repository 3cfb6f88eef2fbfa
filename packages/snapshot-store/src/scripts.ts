import { readFileSync } from 'node:fs';

/**
 * A Lua script of this package, with its `--@include <file>` lines replaced by the files under
 * scripts/includes/ (shared parts, reviewed once: entry id order, snapshot writes). Redis gets one
 * self-contained script, loaded once per connection (EVALSHA).
 */
export function loadScript(name: string): string {
  const read = (path: string) => readFileSync(new URL(path, import.meta.url), 'utf8');
  return read(`./scripts/${name}`).replace(/^--@include (\S+)$/gm, (_, file: string) => read(`./scripts/includes/${file}`).trimEnd());
}
