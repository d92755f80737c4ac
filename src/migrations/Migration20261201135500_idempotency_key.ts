import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * `idempotency_key`: what each Idempotency-Key was used for, kept beside the ledger (a
 * system table, so snapshots neither carry nor restore it and no snapshot upgrade step is
 * needed). The SQL is what the ORM's schema generator produces for the entity on each
 * dialect, so the "schema diff is empty" check keeps holding.
 */
export class Migration20261201135500_idempotency_key extends Migration {
  override name = 'Migration20261201135500_idempotency_key';

  override up(): void {
    for (const statement of isPostgres(this.driver) ? POSTGRESQL : SQLITE) this.addSql(statement);
  }

  override down(): void {
    this.addSql(isPostgres(this.driver) ? 'drop table if exists "idempotency_key";' : 'drop table if exists `idempotency_key`;');
  }
}

const SQLITE = [
  'create table `idempotency_key` (`key_hash` text not null primary key, `actor` text not null, `job_id` text not null, `type` text not null, `request_hash` text not null, `created_at` datetime not null);',
  'create index `idempotency_key_created_at_index` on `idempotency_key` (`created_at`);',
];

const POSTGRESQL = [
  'create table "idempotency_key" ("key_hash" varchar(64) not null, "actor" varchar(128) not null, "job_id" varchar(128) not null, "type" varchar(64) not null, "request_hash" varchar(64) not null, "created_at" timestamptz(3) not null, primary key ("key_hash"));',
  'create index "idempotency_key_created_at_index" on "idempotency_key" ("created_at");',
];
