import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * `push_request`: the outbox of config pushes, one row per node whose push is wanted (a
 * system table, so snapshots neither carry nor restore it and no snapshot upgrade step is
 * needed). The SQL is what the ORM's schema generator produces for the entity on each
 * dialect, so the "schema diff is empty" check keeps holding.
 */
export class Migration20261201161000_push_request extends Migration {
  override name = 'Migration20261201161000_push_request';

  override up(): void {
    this.addSql(isPostgres(this.driver) ? POSTGRESQL : SQLITE);
  }

  override down(): void {
    this.addSql(isPostgres(this.driver) ? 'drop table if exists "push_request";' : 'drop table if exists `push_request`;');
  }
}

const SQLITE =
  'create table `push_request` (`node_id` text not null primary key, `seq` integer not null, `resend` integer not null, `requested_at` datetime not null);';

const POSTGRESQL =
  'create table "push_request" ("node_id" uuid not null, "seq" int not null, "resend" boolean not null, "requested_at" timestamptz(3) not null, primary key ("node_id"));';
