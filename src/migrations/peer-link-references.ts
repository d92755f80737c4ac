/**
 * PostgreSQL: the rules of peer_link's three references (config_id -> mesh_config,
 * from_node_id and to_node_id -> node; ON DELETE CASCADE, ON UPDATE NO ACTION), enforced
 * once per statement by triggers with transition tables instead of once per row by
 * foreign keys. A foreign key runs an RI query per row and per key: for a full mesh of
 * 1,000 nodes that is three million probes, most of mesh.generate's time
 * (docs/benchmarks.md); a trigger here checks a statement's rows with one hash anti-join
 * per key. What the foreign keys did, and the triggers do:
 * - peer_link, after INSERT and after UPDATE: the referenced config and node rows are
 *   locked FOR KEY SHARE, as an RI check locks them (a concurrent delete waits for this
 *   transaction, or has already committed and the row is then missing), then a new row
 *   whose config, from node or to node is missing fails the statement with SQLSTATE 23503
 *   (foreign_key_violation) naming the old constraint, which the ORM raises as
 *   ForeignKeyConstraintViolationException as before;
 * - node and mesh_config, after DELETE: the links that referenced the deleted rows are
 *   deleted (ON DELETE CASCADE). A config's delete still cascades to its nodes through
 *   node's own foreign key, whose trigger then takes their links too;
 * - since version 3, a link's two nodes must also belong to the link's config, as if its
 *   foreign keys were (config_id, from_node_id) and (config_id, to_node_id) to node's
 *   (config_id, id): every writer of meshq already kept that rule (link.create's check,
 *   mesh.generate, the snapshot validator), and the database holding it is what lets
 *   peer_link go without a to_node_id index: the links to a node come from nodes of its
 *   config, each found through the (from, to) unique index, so a node's delete and the
 *   push fan-out's "who links to it" probe that index once per node of the config
 *   instead of reading a second index that every mesh.generate row paid to fill;
 * - node and mesh_config, after an UPDATE of their id: the change is refused while links
 *   reference the old id (NO ACTION; nothing in meshq changes an id). A row trigger that
 *   only an id change fires, so the common update of a node costs nothing.
 * SQLite keeps the foreign keys: there a check is one index probe inside the statement's
 * own bytecode.
 *
 * The functions keep the search_path they were created with (the migration's, where
 * meshq's tables are): a trigger must find them whoever fires it, and pg_dump's output,
 * for one, empties search_path before loading rows.
 *
 * Created by Migration20261201180000_peer_link_set_checks and declared to the ORM
 * (src/db/orm.ts), so the schema diff knows them; a change here needs a migration.
 */
import type { EntityMetadata } from '@mikro-orm/core';

interface ReferenceTrigger {
  table: 'peer_link' | 'node' | 'mesh_config';
  name: string;
  event: 'insert' | 'update' | 'delete';
  forEach: 'statement' | 'row';
  /** The trigger's function, created with it. */
  fn: string;
  /** The function's body. */
  body: string;
  /** The whole DDL: function and trigger. */
  ddl: string;
}

const violation = (constraint: string, table: string, message: string, detail: string): string =>
  `raise foreign_key_violation using constraint = '${constraint}', table = '${table}',
      message = '${message}',
      detail = ${detail};`;

const missingKey = (column: string, target: string, constraint: string): string => `if found then
    ${violation(constraint, 'peer_link', `insert or update on table "peer_link" violates foreign key constraint "${constraint}"`, `format('Key (${column})=(%s) is not present in table "${target}".', missing)`)}
  end if;`;

/** The new rows' references of one key, read from the rows: the first missing one fails the statement (version 1). */
const checkKey = (column: string, target: string, constraint: string): string => `
  select l."${column}" into missing from new_links l where not exists (select 1 from "${target}" t where t."id" = l."${column}") limit 1;
  ${missingKey(column, target, constraint)}`;

/** The same from the key's distinct values, collected once (version 2). */
const checkValues = (values: string, column: string, target: string, constraint: string): string => `
  select v into missing from unnest(${values}) v where not exists (select 1 from "${target}" t where t."id" = v) limit 1;
  ${missingKey(column, target, constraint)}`;

