/**
 * For the MikroORM CLI (`npx mikro-orm ...`, e.g. schema diffs while writing a migration).
 * The application builds the same options in src/db/orm.ts from the validated config.
 */
import { loadConfig, loadDotEnv } from './src/config.js';
import { ormOptions } from './src/db/orm.js';

loadDotEnv();
export default ormOptions(loadConfig());
