// Profiling aid: node.update through the runner without BullMQ (`tsx --cpu-prof bench/profile-runner.ts sqlite`).
import { bootstrap } from '../src/bin/bootstrap.js';
import { benchDatabase, directRunner, dropRedisPrefix } from './support.js';

const dialect = (process.argv[2] ?? 'sqlite') as 'sqlite' | 'postgresql';
const N = Number(process.argv[3] ?? 3000);
const db = await benchDatabase(dialect);
const app = await bootstrap('profile', db.config);
const run = directRunner(app, 'p');
const { id: configId } = await run('config.create', { name: 'p', subnet: '10.1.0.0/16' });
const ids: string[] = [];
for (let i = 0; i < 20; i++) ids.push((await run('node.create', { configId, name: `n${i}`, kind: 'static' })).id);
const start = performance.now();
const inflight = 8;
let next = 0;
await Promise.all(Array.from({ length: inflight }, async () => {
  while (next < N) {
    const i = next++;
    await run('node.update', { id: ids[i % ids.length], listenPort: 1024 + i });
  }
}));
const ms = performance.now() - start;
console.log(`${dialect}: ${N} node.update in ${ms.toFixed(0)} ms = ${(N / (ms / 1000)).toFixed(0)} jobs/s (no BullMQ)`);
await app.close();
await dropRedisPrefix(db.config.queuePrefix);
await db.drop();
