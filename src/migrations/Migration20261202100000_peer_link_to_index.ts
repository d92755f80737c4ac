import { Migration } from '@mikro-orm/migrations';
import { replacePeerLinkFunctions } from './peer-link-references.js';
import { isPostgres } from './dialect.js';

/**
 * PostgreSQL: peer_link loses its to_node_id index, which every mesh.generate row entered
 * at one of n scattered places (most of the statement's index upkeep,
 * docs/benchmarks.md). Its readers now find the links to a node through the (from, to)
 * unique index, from the nodes of the node's config, and the check functions refuse a link
 * whose node belongs to another config, which makes that exact (version 3 in
 * src/migrations/peer-link-references.ts). SQLite keeps the index: its foreign keys'
 * cascade reads through it. No business row changes (the snapshot validator already
 * refused such a link), so snapshots need no upgrade step.
 */
export class Migration20261202100000_peer_link_to_index extends Migration {
  override name = 'Migration20261202100000_peer_link_to_index';

  override up(): void {
    if (!isPostgres(this.driver)) return;
    for (const statement of replacePeerLinkFunctions(3)) this.addSql(statement);
    this.addSql('drop index "peer_link_to_node_id_index";');
  }

  override down(): void {
    if (!isPostgres(this.driver)) return;
    this.addSql('create index "peer_link_to_node_id_index" on "peer_link" ("to_node_id");');
    for (const statement of replacePeerLinkFunctions(2)) this.addSql(statement);
  }
}
