/**
 * Every repository of meshq, created over one EntityManager: the job's transaction in a
 * worker, a plain fork for API reads. Nothing outside these classes builds a query.
 */
import type { Em } from '../db/orm.js';
import type { TransactionHandle } from '../db/unit-of-work.js';
import { AdminRepository, TokenRepository } from './access.js';
import { AuditRepository } from './audit.js';
import { BrokerAppliedRepository } from './broker-applied.js';
import { ConfigRepository } from './configs.js';
import { CredentialRepository } from './credentials.js';
import { ForwardRepository } from './forwards.js';
import { IdempotencyRepository } from './idempotency.js';
import { LedgerRepository } from './ledger.js';
import { LinkRepository } from './links.js';
import { NodeRepository } from './nodes.js';
import { NodeSyncRepository } from './node-sync.js';
import { PushContentRepository } from './push-content.js';
import { SettingsRepository } from './settings.js';
import { SnapshotRepository } from './snapshots.js';
import { SystemStateRepository } from './system-state.js';

export interface Repositories {
  readonly system: SystemStateRepository;
  readonly brokerApplied: BrokerAppliedRepository;
  readonly configs: ConfigRepository;
  readonly nodes: NodeRepository;
  /** Push receivers and each node's sync state (desired, applied revision). */
  readonly nodeSync: NodeSyncRepository;
  /** What config pushes carry (interfaces, peers), read for many nodes at once. */
  readonly pushContent: PushContentRepository;
  readonly links: LinkRepository;
  readonly credentials: CredentialRepository;
  readonly forwards: ForwardRepository;
  readonly settings: SettingsRepository;
  readonly tokens: TokenRepository;
  readonly audit: AuditRepository;
  readonly admin: AdminRepository;
  readonly snapshots: SnapshotRepository;
  readonly idempotency: IdempotencyRepository;
  readonly ledger: LedgerRepository;
}

interface RepositoryDeps {
  /** Encrypts node private keys at rest. */
  serverKey: Buffer;
  /**
   * The write transaction `em` runs in, when there is one (the job runner passes it): bound
   * statements then go to its connection directly, and a restore finds its lock mode and
   * its client for COPY.
   */
  tx?: TransactionHandle;
}

export function createRepositories(em: Em, deps: RepositoryDeps): Repositories {
  return {
    system: new SystemStateRepository(em),
    brokerApplied: new BrokerAppliedRepository(em),
    configs: new ConfigRepository(em),
    nodes: new NodeRepository(em, deps.serverKey, deps.tx),
    nodeSync: new NodeSyncRepository(em, deps.tx),
    pushContent: new PushContentRepository(em, deps.serverKey, deps.tx),
    links: new LinkRepository(em),
    credentials: new CredentialRepository(em),
    forwards: new ForwardRepository(em),
    settings: new SettingsRepository(em),
    tokens: new TokenRepository(em),
    audit: new AuditRepository(em),
    admin: new AdminRepository(em),
    snapshots: new SnapshotRepository(em, deps.tx),
    idempotency: new IdempotencyRepository(em),
    ledger: new LedgerRepository(em),
  };
}
