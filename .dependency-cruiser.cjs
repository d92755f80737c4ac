/**
 * The layer rule of src/ (docs/architecture.md, "Layers"): imports point down only,
 *
 *   bin > api > jobs > broker > repositories > {db, snapshots} > domain > base
 *
 * where base is src/crypto.ts, src/config.ts, src/logger.ts, src/backoff.ts and
 * src/migrations/. src/cli/ (the `meshq` command line) sits just below bin: it talks to
 * meshq over HTTP, so it may import only domain and base (rule cli-over-http).
 * Type-only imports count: a cycle of types is still a cycle a reader has to untangle. Run by `npm run lint`.
 */
const LAYERS = ['bin', 'cli', 'api', 'jobs', 'broker', 'repositories', 'db', 'snapshots', 'domain', 'base'];
const PATHS = {
  bin: '^src/bin/',
  cli: '^src/cli/',
  api: '^src/api/',
  jobs: '^src/jobs/',
  broker: '^src/broker/',
  repositories: '^src/repositories/',
  db: '^src/db/',
  snapshots: '^src/snapshots/',
  domain: '^src/domain/',
  base: '^src/(crypto|config|logger|backoff)\\.ts$|^src/migrations/',
};
// Siblings: neither may import the other.
const SIBLINGS = { db: ['snapshots'], snapshots: ['db'] };

const upward = LAYERS.flatMap((layer, i) => {
  const above = LAYERS.slice(0, i).concat(SIBLINGS[layer] ?? []);
  if (above.length === 0) return [];
  return [
    {
      name: `layer-${layer}`,
      comment: `src/${layer === 'base' ? '(base)' : layer} may not import ${above.join(', ')} (imports point down the layers)`,
      severity: 'error',
      from: { path: PATHS[layer] },
      to: { path: above.map((l) => PATHS[l]).join('|') },
    },
  ];
});

module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'no import cycles, type imports included',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'src-not-tests',
      comment: 'src/ never imports tests or benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'known-layer',
      comment: 'every file in src/ belongs to a layer (add new folders to .dependency-cruiser.cjs)',
      severity: 'error',
      from: { path: '^src/', pathNot: Object.values(PATHS).join('|') },
      to: {},
    },
    {
      name: 'cli-over-http',
      comment: 'src/cli talks to meshq over HTTP: it may import only src/domain and base modules',
      severity: 'error',
      from: { path: PATHS.cli },
      to: { path: ['api', 'jobs', 'broker', 'repositories', 'db', 'snapshots'].map((l) => PATHS[l]).join('|') },
    },
    ...upward,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
    moduleSystems: ['es6'],
  },
};
