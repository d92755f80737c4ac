/**
 * `npm start`: the API and the workers in one process, the single-machine default.
 * Shutdown closes the API first (no new jobs come in), then lets the workers finish
 * their active jobs; runRole then closes queues, Redis and the ORM. The version check
 * runs before anything else is loaded (see node-guard.ts).
 */
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { buildApi } = await import('../api/app.js');
const { runRole } = await import('./bootstrap.js');
const { startWorkers } = await import('../jobs/worker.js');

await runRole('both', async (app) => {
  const pool = await startWorkers(app);
  try {
    const api = await buildApi(app);
    await api.listen({ host: app.config.host, port: app.config.port });
    return async () => {
      await api.close();
      await pool.close();
    };
  } catch (err) {
    await pool.close();
    throw err;
  }
});
