/**
 * A real worker process for tests: the worker role, configured by the environment the
 * test passes. Test-only knobs (read here, never by src/):
 *   TEST_QUEUE_PREFIX        the test file's own queue prefix
 *   TEST_STALLED_INTERVAL_MS short stall detection so takeovers happen within a test
 *   TEST_CRASH_AFTER_COMMIT  a job type: SIGKILL this process right after that job's
 *                            commit, before BullMQ acknowledges it (once per marker file)
 *   TEST_CRASH_MARKER        file created just before that crash
 */
import { existsSync, writeFileSync } from 'node:fs';
import { loadConfig } from '../../src/config.js';
import { bootstrap } from '../../src/bin/bootstrap.js';
import { startWorkers } from '../../src/jobs/worker.js';

const env = process.env;
const config = loadConfig(env, { queuePrefix: env.TEST_QUEUE_PREFIX });
const app = await bootstrap('worker', config);
const crashType = env.TEST_CRASH_AFTER_COMMIT;
const marker = env.TEST_CRASH_MARKER;
const stalled = env.TEST_STALLED_INTERVAL_MS ? Number(env.TEST_STALLED_INTERVAL_MS) : undefined;

const pool = await startWorkers(app, {
  stalledIntervalMs: stalled,
  lockDurationMs: stalled ? stalled * 2 : undefined,
  onCommitted: (jobId, type) => {
    if (type === crashType && marker && !existsSync(marker)) {
      writeFileSync(marker, jobId);
      process.kill(process.pid, 'SIGKILL');
    }
  },
});
process.send?.({ ready: true, pid: process.pid });

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await pool.close();
  await app.close();
  process.exit(0);
};
process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());
