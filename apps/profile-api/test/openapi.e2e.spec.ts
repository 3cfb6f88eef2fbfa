import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { apiErrors } from '../src/http/errors.ts';
import { openApiDocument } from '../src/http/openapi.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const REDOCLY = join(ROOT, 'node_modules/.bin/redocly');
const dir = mkdtempSync(join(tmpdir(), 'redsource-openapi-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Operation = {
  operationId?: string;
  responses: Record<string, { content?: Record<string, { example?: Record<string, unknown> }> }>;
};

describe('the OpenAPI document', () => {
  it("passes `redocly lint` with the recommended rules (redocly.yaml): what CI's `pnpm openapi:lint` runs", async () => {
    const file = join(dir, 'openapi.json');
    writeFileSync(file, JSON.stringify(await openApiDocument()));
    const run = await promisify(execFile)(
      REDOCLY,
      ['lint', file, '--config', join(ROOT, 'redocly.yaml'), '--format=summary'],
      { cwd: ROOT, timeout: 25_000 },
    ).then(
      ({ stdout, stderr }) => ({ code: 0, output: stdout + stderr }),
      (error: { code?: number; stdout?: string; stderr?: string }) => ({
        code: error.code ?? 1,
        output: `${error.stdout ?? ''}${error.stderr ?? ''}`,
      }),
    );
    expect(run.output).toContain('Your API description is valid');
    expect(run.output).not.toMatch(/^(warning|error) |You have \d+ warning/m);
    expect(run.code, run.output).toBe(0);
  }, 30_000);

  it('names every operation, shows real error bodies as examples, and lists the error codes as an enum', async () => {
    const document = (await openApiDocument()) as {
      paths: Record<string, Record<string, Operation>>;
      components: { schemas: Record<string, unknown> };
    };
    const operations = Object.values(document.paths).flatMap((path) => Object.values(path));
    const ids = operations.map((o) => o.operationId);
    expect(ids.every((id) => typeof id === 'string')).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toContain('getProfile');
    const text = JSON.stringify(document);
    expect(text).toContain(JSON.stringify(Object.values(apiErrors).map((e) => e.code)));
    for (const operation of operations) {
      for (const [status, response] of Object.entries(operation.responses)) {
        const example = response.content?.['application/json']?.example;
        if (Number(status) >= 400 && example) {
          expect(example['statusCode'], `${operation.operationId} ${status}`).toBe(Number(status));
          expect(Object.values(apiErrors).map((e) => e.code)).toContain(example['code']);
        }
      }
    }
    const profile = document.paths['/users/{id}/profile']?.['get'];
    expect(profile?.responses['404']?.content?.['application/json']?.example).toEqual({
      statusCode: 404,
      code: 'RS_NOT_FOUND',
      error: 'Not Found',
      message: "No profile for user '42'.",
    });
    expect(profile?.responses['200']?.content?.['application/json']?.example).toMatchObject({
      id: '1',
      activity: { kick: 1 },
    });
  });
});
