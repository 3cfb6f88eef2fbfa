import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/node_modules/**', '**/dist/**', '.data/**', 'docs/api/**', 'coverage/**'] },
  // TypeScript (sources, tests, examples, bench: all of it is in tsconfig.json): the recommended rules, type-checked.
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-non-null-assertion': 'error',
      '@typescript-eslint/await-thenable': 'error',
      // Off: an `async` function without `await` is how this code base keeps a Promise-returning contract. Fastify
      // runs a plugin or hook as async only when it returns a promise (else it waits for a `done` callback that
      // never comes), and `async` turns a throw into a rejection (`start()` rejects with ProcessorStateError rather
      // than throwing). Stubs for `readiness`/`status` and the predicates of `eventually()` follow the same types.
      '@typescript-eslint/require-await': 'off',
      // Omitting a field by destructuring it into an unused `_name` beside a rest element is deliberate.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
    },
  },
  // Tests: Vitest's asymmetric matchers (expect.any, expect.stringMatching, expect.objectContaining ...) are typed
  // `any` by design, and they are meant to stand in for a value inside an expected object.
  {
    files: ['**/test/**/*.ts'],
    rules: { '@typescript-eslint/no-unsafe-assignment': 'off' },
  },
  // Plain JavaScript (build scripts, the CLI launcher, the dashboard's browser script): no type information.
  {
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.recommended, tseslint.configs.disableTypeChecked],
  },
  // Every file: a `let` read (by a callback or a function) before its one assignment stays a `let`; as a `const`, that
  // read would be in its temporal dead zone.
  { rules: { 'prefer-const': ['error', { ignoreReadBeforeAssign: true }] } },
);
