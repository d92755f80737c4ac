// Profiling aid: node.update through BullMQ and the worker (`node --import tsx --cpu-prof bench/profile-worker.ts postgresql 8000`).
import { bootstrap } from '../src/bin/bootstrap.js';
import { meshqNodeUpdateRate, seed } from './jobs-bench.js';
import { benchDatabase, dropRedisPrefix } from './support.js';

const dialect = (process.argv[2] ?? 'postgresql') as 'sqlite' | 'postgresql';
const n = Number(process.argv[3] ?? 8000);
const db = await benchDatabase(dialect, { WORKER_CONCURRENCY: '8' });
const app = await bootstrap('profile', db.config);
const ids = await seed(app);
const rate = await meshqNodeUpdateRate(app, ids, n);
console.log(`${dialect}: ${n} node.update through BullMQ: ${rate.toFixed(0)} jobs/s`);
await app.close();
await dropRedisPrefix(db.config.queuePrefix);
await db.drop();
