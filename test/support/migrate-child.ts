// A separate process that migrates the database named by the environment, then prints
// what it applied as one JSON line. Used to prove that concurrent start-ups do not race.
import { loadConfig } from '../../src/config.js';
import { connectOrm } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';

const config = loadConfig();
const orm = await connectOrm(config);
try {
  const outcome = await migrateUnderLock(orm, config);
  process.stdout.write(JSON.stringify(outcome) + '\n');
} finally {
  await orm.close(true);
}
