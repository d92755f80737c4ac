/**
 * A meshq worker process for the snapshot benchmark: the real worker role (bootstrap +
 * every queue's worker), configured by the environment the benchmark passes, reporting
 * its peak RSS on request. BENCH_QUEUE_PREFIX is the run's own queue prefix.
 */
import { loadConfig } from '../src/config.js';
import { bootstrap } from '../src/bin/bootstrap.js';
import { startWorkers } from '../src/jobs/worker.js';

const config = loadConfig(process.env, { queuePrefix: process.env.BENCH_QUEUE_PREFIX });
const app = await bootstrap('bench-worker', config);
const pool = await startWorkers(app);
process.on('message', (m: unknown) => {
  if (m === 'rss') {
    // maxRSS is in KiB on Linux: the high-water mark over the whole process life.
    process.send!({ maxRss: process.resourceUsage().maxRSS * 1024, rss: process.memoryUsage().rss });
  } else if (m === 'stop') {
    void pool
      .close()
      .then(() => app.close())
      .then(() => process.exit(0));
  }
});
process.send!({ ready: true });
