import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * `node_sync`: each dynamic node's desired revision (with the hash of its pushed content)
 * and the revision its agent acknowledged. A system table: derived state, so snapshots
 * neither carry nor restore it and no snapshot upgrade step is needed. The SQL is what the
 * ORM's schema generator produces for the entity on each dialect, so the "schema diff is
 * empty" check keeps holding.
 */
export class Migration20261201135000_node_sync extends Migration {
  override name = 'Migration20261201135000_node_sync';

  override up(): void {
    this.addSql(isPostgres(this.driver) ? POSTGRESQL : SQLITE);
  }

  override down(): void {
    this.addSql(isPostgres(this.driver) ? 'drop table if exists "node_sync";' : 'drop table if exists `node_sync`;');
  }
}

const SQLITE =
  'create table `node_sync` (`node_id` text not null primary key, `desired_revision` integer not null, `content_hash` text not null, `desired_at` datetime not null, `applied_revision` integer null, `applied_at` datetime null);';

const POSTGRESQL =
  'create table "node_sync" ("node_id" uuid not null, "desired_revision" int not null, "content_hash" varchar(64) not null, "desired_at" timestamptz(3) not null, "applied_revision" int null, "applied_at" timestamptz(3) null, primary key ("node_id"));';
