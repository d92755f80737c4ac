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
    // The rule holds for the rows already there too, as adding a constraint checks them:
    // no meshq writer made such a link, and one made by hand would later outlive its node.
    this.addSql(`do $$
declare
  bad record;
begin
  select l."id", l."config_id", case when f."config_id" <> l."config_id" then f."id" else t."id" end as node_id,
      case when f."config_id" <> l."config_id" then f."config_id" else t."config_id" end as node_config into bad
    from "peer_link" l join "node" f on f."id" = l."from_node_id" join "node" t on t."id" = l."to_node_id"
    where f."config_id" <> l."config_id" or t."config_id" <> l."config_id" limit 1;
  if found then
    raise foreign_key_violation using message = format(
      'peer_link %s (config %s) links node %s of config %s: a link''s nodes must belong to its config; delete or fix that link, then migrate again',
      bad."id", bad."config_id", bad.node_id, bad.node_config);
  end if;
end $$;`);
    for (const statement of replacePeerLinkFunctions(3)) this.addSql(statement);
    this.addSql('drop index "peer_link_to_node_id_index";');
  }

  override down(): void {
    if (!isPostgres(this.driver)) return;
    this.addSql('create index "peer_link_to_node_id_index" on "peer_link" ("to_node_id");');
    for (const statement of replacePeerLinkFunctions(2)) this.addSql(statement);
  }
}
