/**
 * API token scopes. Every route (its `config.scope`) and every job type (its row in the
 * job table) names the one scope it needs; `admin` implies all of them, and the
 * administrator (HTTP Basic) is `admin`.
 */
export const SCOPES = ['read', 'operate', 'credentials', 'snapshots', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export const DEFAULT_TOKEN_SCOPES: readonly Scope[] = Object.freeze(['read']);

export const isScope = (s: unknown): s is Scope => typeof s === 'string' && (SCOPES as readonly string[]).includes(s);

/** Whether `granted` (a token's or the administrator's scopes) covers `needed`. */
export const hasScope = (granted: readonly string[], needed: Scope): boolean => granted.includes('admin') || granted.includes(needed);
