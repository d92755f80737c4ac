/**
 * `npm start`: the API and the workers in one process, the single-machine default.
 * Shutdown closes the API first (no new jobs come in), then lets the workers finish
 * their active jobs; runRole then closes queues, Redis and the ORM. The version check
 * runs before anything else is loaded (see node-guard.ts).
 */
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { buildApi } = await import('../api/app.js');
const { assertPortFree, listenApi, runRole } = await import('./bootstrap.js');
const { startWorkers } = await import('../jobs/worker.js');

await runRole('both', async (app) => {
  // A port in use stops start-up before the workers can take a job.
  await assertPortFree(app.config.host, app.config.port);
  const pool = await startWorkers(app);
  try {
    const api = await buildApi(app);
    await listenApi(api, app.config.host, app.config.port);
    return async () => {
      await api.close();
      await pool.close();
    };
  } catch (err) {
    await pool.close();
    throw err;
  }
});