/**
 * Versions 2 and 3, from the distinct values in `configs`, `froms` and `tos`: the locks
 * (config rows, then node rows, each in id order) and the config check.
 */
const LOCK_AND_CHECK_CONFIGS = `perform 1 from "mesh_config" c where c."id" = any(configs) order by c."id" for key share;
  perform 1 from "node" n where n."id" = any(froms) or n."id" = any(tos) order by n."id" for key share;
  ${checkValues('configs', 'config_id', 'mesh_config', 'peer_link_config_id_foreign')}`;

/**
 * Version 3's node rule for one column, from its distinct (config, node) pairs: the first
 * node that is missing, or belongs to another config than its row's, fails the statement.
 */
const checkNodesOfConfig = (nodes: string, configs: string, column: 'from_node_id' | 'to_node_id', constraint: string): string => {
  const fail = (detail: string) =>
    violation(constraint, 'peer_link', `insert or update on table "peer_link" violates foreign key constraint "${constraint}"`, detail);
  return `
  select p.n, p.c, t."config_id" into bad, bad_config, node_config
    from unnest(${nodes}, ${configs}) p(n, c) left join "node" t on t."id" = p.n
    where t."id" is null or t."config_id" <> p.c limit 1;
  if found and node_config is null then
    ${fail(`format('Key (${column})=(%s) is not present in table "node".', bad)`)}
  elsif found then
    ${fail(`format('Key (config_id, ${column})=(%s, %s) is not present in table "node": the node belongs to config %s.', bad_config, bad, node_config)`)}
  end if;`;
};

/**
 * The check function's body, by version. 1, as Migration20261201180000_peer_link_set_checks
 * made it: the locks and each key's anti-join scan the statement's rows, six passes in
 * all, and the union of both node columns was sorted on disk (no statistics on a
 * transition table, so the planner expects every row distinct). 2, since
 * Migration20261201183700_peer_link_check_pass: one pass per key collects its distinct
 * values (hashed, a few thousand at most for a full mesh), and the locks and checks work
 * on those. Same rules, same errors. 3, since Migration20261202100000_peer_link_to_index:
 * the passes collect each node column's distinct (config, node) pairs (the configs come
 * from the `from` side's, so two passes), and a node that is missing or belongs to
 * another config than its row's fails the statement (see the header).
 */
const checkReferences = (version: 1 | 2 | 3): string => {
  if (version === 1) {
    return `
declare
  missing uuid;
begin
  perform 1 from "mesh_config" c where c."id" in (select "config_id" from new_links) order by c."id" for key share;
  perform 1 from "node" n where n."id" in (select "from_node_id" from new_links union select "to_node_id" from new_links) order by n."id" for key share;
  ${checkKey('config_id', 'mesh_config', 'peer_link_config_id_foreign')}
  ${checkKey('from_node_id', 'node', 'peer_link_from_node_id_foreign')}
  ${checkKey('to_node_id', 'node', 'peer_link_to_node_id_foreign')}
  return null;
end`;
  }
  if (version === 2) {
    return `
declare
  missing uuid;
  configs uuid[] := array(select distinct "config_id" from new_links);
  froms uuid[] := array(select distinct "from_node_id" from new_links);
  tos uuid[] := array(select distinct "to_node_id" from new_links);
begin
  ${LOCK_AND_CHECK_CONFIGS}
  ${checkValues('froms', 'from_node_id', 'node', 'peer_link_from_node_id_foreign')}
  ${checkValues('tos', 'to_node_id', 'node', 'peer_link_to_node_id_foreign')}
  return null;
end`;
  }
  return `
declare
  missing uuid;
  bad uuid;
  bad_config uuid;
  node_config uuid;
  froms uuid[];
  from_configs uuid[];
  tos uuid[];
  to_configs uuid[];
  configs uuid[];
begin
  select coalesce(array_agg(p."from_node_id"), '{}'), coalesce(array_agg(p."config_id"), '{}') into froms, from_configs
    from (select distinct "config_id", "from_node_id" from new_links) p;
  select coalesce(array_agg(p."to_node_id"), '{}'), coalesce(array_agg(p."config_id"), '{}') into tos, to_configs
    from (select distinct "config_id", "to_node_id" from new_links) p;
  configs := array(select distinct c from unnest(from_configs) c);
  ${LOCK_AND_CHECK_CONFIGS}
  ${checkNodesOfConfig('froms', 'from_configs', 'from_node_id', 'peer_link_from_node_id_foreign')}
  ${checkNodesOfConfig('tos', 'to_configs', 'to_node_id', 'peer_link_to_node_id_foreign')}
  return null;
end`;
};

