// `npm run migrate`: bootstrap migrates under the lock; there is nothing else to do.
// The version check runs before anything else is loaded (see node-guard.ts).
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { bootstrap } = await import('./bootstrap.js');

try {
  const app = await bootstrap('migrate');
  await app.close();
  process.exit(0);
} catch (err) {
  process.stderr.write(`meshq migrate: ${(err as Error).message}\n`);
  process.exit(1);
}
