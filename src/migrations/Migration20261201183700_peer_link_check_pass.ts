import { Migration } from '@mikro-orm/migrations';
import { replacePeerLinkChecks } from './peer-link-references.js';
import { isPostgres } from './dialect.js';

/**
 * PostgreSQL: peer_link's reference checks read each key's distinct values in one pass
 * over the statement's rows, instead of six passes and an on-disk sort
 * (checkReferences in src/migrations/peer-link-references.ts); the triggers and their
 * rules are unchanged. SQLite keeps its foreign keys. No business row changes, so
 * snapshots need no upgrade step.
 */
export class Migration20261201183700_peer_link_check_pass extends Migration {
  override name = 'Migration20261201183700_peer_link_check_pass';

  override up(): void {
    if (!isPostgres(this.driver)) return;
    for (const statement of replacePeerLinkChecks(2)) this.addSql(statement);
  }

  override down(): void {
    if (!isPostgres(this.driver)) return;
    for (const statement of replacePeerLinkChecks(1)) this.addSql(statement);
  }
}