/** A trigger function that keeps the search_path it was created with (see above). */
const functionDdl = (fn: string, body: string, replace = false): string =>
  `create ${replace ? 'or replace ' : ''}function "${fn}"() returns trigger language plpgsql set search_path from current as $$${body}$$;\n`;

/**
 * An id change of a referenced row: refused while links still reference the old id. A row
 * trigger on `update of "id"` with a WHEN clause: every other update of the table (a
 * node.update per job) fires nothing, where a statement trigger would build its
 * transition tables on each. Stricter than NO ACTION in one case nothing does: two
 * linked rows swapping their ids in one statement.
 */
const idChangeTrigger = (table: 'node' | 'mesh_config', name: string, fn: string, linked: string, constraint: string): ReferenceTrigger => {
  const body = `
begin
  if ${linked} then
    ${violation(constraint, table, `update or delete on table "${table}" violates foreign key constraint "${constraint}" on table "peer_link"`, `format('Key (id)=(%s) is still referenced from table "peer_link".', old."id")`)}
  end if;
  return null;
end`;
  return {
    table,
    name,
    event: 'update',
    forEach: 'row',
    fn,
    body,
    ddl:
      functionDdl(fn, body) +
      `create trigger "${name}" after update of "id" on "${table}" for each row when (old."id" is distinct from new."id") execute function "${fn}"();`,
  };
};

const trigger = (
  table: ReferenceTrigger['table'],
  name: string,
  event: ReferenceTrigger['event'],
  fn: string,
  transition: string,
  body: string,
): ReferenceTrigger => ({
  table,
  name,
  event,
  forEach: 'statement',
  fn,
  body,
  ddl:
    functionDdl(fn, body) +
    `create trigger "${name}" after ${event} on "${table}" referencing ${transition} for each statement execute function "${fn}"();`,
});

/** ON DELETE CASCADE: the links the `deletes` find for the deleted rows (`gone`) go with them. */
const cascadeDelete = (table: 'node' | 'mesh_config', name: string, fn: string, deletes: readonly string[]): ReferenceTrigger =>
  trigger(
    table,
    name,
    'delete',
    fn,
    'old table as gone',
    `
begin
${deletes.map((d) => `  ${d};\n`).join('')}  return null;
end`,
  );

/** peer_link's check functions: the trigger on insert and the one on update run the same body. */
const CHECK_FUNCTIONS = ['peer_link_check_references_on_insert', 'peer_link_check_references_on_update'] as const;

/**
 * Every trigger at `version`: the check functions' (checkReferences); the node's delete
 * and id-change functions find the links to a node through the to_node_id index up to
 * version 2. Since 3 there is none: those links come from nodes of the node's config (the
 * check functions' rule), so each is one probe of the (from, to) unique index per node of
 * the config (`m`, the config's nodes that still exist: a link from another deleted node
 * goes by the `from` side).
 */
