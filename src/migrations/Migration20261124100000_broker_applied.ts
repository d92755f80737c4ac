import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * `broker_applied`: what the EMQX sync last applied per managed user (a system table, so
 * snapshots neither carry nor restore it and no snapshot upgrade step is needed). The
 * SQL is what the ORM's schema generator produces for the entity on each dialect, so the
 * "schema diff is empty" check keeps holding.
 */
export class Migration20261124100000_broker_applied extends Migration {
  override name = 'Migration20261124100000_broker_applied';

  override up(): void {
    const statements = isPostgres(this.driver) ? POSTGRESQL : SQLITE;
    for (const sql of statements) this.addSql(sql);
  }

  override down(): void {
    this.addSql(isPostgres(this.driver) ? 'drop table if exists "broker_applied";' : 'drop table if exists `broker_applied`;');
  }
}

const SQLITE = [
  'create table `broker_applied` (`username` text not null primary key, `client_id` text not null, `fingerprint` text not null, `applied_at` datetime not null);',
];

const POSTGRESQL = [
  'create table "broker_applied" ("username" varchar(128) not null, "client_id" varchar(128) not null, "fingerprint" varchar(64) not null, "applied_at" timestamptz(3) not null, primary key ("username"));',
];
