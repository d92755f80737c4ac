import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // Integration tests start real processes and talk to PostgreSQL/Redis; two cores here.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // A test that needs a service fails loudly; it never skips.
    passWithNoTests: false,
  },
});
