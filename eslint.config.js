// Flat config: typescript-eslint's recommended rules over the sources, tests and benchmarks.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'data/', 'coverage/', 'dist/'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        {
          selector: "MemberExpression[object.name='process'][property.name='env']",
          message: 'read configuration through src/config.ts (the only reader of process.env)',
        },
      ],
    },
  },
  {
    // Test, bench and config tooling may read the environment directly; so may the CLI's
    // own environment reader (it must not load the server's configuration).
    files: ['src/config.ts', 'src/cli/env.ts', 'test/**', 'bench/**', '*.config.ts', '*.config.js'],
    rules: { 'no-restricted-syntax': 'off' },
  },
);
