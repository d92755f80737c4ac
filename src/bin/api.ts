// `npm run api`: the HTTP API alone; runs no jobs.
// The version check runs before anything else is loaded (see node-guard.ts), then tracing
// when configured, before what it instruments is loaded (see telemetry.ts).
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const prepared = await (await import('./telemetry.js')).prepareProcess('api');
const { listenApi, runRole } = await import('./bootstrap.js');
const { buildApi } = await import('../api/app.js');

await runRole('api', async (app) => {
  const api = await buildApi(app);
  await listenApi(api, app.config.host, app.config.port);
  // close() stops accepting connections and waits for in-flight requests.
  return () => api.close();
}, prepared);
