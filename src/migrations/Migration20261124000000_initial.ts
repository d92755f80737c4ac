import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * The initial schema. One migration set serves both dialects; database-specific SQL
 * lives only in these explicit branches. A test checks that after all migrations the
 * ORM's schema diff against the entity metadata is empty on both dialects.
 */
export class Migration20261124000000_initial extends Migration {
  override name = 'Migration20261124000000_initial';

  override up(): void {
    const statements = isPostgres(this.driver) ? POSTGRESQL : SQLITE;
    for (const sql of statements) this.addSql(sql);
  }
}

const SQLITE = [
  "create table `admin_user` (`id` text not null primary key, `name` text not null, `password_hash` text not null, `export_key_sealed` text not null, `export_kdf` json not null, `updated_at` datetime not null);",
  "create unique index `admin_user_name_unique` on `admin_user` (`name`);",
  "create table `api_token` (`id` text not null primary key, `name` text not null, `token_hash` text not null, `scopes` json not null, `created_at` datetime not null, `last_used_at` datetime null);",
  "create unique index `api_token_token_hash_unique` on `api_token` (`token_hash`);",
  "create table `audit_record` (`id` text not null primary key, `at` datetime not null, `actor` text not null, `action` text not null, `entity_type` text not null, `entity_id` text null, `detail` json not null);",
  "create index `audit_record_at_index` on `audit_record` (`at`);",
  "create table `job_record` (`job_id` text not null primary key, `type` text not null, `result` json not null, `completed_at` datetime not null);",
  "create index `job_record_completed_at_index` on `job_record` (`completed_at`);",
  "create table `mesh_config` (`id` text not null primary key, `name` text not null, `subnet` text not null, `listen_port` integer not null, `dns` json not null, `protocol` text not null, `awg` json null, `created_at` datetime not null, `updated_at` datetime not null);",
  "create unique index `mesh_config_name_unique` on `mesh_config` (`name`);",
  "create table `node` (`id` text not null primary key, `config_id` text not null, `name` text not null, `kind` text not null, `address` text not null, `endpoint` text null, `listen_port` integer null, `public_key` text not null, `private_key_enc` text not null, `client_initialized` integer not null default false, `online` integer not null default false, `last_seen_at` datetime null, `created_at` datetime not null, `updated_at` datetime not null, constraint `node_config_id_foreign` foreign key (`config_id`) references `mesh_config` (`id`) on delete cascade);",
  "create index `node_config_id_index` on `node` (`config_id`);",
  "create unique index `node_config_name_unique` on `node` (`config_id`, `name`);",
  "create unique index `node_config_address_unique` on `node` (`config_id`, `address`);",
  "create table `mqtt_credential` (`id` text not null primary key, `node_id` text not null, `username` text not null, `client_id` text not null, `password_hash` text not null, `salt` text not null, `version` integer not null default 1, `rotated_at` datetime not null, constraint `mqtt_credential_node_id_foreign` foreign key (`node_id`) references `node` (`id`) on delete cascade);",
  "create unique index `mqtt_credential_node_id_unique` on `mqtt_credential` (`node_id`);",
  "create unique index `mqtt_credential_username_unique` on `mqtt_credential` (`username`);",
  "create table `peer_link` (`id` text not null primary key, `config_id` text not null, `from_node_id` text not null, `to_node_id` text not null, `link_group_id` text not null, `allowed_ips` json not null, `persistent_keepalive` integer null, constraint `peer_link_config_id_foreign` foreign key (`config_id`) references `mesh_config` (`id`) on delete cascade, constraint `peer_link_from_node_id_foreign` foreign key (`from_node_id`) references `node` (`id`) on delete cascade, constraint `peer_link_to_node_id_foreign` foreign key (`to_node_id`) references `node` (`id`) on delete cascade);",
  "create index `peer_link_config_id_index` on `peer_link` (`config_id`);",
  "create index `peer_link_from_node_id_index` on `peer_link` (`from_node_id`);",
  "create index `peer_link_to_node_id_index` on `peer_link` (`to_node_id`);",
  "create index `peer_link_link_group_id_index` on `peer_link` (`link_group_id`);",
  "create unique index `peer_link_from_to_unique` on `peer_link` (`from_node_id`, `to_node_id`);",
  "create table `port_forward_rule` (`id` text not null primary key, `config_id` text not null, `from_node_id` text not null, `from_port` integer not null, `to_node_id` text not null, `to_port` integer not null, `protocol` text not null, `enabled` integer not null default true, `created_at` datetime not null, constraint `port_forward_rule_config_id_foreign` foreign key (`config_id`) references `mesh_config` (`id`) on delete cascade, constraint `port_forward_rule_from_node_id_foreign` foreign key (`from_node_id`) references `node` (`id`) on delete cascade, constraint `port_forward_rule_to_node_id_foreign` foreign key (`to_node_id`) references `node` (`id`) on delete cascade);",
  "create index `port_forward_rule_config_id_index` on `port_forward_rule` (`config_id`);",
  "create index `port_forward_rule_from_node_id_index` on `port_forward_rule` (`from_node_id`);",
  "create index `port_forward_rule_to_node_id_index` on `port_forward_rule` (`to_node_id`);",
  "create unique index `port_forward_to_unique` on `port_forward_rule` (`to_node_id`, `to_port`, `protocol`);",
  "create table `setting` (`key` text not null primary key, `value` json not null, `updated_at` datetime not null);",
  "create table `snapshot_archive` (`id` text not null primary key, `kind` text not null, `created_at` datetime not null, `size` integer not null, `sha256` text not null, `schema_version` text not null, `counts` json not null, `sealed_key` text null, `data` blob not null);",
  "create index `snapshot_archive_created_at_index` on `snapshot_archive` (`created_at`);",
  "create table `system_state` (`key` text not null primary key, `value` json not null, `updated_at` datetime not null);",
];

