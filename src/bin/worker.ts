import { runRole } from './bootstrap.js';
import { startWorkers } from '../jobs/worker.js';

await runRole('worker', async (app) => {
  const pool = await startWorkers(app);
  return () => pool.close();
});