export const peerLinkReferenceTriggers = (version: 1 | 2 | 3): readonly ReferenceTrigger[] => [
  trigger('peer_link', 'peer_link_references_on_insert', 'insert', CHECK_FUNCTIONS[0], 'new table as new_links', checkReferences(version)),
  trigger('peer_link', 'peer_link_references_on_update', 'update', CHECK_FUNCTIONS[1], 'new table as new_links', checkReferences(version)),
  cascadeDelete(
    'node',
    'node_peer_links_on_delete',
    'node_delete_peer_links',
    version < 3
      ? ['delete from "peer_link" where "from_node_id" in (select "id" from gone)', 'delete from "peer_link" where "to_node_id" in (select "id" from gone)']
      : [
          'delete from "peer_link" where "from_node_id" in (select "id" from gone)',
          'delete from "peer_link" l using gone g, "node" m where m."config_id" = g."config_id" and l."from_node_id" = m."id" and l."to_node_id" = g."id"',
        ],
  ),
  idChangeTrigger(
    'node',
    'node_peer_links_on_update',
    'node_keep_linked_ids',
    `exists (select 1 from "peer_link" l where l."from_node_id" = old."id") or exists (select 1 from ${
      version < 3
        ? `"peer_link" l where l."to_node_id" = old."id"`
        : `"node" m join "peer_link" l on l."from_node_id" = m."id" and l."to_node_id" = old."id" where m."config_id" = old."config_id"`
    })`,
    'peer_link_from_node_id_foreign',
  ),
  cascadeDelete('mesh_config', 'mesh_config_peer_links_on_delete', 'mesh_config_delete_peer_links', [
    'delete from "peer_link" where "config_id" in (select "id" from gone)',
  ]),
  idChangeTrigger(
    'mesh_config',
    'mesh_config_peer_links_on_update',
    'mesh_config_keep_linked_ids',
    `exists (select 1 from "peer_link" l where l."config_id" = old."id")`,
    'peer_link_config_id_foreign',
  ),
];

/** The triggers as the latest migration leaves them (the ORM's metadata). */
export const PEER_LINK_REFERENCE_TRIGGERS = peerLinkReferenceTriggers(3);

/**
 * The functions of the triggers at `version` (all, or those named), replaced in place;
 * the triggers themselves are untouched.
 */
export const replacePeerLinkFunctions = (version: 1 | 2 | 3, only?: readonly string[]): string[] =>
  peerLinkReferenceTriggers(version)
    .filter((t) => !only || only.includes(t.fn))
    .map((t) => functionDdl(t.fn, t.body, true));

/** The check functions' bodies replaced by those of `version`, triggers untouched. */
export const replacePeerLinkChecks = (version: 1 | 2): string[] => replacePeerLinkFunctions(version, CHECK_FUNCTIONS);

/** peer_link's foreign keys as the initial migration made them (what the triggers replace). */
export const PEER_LINK_FOREIGN_KEYS = [
  `alter table "peer_link" add constraint "peer_link_config_id_foreign" foreign key ("config_id") references "mesh_config" ("id") on delete cascade;`,
  `alter table "peer_link" add constraint "peer_link_from_node_id_foreign" foreign key ("from_node_id") references "node" ("id") on delete cascade;`,
  `alter table "peer_link" add constraint "peer_link_to_node_id_foreign" foreign key ("to_node_id") references "node" ("id") on delete cascade;`,
];

/**
 * ORM metadata on PostgreSQL (discovery.onMetadata): peer_link's relations have no
 * foreign key, and the three tables carry these triggers, so a schema diff against the
 * database stays empty.
 */
export function declarePeerLinkReferences(meta: EntityMetadata): void {
  if (meta.tableName === 'peer_link') {
    for (const name of ['config', 'fromNode', 'toNode']) meta.properties[name as keyof typeof meta.properties]!.createForeignKeyConstraint = false;
    // No to_node_id index here since Migration20261202100000_peer_link_to_index (see the header).
    meta.properties['toNode' as keyof typeof meta.properties]!.index = false;
  }
  const triggers = PEER_LINK_REFERENCE_TRIGGERS.filter((t) => t.table === meta.tableName);
  if (triggers.length === 0) return;
  meta.triggers = [
    ...(meta.triggers ?? []),
    ...triggers.map((t) => ({ name: t.name, timing: 'after' as const, events: [t.event], forEach: t.forEach, expression: t.ddl })),
  ];
}
