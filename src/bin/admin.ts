/**
 * `npm run admin -- set-password [password]`: sets the administrator password (reads it
 * from stdin when not given, so it stays out of shell history). The version check runs
 * before anything else is loaded (see node-guard.ts).
 */
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { createInterface } = await import('node:readline/promises');
const { bootstrap } = await import('./bootstrap.js');
const { setAdminPassword, ADMIN_NAME } = await import('../repositories/admin-account.js');

const [command, given] = process.argv.slice(2);
if (command !== 'set-password') {
  process.stderr.write('usage: npm run admin -- set-password [password]\n');
  process.exit(2);
}
const app = await bootstrap('admin');
try {
  let password = given;
  if (!password) {
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    password = (await rl.question('new administrator password: ')).trim();
    rl.close();
  }
  await setAdminPassword(app, password);
  process.stdout.write(`password of "${ADMIN_NAME}" set\n`);
} catch (err) {
  process.stderr.write(`meshq admin: ${(err as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await app.close();
}
