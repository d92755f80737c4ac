import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * peer_link keeps only the indexes something reads through: every row mesh.generate
 * writes enters each index, and a full mesh is a million rows.
 * - link_group_id: a pair's link group ids are scattered over the index, and its one
 *   reader, link.delete, finds both directions through the (from, to) unique index
 *   instead (LinkRepository.deletePair);
 * - from_node_id (SQLite only; PostgreSQL never had it): the (from, to) unique index
 *   starts with the same column and serves every lookup by it.
 * No business row changes, so snapshots need no upgrade step.
 */
export class Migration20261201160000_peer_link_indexes extends Migration {
  override name = 'Migration20261201160000_peer_link_indexes';

  override up(): void {
    if (isPostgres(this.driver)) {
      this.addSql('drop index "peer_link_link_group_id_index";');
    } else {
      this.addSql('drop index `peer_link_link_group_id_index`;');
      this.addSql('drop index `peer_link_from_node_id_index`;');
    }
  }

  override down(): void {
    if (isPostgres(this.driver)) {
      this.addSql('create index "peer_link_link_group_id_index" on "peer_link" ("link_group_id");');
    } else {
      this.addSql('create index `peer_link_link_group_id_index` on `peer_link` (`link_group_id`);');
      this.addSql('create index `peer_link_from_node_id_index` on `peer_link` (`from_node_id`);');
    }
  }
}
