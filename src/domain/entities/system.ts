import { defineEntity, p } from '@mikro-orm/core';

/**
 * System tables: bookkeeping of the machinery, never business data, never in a snapshot.
 */

/** The exactly-once ledger: a job's id and result, committed with the job's effects. */
export const JobRecordSchema = defineEntity({
  name: 'JobRecord',
  tableName: 'job_record',
  properties: {
    jobId: p.string().length(128).primary(),
    type: p.string().length(64),
    result: p.json<unknown>(),
    completedAt: p.datetime().length(3).index(),
  },
});
export class JobRecord extends JobRecordSchema.class {}
JobRecordSchema.setClass(JobRecord);

/**
 * What an Idempotency-Key was used for: one row per (caller, key), inserted before the
 * job is enqueued, so concurrent requests with one key serialize on its primary key, and
 * kept beside the ledger after the job has left Redis, so a late retry finds the job's
 * recorded outcome instead of running the API's checks against the job's own effect.
 */
export const IdempotencyKeySchema = defineEntity({
  name: 'IdempotencyKey',
  tableName: 'idempotency_key',
  properties: {
    /** sha256 of caller and key: the key itself is the client's and is not kept. */
    keyHash: p.string().length(64).primary(),
    actor: p.string().length(128),
    jobId: p.string().length(128),
    type: p.string().length(64),
    /** sha256 of the request (type, payload, delay, priority): another request with the key is a conflict. */
    requestHash: p.string().length(64),
    createdAt: p.datetime().length(3).index(),
  },
});
export class IdempotencyKey extends IdempotencyKeySchema.class {}
IdempotencyKeySchema.setClass(IdempotencyKey);

/** Key -> JSON machine state: data epoch, broker sync bookkeeping. */
export const SystemStateSchema = defineEntity({
  name: 'SystemState',
  tableName: 'system_state',
  properties: {
    key: p.string().length(64).primary(),
    value: p.json<unknown>(),
    updatedAt: p.datetime().length(3).onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});
export class SystemState extends SystemStateSchema.class {}
SystemStateSchema.setClass(SystemState);

/** Stored exports and staged restore uploads, shared by every worker through the database. */
export const SnapshotArchiveSchema = defineEntity({
  name: 'SnapshotArchive',
  tableName: 'snapshot_archive',
  properties: {
    id: p.uuid().primary(),
    kind: p.string().length(16),
    createdAt: p.datetime().length(3).index(),
    size: p.integer(),
    sha256: p.string().length(64),
    schemaVersion: p.string().length(128),
    counts: p.json<Record<string, number>>(),
    /** For staged uploads: the data key, sealed with the server key. */
    sealedKey: p.text().nullable(),
  },
});
export class SnapshotArchive extends SnapshotArchiveSchema.class {}
SnapshotArchiveSchema.setClass(SnapshotArchive);

/**
 * A stored file's bytes, in order, a bounded piece per row: a file of any size is written
 * and read a piece at a time (src/repositories/snapshot-archives.ts). No foreign key: the
 * pieces are written before their snapshot_archive row, whose size and hash are known only
 * once the last piece is, and the repository deletes them with it.
 */
export const SnapshotArchiveChunkSchema = defineEntity({
  name: 'SnapshotArchiveChunk',
  tableName: 'snapshot_archive_chunk',
  properties: {
    archiveId: p.uuid().primary(),
    seq: p.integer().primary(),
    data: p.blob().lazy(),
  },
});
export class SnapshotArchiveChunk extends SnapshotArchiveChunkSchema.class {}
SnapshotArchiveChunkSchema.setClass(SnapshotArchiveChunk);

/**
 * What meshq last applied to EMQX, per managed user. EMQX's user listing never returns
 * hashes, so without this the sync could not tell a changed credential (re-import and
 * kick the session that logged in with the old one) from an unchanged one, and every
 * run would re-import everything. The fingerprint is sha256(passwordHash + salt): it
 * identifies the credential without keeping a second copy of the hash. The client id is
 * kept because a vanished user's session must still be kicked after its credential row
 * is gone. Not business data: a restore leaves it alone, so the sync sees the restored
 * credentials as changes against what EMQX really holds.
 */
export const BrokerAppliedSchema = defineEntity({
  name: 'BrokerApplied',
  tableName: 'broker_applied',
  properties: {
    username: p.string().length(128).primary(),
    clientId: p.string().length(128),
    fingerprint: p.string().length(64),
    appliedAt: p.datetime().length(3),
  },
});
export class BrokerApplied extends BrokerAppliedSchema.class {}
BrokerAppliedSchema.setClass(BrokerApplied);

/**
 * Each dynamic node's sync state: the revision meshq wants its agent to run (bumped only
 * when the content of its push changes, recognised by the content's hash) and the last
 * revision the agent acknowledged. Derived from the business data and the agents' answers,
 * so not business data: snapshots neither carry nor restore it, and a restore leaves it
 * alone, which keeps every node's revisions increasing across restores (an agent never
 * sees a revision number go back). No foreign key to the node for the same reason: a node
 * that a restore brings back continues its own numbering; rows of deleted nodes are a few
 * dozen bytes each and never read.
 */
export const NodeSyncSchema = defineEntity({
  name: 'NodeSync',
  tableName: 'node_sync',
  properties: {
    nodeId: p.uuid().primary(),
    /** The latest revision published to the node (revisions start at 1). */
    desiredRevision: p.integer(),
    /** sha256 of the published content (without the private key, whose public key it carries). */
    contentHash: p.string().length(64),
    /** When the desired revision was published. */
    desiredAt: p.datetime().length(3),
    /** The latest revision the agent acknowledged; null until its first acknowledgement. */
    appliedRevision: p.integer().nullable(),
    appliedAt: p.datetime().length(3).nullable(),
  },
});
export class NodeSync extends NodeSyncSchema.class {}
NodeSyncSchema.setClass(NodeSync);

/**
 * The outbox of config pushes: one row per dynamic node whose push content may have
 * changed, written by the job that changed it, in its transaction (so a committed change
 * always leaves its request behind, whatever happens after commit). The push batch
 * (src/jobs/processors/push-config.ts) takes rows, publishes, and deletes each row only
 * if its `seq` is still the one it read: a request made meanwhile survives for the next
 * batch. Derived state like node_sync: not in snapshots, no foreign key (a row of a
 * deleted node is taken and dropped by the next batch).
 */
export const PushRequestSchema = defineEntity({
  name: 'PushRequest',
  tableName: 'push_request',
  properties: {
    nodeId: p.uuid().primary(),
    /** Goes up with every request for the node; the batch deletes the row only at the seq it read. */
    seq: p.integer(),
    /** Publish the current revision again even if unchanged, when the agent has not acknowledged it. */
    resend: p.boolean(),
    /** The latest request: batches take the oldest first. */
    requestedAt: p.datetime().length(3),
  },
});
export class PushRequest extends PushRequestSchema.class {}
PushRequestSchema.setClass(PushRequest);
