import { readFileSync } from 'node:fs';

/**
 * A Lua script of this package, with its `--@include <file>` lines replaced by the files under
 * scripts/includes/ (shared parts, reviewed once: entry id order, snapshot writes). Redis gets one
 * self-contained script, loaded once per connection (EVALSHA).
 */
export function loadScript(name: string): string {
  return withLuaIncludes(readFileSync(new URL(`./scripts/${name}`, import.meta.url), 'utf8'));
}

/** A script's `--@include <file>` lines replaced by this package's shared Lua parts (scripts/includes/). */
export function withLuaIncludes(source: string): string {
  return source.replace(/^--@include (\S+)$/gm, (_, file: string) =>
    readFileSync(new URL(`./scripts/includes/${file}`, import.meta.url), 'utf8').trimEnd(),
  );
}
