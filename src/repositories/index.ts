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

/**
 * Each repository is made when first used: a job touches two or three of them, and
 * making all of them for every transaction showed in the worker's profile.
 */
class LazyRepositories implements Repositories {
  #system?: SystemStateRepository;
  #brokerApplied?: BrokerAppliedRepository;
  #configs?: ConfigRepository;
  #nodes?: NodeRepository;
  #nodeSync?: NodeSyncRepository;
  #pushContent?: PushContentRepository;
  #links?: LinkRepository;
  #credentials?: CredentialRepository;
  #forwards?: ForwardRepository;
  #settings?: SettingsRepository;
  #tokens?: TokenRepository;
  #audit?: AuditRepository;
  #admin?: AdminRepository;
  #snapshots?: SnapshotRepository;
  #idempotency?: IdempotencyRepository;
  #ledger?: LedgerRepository;

  constructor(
    private readonly em: Em,
    private readonly d: RepositoryDeps,
  ) {}

  get system(): SystemStateRepository {
    return (this.#system ??= new SystemStateRepository(this.em));
  }
  get brokerApplied(): BrokerAppliedRepository {
    return (this.#brokerApplied ??= new BrokerAppliedRepository(this.em));
  }
  get configs(): ConfigRepository {
    return (this.#configs ??= new ConfigRepository(this.em));
  }
  get nodes(): NodeRepository {
    return (this.#nodes ??= new NodeRepository(this.em, this.d.serverKey, this.d.tx));
  }
  get nodeSync(): NodeSyncRepository {
    return (this.#nodeSync ??= new NodeSyncRepository(this.em, this.d.tx));
  }
  get pushContent(): PushContentRepository {
    return (this.#pushContent ??= new PushContentRepository(this.em, this.d.serverKey, this.d.tx));
  }
  get links(): LinkRepository {
    return (this.#links ??= new LinkRepository(this.em, { tx: this.d.tx }));
  }
  get credentials(): CredentialRepository {
    return (this.#credentials ??= new CredentialRepository(this.em));
  }
  get forwards(): ForwardRepository {
    return (this.#forwards ??= new ForwardRepository(this.em));
  }
  get settings(): SettingsRepository {
    return (this.#settings ??= new SettingsRepository(this.em));
  }
  get tokens(): TokenRepository {
    return (this.#tokens ??= new TokenRepository(this.em));
  }
  get audit(): AuditRepository {
    return (this.#audit ??= new AuditRepository(this.em));
  }
  get admin(): AdminRepository {
    return (this.#admin ??= new AdminRepository(this.em));
  }
  get snapshots(): SnapshotRepository {
    return (this.#snapshots ??= new SnapshotRepository(this.em, this.d.tx));
  }
  get idempotency(): IdempotencyRepository {
    return (this.#idempotency ??= new IdempotencyRepository(this.em));
  }
  get ledger(): LedgerRepository {
    return (this.#ledger ??= new LedgerRepository(this.em));
  }
}

export function createRepositories(em: Em, deps: RepositoryDeps): Repositories {
  return new LazyRepositories(em, deps);
}
