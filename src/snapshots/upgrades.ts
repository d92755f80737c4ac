/**
 * Snapshot upgrades: older files restore into a newer meshq.
 *
 * A file records the schema it was exported at (the name of the last migration). Every
 * migration is listed here, with a step that rewrites snapshot rows from before that
 * migration to after it, or `null` when it changes no business table. Restore applies the
 * steps of every migration after the file's schema, in migration order, then validates the
 * result against the current schema (tables.ts).
 *
 * Why every migration must be listed, even those that need no step: a unit test fails
 * when one is missing, so whoever adds a migration decides explicitly whether snapshot
 * rows need rewriting, instead of old files silently failing validation (or worse,
 * restoring with a column quietly defaulted) months later.
 *
 * Steps rewrite one row at a time (per table), so that a restore can apply them as the
 * rows stream in; they are pure functions of plain rows and must not mutate their input.
 * They may assume the rows were valid at the earlier schema; validation after the last
 * step catches anything else.
 */
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from '../migrations/index.js';
import { SnapshotInvalidError } from './errors.js';
import type { SnapshotTables } from './tables.js';

type Row = Record<string, unknown>;
export type RowUpgrade = (row: Row) => Row;
/** A migration's step: a row rewrite per table it changes. */
export type UpgradeStep = Readonly<Record<string, RowUpgrade>>;

export const UPGRADES: Readonly<Record<string, UpgradeStep | null>> = Object.freeze({
  Migration20261124000000_initial: null,
  // Broker sync bookkeeping (system tables only).
  Migration20261124100000_broker_applied: null,
  // mesh_config.mtu, NOT NULL DEFAULT 1420: what the database gives existing rows.
  Migration20261124200000_config_mtu: { mesh_config: (row) => ({ ...row, mtu: 1420 }) },
  // api_token.expires_at: API tokens are not in snapshots.
  Migration20261125100000_token_expiry: null,
  // node.private_key_enc may be null (agent-held keys); every older row has a key, still valid.
  Migration20261201134800_agent_held_keys: null,
  // node_sync: derived sync state (a system table), not in snapshots.
  Migration20261201135000_node_sync: null,
  // Idempotency keys: a system table, not in snapshots.
  Migration20261201135500_idempotency_key: null,
  // peer_link loses two indexes; rows unchanged.
  Migration20261201160000_peer_link_indexes: null,
  // push_request: the outbox of config pushes (a system table), not in snapshots.
  Migration20261201161000_push_request: null,
  // PostgreSQL: peer_link's foreign keys become statement-level triggers; rows unchanged.
  Migration20261201180000_peer_link_set_checks: null,
  // Stored snapshot files in pieces (system tables), not in snapshots.
  Migration20261201181000_snapshot_chunks: null,
  // PostgreSQL: peer_link's reference checks in one pass per key; rows unchanged.
  Migration20261201183700_peer_link_check_pass: null,
  // PostgreSQL: peer_link loses its to_node_id index, and a link's nodes must be of its
  // config, which the snapshot validator already required; rows unchanged.
  Migration20261202100000_peer_link_to_index: null,
});

/**
 * Tables files may carry that a restore ignores, at any schema version (files exported
 * since keep carrying them at the same schema, so no migration step can tell). Their rows
 * are dropped before the steps run and never reach validation or the database.
 * - api_token: tokens are access control, not business data, like the administrator: a
 *   restore neither brings back a revoked token nor removes a current one.
 */
export const IGNORED_TABLES: readonly string[] = Object.freeze(['api_token']);

const MIGRATION_NAME = /^Migration\d{14}_[A-Za-z0-9_]+$/;

export interface UpgradeOutcome {
  tables: SnapshotTables;
  /** Migrations whose steps ran (null steps included: they were passed). */
  applied: string[];
}

/** What a file at some schema needs: the migrations passed and each table's row rewrites. */
export interface UpgradePlan {
  applied: string[];
  /** The rewrites of a table's rows, in migration order (absent: rows stay as they are). */
  rowSteps: ReadonlyMap<string, readonly RowUpgrade[]>;
}

/**
 * The steps from a file's schema to the latest one. Refuses a schema this meshq does not
 * know: newer (named after the latest migration) or foreign.
 */
export function upgradePlan(schemaVersion: string): UpgradePlan {
  const names = MIGRATIONS.map((m) => m.name);
  const at = names.indexOf(schemaVersion);
  if (at < 0) {
    // Migration names start with a UTC timestamp, so name order is schema order.
    if (MIGRATION_NAME.test(schemaVersion) && schemaVersion > LATEST_SCHEMA_VERSION) {
      throw new SnapshotInvalidError(
        'schema_too_new',
        `snapshot schema ${schemaVersion} is newer than this meshq (${LATEST_SCHEMA_VERSION}); upgrade meshq first`,
      );
    }
    throw new SnapshotInvalidError(
      'schema_unknown',
      `snapshot schema ${JSON.stringify(schemaVersion.slice(0, 128))} is not a schema version of this meshq ` +
        `(known: ${names[0]} … ${LATEST_SCHEMA_VERSION}); it was not exported by meshq or comes from a different branch`,
    );
  }
  const applied = names.slice(at + 1);
  const rowSteps = new Map<string, RowUpgrade[]>();
  for (const name of applied) {
    if (!Object.hasOwn(UPGRADES, name)) {
      // The unit test makes this unreachable in a release; fail closed if it is not.
      throw new Error(`migration ${name} declares no snapshot upgrade step in src/snapshots/upgrades.ts`);
    }
    const step = UPGRADES[name];
    if (!step) continue;
    for (const [table, fn] of Object.entries(step)) {
      const list = rowSteps.get(table) ?? [];
      list.push(fn);
      rowSteps.set(table, list);
    }
  }
  return { applied, rowSteps };
}

/** One row through a table's rewrites. */
export function upgradeRow(steps: readonly RowUpgrade[] | undefined, row: Row): Row {
  if (!steps) return row;
  let out = row;
  for (const step of steps) out = step(out);
  return out;
}

/** Brings whole in-memory tables from a file's schema to the latest one (upgradePlan). */
export function upgradeSnapshotTables(schemaVersion: string, tables: SnapshotTables): UpgradeOutcome {
  const plan = upgradePlan(schemaVersion);
  if (plan.rowSteps.size === 0 && !IGNORED_TABLES.some((t) => Object.hasOwn(tables, t))) return { tables, applied: plan.applied };
  const out: SnapshotTables = {};
  for (const [table, rows] of Object.entries(tables)) {
    if (IGNORED_TABLES.includes(table)) continue;
    const steps = plan.rowSteps.get(table);
    out[table] = steps ? rows.map((row) => upgradeRow(steps, row)) : rows;
  }
  return { tables: out, applied: plan.applied };
}
