import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * peer_link loses its link_group_id index. Every row mesh.generate writes enters each
 * index, a full mesh is a million rows, and a pair's link group ids are scattered over
 * the index; its one reader, link.delete, finds both directions through the (from, to)
 * unique index instead (LinkRepository.deletePair). No business row changes, so
 * snapshots need no upgrade step.
 */
export class Migration20261201160000_peer_link_indexes extends Migration {
  override name = 'Migration20261201160000_peer_link_indexes';

  override up(): void {
    this.addSql(isPostgres(this.driver) ? 'drop index "peer_link_link_group_id_index";' : 'drop index `peer_link_link_group_id_index`;');
  }

  override down(): void {
    this.addSql(
      isPostgres(this.driver)
        ? 'create index "peer_link_link_group_id_index" on "peer_link" ("link_group_id");'
        : 'create index `peer_link_link_group_id_index` on `peer_link` (`link_group_id`);',
    );
  }
}
