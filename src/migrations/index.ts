/**
 * The one migration set, in order. Each migration that changes business tables also
 * registers an upgrade step for snapshot rows (src/snapshots/upgrades.ts).
 */
import { Migration20261124000000_initial } from './Migration20261124000000_initial.js';

export const MIGRATIONS = [{ name: 'Migration20261124000000_initial', class: Migration20261124000000_initial }];

/** The schema version a database is at once every migration has run. */
export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.name;
