// `npm run worker`: the job workers alone; SIGTERM lets active jobs finish.
// The version check runs before anything else is loaded (see node-guard.ts).
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { runRole } = await import('./bootstrap.js');
const { startWorkers } = await import('../jobs/worker.js');

await runRole('worker', async (app) => {
  const pool = await startWorkers(app);
  return () => pool.close();
});
