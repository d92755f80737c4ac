/**
 * Every repository of meshq, created over one EntityManager: the job's transaction in a
 * worker, a plain fork for API reads. Nothing outside these classes builds a query.
 */
import type { Em } from '../db/orm.js';
import { AdminRepository, TokenRepository } from './access.js';
import { AuditRepository } from './audit.js';
import {
  ConfigRepository,
  CredentialRepository,
  ForwardRepository,
  LinkRepository,
  NodeRepository,
} from './mesh.js';
import { SettingsRepository } from './settings.js';
import { BrokerAppliedRepository } from './broker-applied.js';
import { JobLedgerRepository, SystemStateRepository } from './system.js';
import { SnapshotRepository } from './snapshots.js';

export interface Repositories {
  readonly ledger: JobLedgerRepository;
  readonly system: SystemStateRepository;
  readonly brokerApplied: BrokerAppliedRepository;
  readonly configs: ConfigRepository;
  readonly nodes: NodeRepository;
  readonly links: LinkRepository;
  readonly credentials: CredentialRepository;
  readonly forwards: ForwardRepository;
  readonly settings: SettingsRepository;
  readonly tokens: TokenRepository;
  readonly audit: AuditRepository;
  readonly admin: AdminRepository;
  readonly snapshots: SnapshotRepository;
}

export interface RepositoryDeps {
  /** Encrypts node private keys at rest. */
  serverKey: Buffer;
}

export function createRepositories(em: Em, deps: RepositoryDeps): Repositories {
  return {
    ledger: new JobLedgerRepository(em),
    system: new SystemStateRepository(em),
    brokerApplied: new BrokerAppliedRepository(em),
    configs: new ConfigRepository(em),
    nodes: new NodeRepository(em, deps.serverKey),
    links: new LinkRepository(em),
    credentials: new CredentialRepository(em),
    forwards: new ForwardRepository(em),
    settings: new SettingsRepository(em),
    tokens: new TokenRepository(em),
    audit: new AuditRepository(em),
    admin: new AdminRepository(em),
    snapshots: new SnapshotRepository(em),
  };
}
