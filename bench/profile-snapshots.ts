// Profiling aid: snapshot export and restore in this process, on the benchmark's rows
// (`node --import tsx --cpu-prof bench/profile-snapshots.ts postgresql [export|restore|both] [runs]`).
import { randomUUID } from 'node:crypto';
import { bootstrap } from '../src/bin/bootstrap.js';
import { createRepositories } from '../src/repositories/index.js';
import { stageUpload } from '../src/jobs/processors/snapshots.js';
import { openUpload } from '../src/snapshots/restore.js';
import { runJob } from '../src/jobs/runner.js';
import type { JobType } from '../src/jobs/table.js';
import { piecesOf, uploadSource } from '../test/support/snapshot-bytes.js';
import { encodeTestSnapshot, generateBusinessTables, rowCount } from '../test/support/snapshot-data.js';
import { benchDatabase, dropRedisPrefix, seconds } from './support.js';

const dialect = (process.argv[2] ?? 'postgresql') as 'sqlite' | 'postgresql';
const what = process.argv[3] ?? 'both';
const runs = Number(process.argv[4] ?? 2);
const PASSWORD = 'bench-admin-password';
const serverKey = Buffer.from('b'.repeat(64), 'hex');
const tables = generateBusinessTables({ configs: 10, nodesPerConfig: 1000, neighbours: 5, forwardsPerNode: 2, audit: 100_000, settings: 20, tokens: 20, staticEvery: 0, label: 'bench', serverKey });
const file = await encodeTestSnapshot(tables, PASSWORD);
const db = await benchDatabase(dialect, { ADMIN_PASSWORD: PASSWORD });
const app = await bootstrap('profile', db.config);
const deps = { uow: app.uow, config: app.config, log: app.log, serverKey: app.serverKey, enqueue: async () => undefined };
const job = (type: JobType, payload: unknown) => runJob(deps, { jobId: randomUUID(), type, envelope: { actor: 'bench', payload } });
const restore = async () => {
  const repos = createRepositories(app.uow.fork(), { serverKey: app.serverKey });
  const prepared = await openUpload(uploadSource(file), PASSWORD, repos.snapshots.tableSpecs(), app.serverKey);
  const staged = await stageUpload(app, piecesOf(file), prepared);
  const t0 = process.hrtime.bigint();
  await job('snapshot.restore', { stagedId: staged.id });
  return seconds(t0);
};
console.log(`${rowCount(tables)} rows`);
console.log(`restore (empty): ${(await restore()).toFixed(2)} s`);
for (let i = 0; i < runs; i++) {
  if (what !== 'restore') {
    const t0 = process.hrtime.bigint();
    await job('snapshot.export', {});
    console.log(`export: ${seconds(t0).toFixed(2)} s`);
  }
  if (what !== 'export') console.log(`restore (replacing): ${(await restore()).toFixed(2)} s`);
}
await app.close();
await dropRedisPrefix(db.config.queuePrefix);
await db.drop();
