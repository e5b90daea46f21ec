// ESLint 9 flat config (README, "Contributing"): a small, type-aware rule set that catches what tsc
// does not: promises nobody waits for, promises handed where a callback is expected, type-only
// imports that would load a module at run time. Style is prettier's job: eslint-config-prettier
// comes last and turns off every rule that could fight it.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'bpf/', 'native/', 'docs/', 'deploy/', 'examples/'] },
  {
    files: ['**/*.ts'],
    // eslint's own recommended rules, less those tsc already checks (typescript-eslint's list).
    extends: [js.configs.recommended, tseslint.configs.eslintRecommended],
    plugins: { '@typescript-eslint': tseslint.plugin },
    languageOptions: {
      parser: tseslint.parser,
      // Type information from the tsconfig that covers the file (tsconfig.json: src, test, bench, scripts).
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A promise is awaited, returned, or `void`ed with a comment that says why nobody waits.
      // node:test's test/describe/it/suite return promises the runner itself waits for.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-require-imports': 'error',
      // tsc's noUnusedLocals already reports unused names (and allows `_` for the ones kept on purpose).
      'no-unused-vars': 'off',
      // A `let` read by a closure before its one assignment (a timer the cleanup clears) stays `let`.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // The CLI's output and its tests match terminal escapes (\x1b) on purpose.
      'no-control-regex': 'off',
    },
  },
  {
    // Written by scripts/gen-types.ts, which marks them `eslint-disable`.
    files: ['src/generated/**'],
    linterOptions: { reportUnusedDisableDirectives: 'off' },
  },
  prettier,
);
