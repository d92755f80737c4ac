/**
 * Every entity meshq maps, and which of them are business data (carried by snapshots).
 * A test derives the tables from the ORM metadata and fails when a table is neither in
 * BUSINESS_ENTITIES nor in SYSTEM_ENTITIES.
 */
import { ApiTokenSchema, AdminUserSchema } from './access.js';
import { AuditRecordSchema } from './audit.js';
import {
  MeshConfigSchema,
  MqttCredentialSchema,
  NodeSchema,
  PeerLinkSchema,
  PortForwardRuleSchema,
} from './mesh.js';
import { SettingSchema } from './settings.js';
import { BrokerAppliedSchema, IdempotencyKeySchema, JobRecordSchema, NodeSyncSchema, PushRequestSchema, SnapshotArchiveChunkSchema, SnapshotArchiveSchema, SystemStateSchema } from './system.js';

/** Business entities in foreign-key order (parents first): restore inserts in this order. */
export const BUSINESS_ENTITIES = [
  SettingSchema,
  MeshConfigSchema,
  NodeSchema,
  PeerLinkSchema,
  MqttCredentialSchema,
  PortForwardRuleSchema,
  AuditRecordSchema,
] as const;

/** Not carried by snapshots. API tokens are access control, like the administrator. */
export const SYSTEM_ENTITIES = [
  AdminUserSchema,
  ApiTokenSchema,
  JobRecordSchema,
  SystemStateSchema,
  SnapshotArchiveSchema,
  SnapshotArchiveChunkSchema,
  BrokerAppliedSchema,
  NodeSyncSchema,
  IdempotencyKeySchema,
  PushRequestSchema,
] as const;

export const ALL_ENTITIES = [...BUSINESS_ENTITIES, ...SYSTEM_ENTITIES];
