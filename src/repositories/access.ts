import type { Em } from '../db/orm.js';
import { boundSql } from '../db/sql.js';
import { newId } from '../domain/ids.js';
import { idCursor, pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import { AdminUser, ApiToken } from '../domain/entities/access.js';

/** An API token as the API shows it: never its hash. */
export interface TokenView {
  id: string;
  name: string;
  scopes: string[];
  expiresAt: string | null;
  createdAt: string;
  lastUsedAt: string | null;
}

export const tokenView = (t: ApiToken): TokenView => ({
  id: t.id,
  name: t.name,
  scopes: t.scopes,
  expiresAt: t.expiresAt?.toISOString() ?? null,
  createdAt: t.createdAt.toISOString(),
  lastUsedAt: t.lastUsedAt?.toISOString() ?? null,
});

/** What authentication needs to know about a presented token. */
export interface TokenIdentity {
  id: string;
  name: string;
  scopes: string[];
  expiresAt: Date | null;
}

export class TokenRepository {
  constructor(private readonly em: Em) {}

  async exists(id: string): Promise<boolean> {
    return (await this.em.count(ApiToken, { id })) > 0;
  }

  create(row: { id: string; name: string; tokenHash: string; scopes: string[]; expiresAt?: Date | null }): void {
    this.em.create(ApiToken, { ...row, expiresAt: row.expiresAt ?? null, createdAt: new Date(), lastUsedAt: null });
  }

  /** Revoking deletes: a revoked token has nothing left worth keeping (the audit log keeps the act). */
  async revoke(id: string): Promise<{ name: string } | undefined> {
    const token = await this.em.findOne(ApiToken, { id });
    if (!token) return undefined;
    await this.em.nativeDelete(ApiToken, { id });
    return { name: token.name };
  }

  async get(id: string): Promise<TokenView | undefined> {
    const row = await this.em.findOne(ApiToken, { id });
    return row ? tokenView(row) : undefined;
  }

  async list(req: PageRequest = {}): Promise<Page<TokenView>> {
    const limit = pageLimit(req);
    const cursor = idCursor(req);
    const rows = await this.em.find(ApiToken, cursor ? { id: { $gt: cursor } } : {}, {
      orderBy: { id: 'asc' },
      limit: limit + 1,
    });
    return toPage(rows, limit, (r) => r.id, tokenView);
  }

  /** Bearer authentication: the API hashes the presented token and looks the hash up. */
  async findByHash(tokenHash: string): Promise<TokenIdentity | undefined> {
    const row = await this.em.findOne(ApiToken, { tokenHash });
    return row ? { id: row.id, name: row.name, scopes: row.scopes, expiresAt: row.expiresAt ?? null } : undefined;
  }

  /**
   * A single UPDATE outside any job: bookkeeping, not business change, so it is neither
   * audited nor worth a transaction. Callers may throttle it.
   */
  async touchLastUsed(id: string, at: Date = new Date()): Promise<void> {
    await this.em.nativeUpdate(ApiToken, { id }, { lastUsedAt: at });
  }
}

export interface AdminRecord {
  name: string;
  passwordHash: string;
  exportKeySealed: string;
  exportKdf: { salt: string; N: number; r: number; p: number };
}

/** The administrator row (system data, not business data: snapshots never touch it). */
export class AdminRepository {
  constructor(private readonly em: Em) {}

  async findByName(name: string): Promise<(AdminRecord & { id: string; updatedAt: Date }) | undefined> {
    const row = await this.em.findOne(AdminUser, { name });
    if (!row) return undefined;
    return {
      id: row.id,
      name: row.name,
      passwordHash: row.passwordHash,
      exportKeySealed: row.exportKeySealed,
      exportKdf: row.exportKdf,
      updatedAt: row.updatedAt,
    };
  }

  /**
   * The administrator's password hash alone, by one bound query: HTTP Basic reads it on
   * every request (a changed password must take effect at once), so no entity is built.
   */
  async passwordHash(name: string): Promise<string | undefined> {
    const { rows } = await boundSql(this.em).query<{ password_hash: string }>('select password_hash from admin_user where name = ?', [name]);
    return rows[0]?.password_hash;
  }

  /** Creates or replaces the administrator's credentials, keyed by name. */
  async save(admin: AdminRecord): Promise<void> {
    const existing = await this.em.findOne(AdminUser, { name: admin.name });
    if (existing) {
      this.em.assign(existing, { ...admin, updatedAt: new Date() });
      return;
    }
    this.em.create(AdminUser, { id: newId(), ...admin, updatedAt: new Date() });
  }
}
