import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * `mesh_config.mtu`: the tunnel MTU, NOT NULL DEFAULT 1420 (existing configs get 1420).
 * A business table changes, so src/snapshots/upgrades.ts has the matching step: snapshot
 * rows exported before this migration get mtu = 1420, as the database's rows do here.
 * The SQL is what the ORM's schema generator produces for the entity on each dialect, so
 * the "schema diff is empty" check keeps holding.
 */
export class Migration20261124200000_config_mtu extends Migration {
  override name = 'Migration20261124200000_config_mtu';

  override up(): void {
    this.addSql(isPostgres(this.driver) ? POSTGRESQL : SQLITE);
  }

  override down(): void {
    this.addSql(isPostgres(this.driver) ? 'alter table "mesh_config" drop column "mtu";' : 'alter table `mesh_config` drop column `mtu`;');
  }
}

const SQLITE = 'alter table `mesh_config` add column `mtu` integer not null default 1420;';

const POSTGRESQL = 'alter table "mesh_config" add "mtu" int not null default 1420;';
