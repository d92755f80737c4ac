import { Migration } from '@mikro-orm/migrations';
import { PEER_LINK_FOREIGN_KEYS, peerLinkReferenceTriggers } from './peer-link-references.js';
import { isPostgres } from './dialect.js';

/**
 * PostgreSQL: peer_link's three foreign keys become statement-level triggers with the
 * same rules (src/migrations/peer-link-references.ts): the per-row RI checks were most of
 * mesh.generate's time. SQLite is unchanged. No business row changes, so snapshots need
 * no upgrade step. The check functions as they were then (version 1): a later migration
 * replaces their bodies.
 */
export class Migration20261201180000_peer_link_set_checks extends Migration {
  override name = 'Migration20261201180000_peer_link_set_checks';

  override up(): void {
    if (!isPostgres(this.driver)) return;
    this.addSql(
      'alter table "peer_link" drop constraint "peer_link_config_id_foreign", drop constraint "peer_link_from_node_id_foreign", drop constraint "peer_link_to_node_id_foreign";',
    );
    for (const t of peerLinkReferenceTriggers(1)) this.addSql(t.ddl);
  }

  override down(): void {
    if (!isPostgres(this.driver)) return;
    for (const t of [...peerLinkReferenceTriggers(1)].reverse()) {
      this.addSql(`drop trigger "${t.name}" on "${t.table}";`);
      this.addSql(`drop function "${t.fn}"();`);
    }
    for (const statement of PEER_LINK_FOREIGN_KEYS) this.addSql(statement);
  }
}
