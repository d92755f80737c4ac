import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/** Bytes per stored piece; the same as the repository writes (src/repositories/snapshot-archives.ts). */
const CHUNK = 1024 * 1024;

/**
 * Stored snapshot files (exports, staged uploads) move from one blob per file
 * (`snapshot_archive.data`) to pieces in `snapshot_archive_chunk`, so that a file of any
 * size is written and read a bounded piece at a time. Files stored before are cut into
 * pieces here, in SQL, in the migration's transaction, so every stored file reads the one
 * way afterwards; then the column goes. A system table: no snapshot upgrade step.
 *
 * down() puts each file back together into the column (PostgreSQL with string_agg over
 * bytea; SQLite has no blob aggregate, so there it is reassembled one file at a time in
 * the migration, as a whole Buffer: going back is a rare, operator-run step).
 */
export class Migration20261201181000_snapshot_chunks extends Migration {
  override name = 'Migration20261201181000_snapshot_chunks';

  override up(): void {
    if (isPostgres(this.driver)) {
      this.addSql('create table "snapshot_archive_chunk" ("archive_id" uuid not null, "seq" int not null, "data" bytea not null, primary key ("archive_id", "seq"));');
      this.addSql(
        'insert into "snapshot_archive_chunk" ("archive_id", "seq", "data") ' +
          `select a."id", g.seq, substring(a."data" from g.seq * ${CHUNK} + 1 for ${CHUNK}) from "snapshot_archive" a ` +
          `cross join lateral generate_series(0, (length(a."data") - 1) / ${CHUNK}) as g(seq) where length(a."data") > 0;`,
      );
      this.addSql('alter table "snapshot_archive" drop column "data";');
      return;
    }
    this.addSql('create table `snapshot_archive_chunk` (`archive_id` text not null, `seq` integer not null, `data` blob not null, primary key (`archive_id`, `seq`));');
    // substr() and length() count bytes on a blob.
    this.addSql(
      'with recursive piece(id, seq) as (' +
        'select `id`, 0 from `snapshot_archive` where length(`data`) > 0 ' +
        `union all select piece.id, piece.seq + 1 from piece join \`snapshot_archive\` a on a.\`id\` = piece.id where (piece.seq + 1) * ${CHUNK} < length(a.\`data\`)) ` +
        'insert into `snapshot_archive_chunk` (`archive_id`, `seq`, `data`) ' +
        `select piece.id, piece.seq, substr(a.\`data\`, piece.seq * ${CHUNK} + 1, ${CHUNK}) from piece join \`snapshot_archive\` a on a.\`id\` = piece.id;`,
    );
    this.addSql('alter table `snapshot_archive` drop column `data`;');
  }

  override async down(): Promise<void> {
    if (isPostgres(this.driver)) {
      this.addSql('alter table "snapshot_archive" add column "data" bytea not null default \'\'::bytea;');
      this.addSql(
        'update "snapshot_archive" a set "data" = coalesce((select string_agg(c."data", \'\'::bytea order by c."seq") from "snapshot_archive_chunk" c where c."archive_id" = a."id"), \'\'::bytea);',
      );
      this.addSql('alter table "snapshot_archive" alter column "data" drop default;');
      this.addSql('drop table "snapshot_archive_chunk";');
      return;
    }
    this.addSql("alter table `snapshot_archive` add column `data` blob not null default x'';");
    const ids = (await this.execute('select distinct `archive_id` as id from `snapshot_archive_chunk`')).map((r) => String(r.id));
    for (const id of ids) {
      const pieces = await this.execute('select `data` from `snapshot_archive_chunk` where `archive_id` = ? order by `seq`', [id]);
      const whole = Buffer.concat(pieces.map((p) => p.data as Buffer));
      this.addSql(`update \`snapshot_archive\` set \`data\` = x'${whole.toString('hex')}' where \`id\` = '${id.replace(/'/g, "''")}';`);
    }
    this.addSql('drop table `snapshot_archive_chunk`;');
  }
}
