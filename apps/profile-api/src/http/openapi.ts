import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SnapshotStore } from '@redsource/snapshot-store';
import { buildApp } from './app.ts';

/**
 * The OpenAPI document `GET /docs/json` serves, built without Redis: the routes' schemas are all it
 * reads, so no handler runs and nothing connects.
 */
export async function openApiDocument(): Promise<Record<string, unknown>> {
  const app = await buildApp({
    snapshots: {} as SnapshotStore,
    readiness: async () => ({ redis: false, processor: undefined }),
    status: async () => [],
    deadLetters: async () => [],
  });
  try {
    await app.ready();
    return app.swagger() as unknown as Record<string, unknown>;
  } finally {
    await app.close();
  }
}

/** `tsx apps/profile-api/src/http/openapi.ts <file>` (`pnpm openapi:lint` runs it): writes the document as JSON. */
async function main(file: string): Promise<void> {
  const path = resolve(file);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(await openApiDocument(), null, 2)}\n`);
  process.stdout.write(`wrote ${path}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: tsx apps/profile-api/src/http/openapi.ts <output.json>\n');
    process.exitCode = 2;
  } else {
    await main(file);
  }
}
