import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const root = new URL('../../../', import.meta.url);
const guide = readFileSync(new URL('docs/guide.md', root), 'utf8');
const examplesDir = new URL('packages/testing/examples/', root);
const examples = readdirSync(examplesDir)
  .filter((f) => f.endsWith('.ts'))
  .map((f) => ({ file: f, text: readFileSync(new URL(f, examplesDir), 'utf8') }));
const blocks = [...guide.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');

describe('docs/guide.md', () => {
  it('has ts blocks', () => {
    expect(blocks.length).toBeGreaterThan(5);
  });

  it.each(blocks.map((block, i) => [i + 1, block] as const))(
    'ts block %i appears verbatim in an example file',
    (_, block) => {
      const found = examples.filter((e) => e.text.includes(block));
      expect(
        found.map((e) => e.file),
        `not in ${examples.map((e) => e.file).join(', ')}:\n${block}`,
      ).not.toEqual([]);
    },
  );

  it('names only example files that exist', () => {
    for (const [, file] of guide.matchAll(/packages\/testing\/examples\/([\w.]+\.ts)/g))
      expect(examples.map((e) => e.file)).toContain(file);
  });
});
