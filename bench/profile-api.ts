// Profiling aid: POST /api/v1/jobs under load, API in this process, autocannon in a child
// (`node --import tsx --cpu-prof bench/profile-api.ts postgresql 5`).
import { bootstrap } from '../src/bin/bootstrap.js';
import { dropRedisPrefix } from './support.js';
import { BENCH_ADMIN_PASSWORD, httpSubmitRate, seed } from './jobs-bench.js';
import { benchDatabase } from './support.js';

const dialect = (process.argv[2] ?? 'postgresql') as 'sqlite' | 'postgresql';
const seconds = Number(process.argv[3] ?? 5);
const db = await benchDatabase(dialect, { ADMIN_PASSWORD: BENCH_ADMIN_PASSWORD });
const app = await bootstrap('profile', db.config);
const ids = await seed(app);
const rate = await httpSubmitRate(app, ids, 16, seconds);
console.log(`${dialect}: POST /api/v1/jobs ${rate.toFixed(0)} req/s (16 connections, ${seconds} s)`);
await app.close();
await dropRedisPrefix(db.config.queuePrefix);
await db.drop();