const POSTGRESQL = [
  "create table \"admin_user\" (\"id\" uuid not null, \"name\" varchar(64) not null, \"password_hash\" varchar(255) not null, \"export_key_sealed\" text not null, \"export_kdf\" jsonb not null, \"updated_at\" timestamptz(3) not null, primary key (\"id\"));",
  "alter table \"admin_user\" add constraint \"admin_user_name_unique\" unique (\"name\");",
  "create table \"api_token\" (\"id\" uuid not null, \"name\" varchar(64) not null, \"token_hash\" varchar(64) not null, \"scopes\" jsonb not null, \"created_at\" timestamptz(3) not null, \"last_used_at\" timestamptz(3) null, primary key (\"id\"));",
  "alter table \"api_token\" add constraint \"api_token_token_hash_unique\" unique (\"token_hash\");",
  "create table \"audit_record\" (\"id\" uuid not null, \"at\" timestamptz(3) not null, \"actor\" varchar(128) not null, \"action\" varchar(64) not null, \"entity_type\" varchar(64) not null, \"entity_id\" varchar(64) null, \"detail\" jsonb not null, primary key (\"id\"));",
  "create index \"audit_record_at_index\" on \"audit_record\" (\"at\");",
  "create table \"job_record\" (\"job_id\" varchar(128) not null, \"type\" varchar(64) not null, \"result\" jsonb not null, \"completed_at\" timestamptz(3) not null, primary key (\"job_id\"));",
  "create index \"job_record_completed_at_index\" on \"job_record\" (\"completed_at\");",
  "create table \"mesh_config\" (\"id\" uuid not null, \"name\" varchar(64) not null, \"subnet\" varchar(64) not null, \"listen_port\" int not null, \"dns\" jsonb not null, \"protocol\" varchar(16) not null, \"awg\" jsonb null, \"created_at\" timestamptz(3) not null, \"updated_at\" timestamptz(3) not null, primary key (\"id\"));",
  "alter table \"mesh_config\" add constraint \"mesh_config_name_unique\" unique (\"name\");",
  "create table \"node\" (\"id\" uuid not null, \"config_id\" uuid not null, \"name\" varchar(64) not null, \"kind\" varchar(16) not null, \"address\" varchar(64) not null, \"endpoint\" varchar(300) null, \"listen_port\" int null, \"public_key\" varchar(64) not null, \"private_key_enc\" text not null, \"client_initialized\" boolean not null default false, \"online\" boolean not null default false, \"last_seen_at\" timestamptz(3) null, \"created_at\" timestamptz(3) not null, \"updated_at\" timestamptz(3) not null, primary key (\"id\"));",
  "create index \"node_config_id_index\" on \"node\" (\"config_id\");",
  "alter table \"node\" add constraint \"node_config_name_unique\" unique (\"config_id\", \"name\");",
  "alter table \"node\" add constraint \"node_config_address_unique\" unique (\"config_id\", \"address\");",
  "create table \"mqtt_credential\" (\"id\" uuid not null, \"node_id\" uuid not null, \"username\" varchar(64) not null, \"client_id\" varchar(64) not null, \"password_hash\" varchar(64) not null, \"salt\" varchar(64) not null, \"version\" int not null default 1, \"rotated_at\" timestamptz(3) not null, primary key (\"id\"));",
  "alter table \"mqtt_credential\" add constraint \"mqtt_credential_node_id_unique\" unique (\"node_id\");",
  "alter table \"mqtt_credential\" add constraint \"mqtt_credential_username_unique\" unique (\"username\");",
  "create table \"peer_link\" (\"id\" uuid not null, \"config_id\" uuid not null, \"from_node_id\" uuid not null, \"to_node_id\" uuid not null, \"link_group_id\" uuid not null, \"allowed_ips\" jsonb not null, \"persistent_keepalive\" int null, primary key (\"id\"));",
  "create index \"peer_link_config_id_index\" on \"peer_link\" (\"config_id\");",
  "create index \"peer_link_to_node_id_index\" on \"peer_link\" (\"to_node_id\");",
  "create index \"peer_link_link_group_id_index\" on \"peer_link\" (\"link_group_id\");",
  "alter table \"peer_link\" add constraint \"peer_link_from_to_unique\" unique (\"from_node_id\", \"to_node_id\");",
  "create table \"port_forward_rule\" (\"id\" uuid not null, \"config_id\" uuid not null, \"from_node_id\" uuid not null, \"from_port\" int not null, \"to_node_id\" uuid not null, \"to_port\" int not null, \"protocol\" varchar(8) not null, \"enabled\" boolean not null default true, \"created_at\" timestamptz(3) not null, primary key (\"id\"));",
  "create index \"port_forward_rule_config_id_index\" on \"port_forward_rule\" (\"config_id\");",
  "create index \"port_forward_rule_from_node_id_index\" on \"port_forward_rule\" (\"from_node_id\");",
  "alter table \"port_forward_rule\" add constraint \"port_forward_to_unique\" unique (\"to_node_id\", \"to_port\", \"protocol\");",
  "create table \"setting\" (\"key\" varchar(128) not null, \"value\" jsonb not null, \"updated_at\" timestamptz(3) not null, primary key (\"key\"));",
  "create table \"snapshot_archive\" (\"id\" uuid not null, \"kind\" varchar(16) not null, \"created_at\" timestamptz(3) not null, \"size\" int not null, \"sha256\" varchar(64) not null, \"schema_version\" varchar(128) not null, \"counts\" jsonb not null, \"sealed_key\" text null, \"data\" bytea not null, primary key (\"id\"));",
  "create index \"snapshot_archive_created_at_index\" on \"snapshot_archive\" (\"created_at\");",
  "create table \"system_state\" (\"key\" varchar(64) not null, \"value\" jsonb not null, \"updated_at\" timestamptz(3) not null, primary key (\"key\"));",
  "alter table \"node\" add constraint \"node_config_id_foreign\" foreign key (\"config_id\") references \"mesh_config\" (\"id\") on delete cascade;",
  "alter table \"mqtt_credential\" add constraint \"mqtt_credential_node_id_foreign\" foreign key (\"node_id\") references \"node\" (\"id\") on delete cascade;",
  "alter table \"peer_link\" add constraint \"peer_link_config_id_foreign\" foreign key (\"config_id\") references \"mesh_config\" (\"id\") on delete cascade;",
  "alter table \"peer_link\" add constraint \"peer_link_from_node_id_foreign\" foreign key (\"from_node_id\") references \"node\" (\"id\") on delete cascade;",
  "alter table \"peer_link\" add constraint \"peer_link_to_node_id_foreign\" foreign key (\"to_node_id\") references \"node\" (\"id\") on delete cascade;",
  "alter table \"port_forward_rule\" add constraint \"port_forward_rule_config_id_foreign\" foreign key (\"config_id\") references \"mesh_config\" (\"id\") on delete cascade;",
  "alter table \"port_forward_rule\" add constraint \"port_forward_rule_from_node_id_foreign\" foreign key (\"from_node_id\") references \"node\" (\"id\") on delete cascade;",
  "alter table \"port_forward_rule\" add constraint \"port_forward_rule_to_node_id_foreign\" foreign key (\"to_node_id\") references \"node\" (\"id\") on delete cascade;",
];
