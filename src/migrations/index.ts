/**
 * The one migration set, in order. Each migration that changes business tables also
 * registers an upgrade step for snapshot rows (src/snapshots/upgrades.ts).
 */
import { Migration20261124000000_initial } from './Migration20261124000000_initial.js';
import { Migration20261124100000_broker_applied } from './Migration20261124100000_broker_applied.js';
import { Migration20261124200000_config_mtu } from './Migration20261124200000_config_mtu.js';
import { Migration20261125100000_token_expiry } from './Migration20261125100000_token_expiry.js';
import { Migration20261201134800_agent_held_keys } from './Migration20261201134800_agent_held_keys.js';
import { Migration20261201135000_node_sync } from './Migration20261201135000_node_sync.js';
import { Migration20261201135500_idempotency_key } from './Migration20261201135500_idempotency_key.js';
import { Migration20261201160000_peer_link_indexes } from './Migration20261201160000_peer_link_indexes.js';
import { Migration20261201161000_push_request } from './Migration20261201161000_push_request.js';
import { Migration20261201180000_peer_link_set_checks } from './Migration20261201180000_peer_link_set_checks.js';
import { Migration20261201181000_snapshot_chunks } from './Migration20261201181000_snapshot_chunks.js';
import { Migration20261201183700_peer_link_check_pass } from './Migration20261201183700_peer_link_check_pass.js';
import { Migration20261202100000_peer_link_to_index } from './Migration20261202100000_peer_link_to_index.js';

export const MIGRATIONS = [
  { name: 'Migration20261124000000_initial', class: Migration20261124000000_initial },
  { name: 'Migration20261124100000_broker_applied', class: Migration20261124100000_broker_applied },
  { name: 'Migration20261124200000_config_mtu', class: Migration20261124200000_config_mtu },
  { name: 'Migration20261125100000_token_expiry', class: Migration20261125100000_token_expiry },
  { name: 'Migration20261201134800_agent_held_keys', class: Migration20261201134800_agent_held_keys },
  { name: 'Migration20261201135000_node_sync', class: Migration20261201135000_node_sync },
  { name: 'Migration20261201135500_idempotency_key', class: Migration20261201135500_idempotency_key },
  { name: 'Migration20261201160000_peer_link_indexes', class: Migration20261201160000_peer_link_indexes },
  { name: 'Migration20261201161000_push_request', class: Migration20261201161000_push_request },
  { name: 'Migration20261201180000_peer_link_set_checks', class: Migration20261201180000_peer_link_set_checks },
  { name: 'Migration20261201181000_snapshot_chunks', class: Migration20261201181000_snapshot_chunks },
  { name: 'Migration20261201183700_peer_link_check_pass', class: Migration20261201183700_peer_link_check_pass },
  { name: 'Migration20261202100000_peer_link_to_index', class: Migration20261202100000_peer_link_to_index },
];

/** The schema version a database is at once every migration has run. */
export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.name;
