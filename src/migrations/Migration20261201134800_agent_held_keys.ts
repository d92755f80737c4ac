import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * `node.private_key_enc` becomes nullable: a node whose agent holds its own key
 * (node.create with `publicKey`) has no private key in meshq. Existing rows keep theirs.
 * Snapshot rows need no step: every older row has a key, which is still valid.
 *
 * PostgreSQL drops the NOT NULL in place. SQLite cannot, so the table is rebuilt as the
 * ORM's schema generator rebuilds it, with two differences that matter for data:
 * - the ORM turns `foreign_keys` off around the rebuild, but that pragma does nothing
 *   inside a transaction, and migrations run in one; dropping `node` with foreign keys on
 *   deletes every row that references it (ON DELETE CASCADE). The rows of the tables
 *   that reference `node` are therefore copied aside first and put back after the
 *   rename, all in the migration's transaction;
 * - the new table's definition is the current one read from sqlite_master with only the
 *   constraint changed, so columns other migrations added to `node` are kept whatever
 *   order the migrations were written in.
 */
export class Migration20261201134800_agent_held_keys extends Migration {
  override name = 'Migration20261201134800_agent_held_keys';

  override async up(): Promise<void> {
    if (isPostgres(this.driver)) {
      this.addSql('alter table "node" alter column "private_key_enc" drop not null;');
      return;
    }
    await this.rebuildNode((sql) => sql.replace('`private_key_enc` text not null', '`private_key_enc` text null'));
  }

  override async down(): Promise<void> {
    if (isPostgres(this.driver)) {
      this.addSql('alter table "node" alter column "private_key_enc" set not null;');
      return;
    }
    await this.rebuildNode((sql) => sql.replace('`private_key_enc` text null', '`private_key_enc` text not null'));
  }

  private async rebuildNode(change: (createSql: string) => string): Promise<void> {
    const [table] = await this.execute("select sql from sqlite_master where type = 'table' and name = 'node'");
    const createSql = String(table?.sql ?? '');
    const changed = change(createSql);
    if (!createSql || changed === createSql) throw new Error('node table definition not as expected: cannot change private_key_enc');
    const indexes = (await this.execute("select sql from sqlite_master where type = 'index' and tbl_name = 'node' and sql is not null")).map((r) => String(r.sql));
    const children = (
      await this.execute(
        "select distinct m.name as name from sqlite_master m join pragma_foreign_key_list(m.name) f where m.type = 'table' and f.\"table\" = 'node' and m.name <> 'node'",
      )
    ).map((r) => String(r.name));

    const q = (name: string) => `\`${name.replace(/`/g, '``')}\``;
    for (const child of children) this.addSql(`create temp table ${q(`keep_${child}`)} as select * from ${q(child)};`);
    this.addSql(changed.replace(/^create table [`"]?node[`"]?/i, 'create table `node__temp_alter`') + ';');
    this.addSql('insert into `node__temp_alter` select * from `node`;');
    this.addSql('drop table `node`;');
    this.addSql('alter table `node__temp_alter` rename to `node`;');
    for (const index of indexes) this.addSql(`${index};`);
    for (const child of children) {
      this.addSql(`insert into ${q(child)} select * from ${q(`keep_${child}`)};`);
      this.addSql(`drop table ${q(`keep_${child}`)};`);
    }
  }
}
