// `npm run worker`: the job workers alone, with their /healthz, /readyz and /metrics on
// WORKER_HTTP_PORT; SIGTERM lets active jobs finish.
// The version check runs before anything else is loaded (see node-guard.ts), then tracing
// when configured, before what it instruments is loaded (see telemetry.ts).
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const prepared = await (await import('./telemetry.js')).prepareProcess('worker');
const { runRole } = await import('./bootstrap.js');
const { startWorkers } = await import('../jobs/worker.js');
const { startWorkerHttp } = await import('../jobs/http.js');

await runRole('worker', async (app) => {
  const pool = await startWorkers(app);
  try {
    const http = await startWorkerHttp({ ...app, pool });
    return async () => {
      await pool.close();
      await http.close();
    };
  } catch (err) {
    await pool.close();
    throw err;
  }
}, prepared);
