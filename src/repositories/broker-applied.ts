import type { Em } from '../db/orm.js';
import { BrokerApplied } from '../domain/entities/system.js';

/** What meshq last applied to EMQX for one managed user (see BrokerAppliedSchema). */
export interface AppliedCredential {
  username: string;
  clientId: string;
  fingerprint: string;
}

/**
 * Rows per statement: 4 parameters each keeps a batch well under SQLite's 32,766 and
 * PostgreSQL's 65,535 bound parameters.
 */
const BATCH = 1000;

/**
 * The broker sync's memory of EMQX. Raw rows in and out: a full sync handles every
 * managed user (tens of thousands), and none of them needs to be an entity in the
 * identity map.
 */
export class BrokerAppliedRepository {
  constructor(private readonly em: Em) {}

  async all(): Promise<Map<string, AppliedCredential>> {
    const rows = await this.em
      .createQueryBuilder(BrokerApplied)
      .select(['username', 'clientId', 'fingerprint'])
      .execute<AppliedCredential[]>('all');
    return new Map(rows.map((r) => [r.username, { username: r.username, clientId: r.clientId, fingerprint: r.fingerprint }]));
  }

  /** Upserts: a re-applied user gets its new fingerprint and time. */
  async record(rows: readonly AppliedCredential[], at: Date): Promise<void> {
    for (let i = 0; i < rows.length; i += BATCH) {
      const batch = rows.slice(i, i + BATCH).map((r) => ({ ...r, appliedAt: at }));
      await this.em
        .createQueryBuilder(BrokerApplied)
        .insert(batch)
        .onConflict('username')
        .merge(['clientId', 'fingerprint', 'appliedAt'])
        .execute();
    }
  }

  async forget(usernames: readonly string[]): Promise<void> {
    for (let i = 0; i < usernames.length; i += BATCH) {
      await this.em.nativeDelete(BrokerApplied, { username: { $in: usernames.slice(i, i + BATCH) } });
    }
  }
}
