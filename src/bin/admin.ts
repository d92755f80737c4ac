/**
 * `npm run admin -- set-password`: sets the administrator password. The password is read
 * from the terminal without echo, or as the first line of stdin when piped
 * (`printf '%s\n' "$PW" | npm run admin -- set-password`), so it stays out of shell
 * history and `ps`. Only the database is needed: no Redis, no queues, so the password can
 * be set before anything else runs. Migrations are applied first, as at any start. The
 * version check runs before anything else is loaded (see node-guard.ts).
 */
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { ConfigError, loadConfig, loadDotEnv } = await import('../config.js');
const { createLogger } = await import('../logger.js');
const { connectOrm } = await import('../db/orm.js');
const { migrateUnderLock } = await import('../db/migrate.js');
const { UnitOfWork } = await import('../db/unit-of-work.js');
const { parseServerKey } = await import('../crypto.js');
const { setAdminPassword, ADMIN_NAME } = await import('../repositories/admin-account.js');
const { PromptCancelled, readSecret } = await import('../cli/prompt.js');

const args = process.argv.slice(2);
if (args[0] !== 'set-password' || args.length > 1) {
  process.stderr.write(
    args[0] === 'set-password'
      ? 'npm run admin -- set-password takes no argument: it reads the password without echo, or from stdin\n'
      : 'usage: npm run admin -- set-password   (reads the password without echo, or the first line of stdin)\n',
  );
  process.exit(2);
}

let orm: Awaited<ReturnType<typeof connectOrm>> | undefined;
try {
  loadDotEnv();
  const config = loadConfig();
  // Logs go to stderr: stdout says only what was done.
  const log = createLogger(config.logLevel, 'meshq', process.stderr).child({ role: 'admin' });
  let password = await readSecret(`new password for "${ADMIN_NAME}": `);
  if (process.stdin.isTTY) {
    const again = await readSecret('again: ');
    if (again !== password) throw new Error('the two passwords differ; nothing changed');
  }
  password = password.trim();
  orm = await connectOrm(config, log);
  await migrateUnderLock(orm, config);
  await setAdminPassword({ uow: new UnitOfWork(orm, config.dialect), serverKey: parseServerKey(config.secretKey), log }, password);
  process.stdout.write(`password of "${ADMIN_NAME}" set\n`);
} catch (err) {
  const message = err instanceof PromptCancelled ? 'cancelled; nothing changed' : err instanceof ConfigError || err instanceof Error ? err.message : String(err);
  process.stderr.write(`meshq admin: ${message}\n`);
  process.exitCode = 1;
} finally {
  await orm?.close(true);
}
