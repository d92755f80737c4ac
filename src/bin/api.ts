import { runRole } from './bootstrap.js';
import { buildApi } from '../api/app.js';

await runRole('api', async (app) => {
  const api = await buildApi(app);
  await api.listen({ host: app.config.host, port: app.config.port });
  // close() stops accepting connections and waits for in-flight requests.
  return () => api.close();
});
