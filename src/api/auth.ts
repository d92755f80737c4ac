/**
 * Authentication and authorization.
 *
 * Authentication (onRequest): HTTP Basic with the administrator's credentials, or
 * `Authorization: Bearer <api token>`. The result is the request's `principal`:
 * `{ actor, name, scopes }`; the administrator is `{ actor: 'admin', name: 'admin',
 * scopes: ['admin'] }`, a token `{ actor: 'token:<id>', name: <token name>, scopes }`.
 * `request.actor` (the actor recorded on jobs) stays as a shorthand for `principal.actor`.
 *
 * Authorization: every route declares the scope it needs in its config:
 *
 *   api.get('/x', { config: { scope: 'read' } }, handler)
 *   api.post('/jobs', { config: { scope: (request) => scopeOfJobType(request.body) } }, handler)
 *
 * `scope` is one of
 * - a Scope (`read`, `operate`, `credentials`, `snapshots`, `admin`; `admin` implies all);
 * - `'public'`: reachable without credentials (health probes). Credentials sent anyway are
 *   still checked, so a public route can show more to an authenticated caller;
 * - `'never'`: refused with 403 for everyone, the administrator included (the dashboard's
 *   writes that would bypass what the API guards);
 * - a function `(request) => Scope`, evaluated in a preHandler, i.e. AFTER the body,
 *   query and params were validated (POST /api/v1/jobs: the job type's scope).
 * Routes registered by third-party plugins (Bull Board, Swagger UI) get theirs from
 * `assignScopes` in the plugin's own encapsulation context.
 *
 * A route without a scope fails closed at start-up: `api.ready()` rejects naming it, so a
 * new route cannot ship unguarded. A principal without the scope gets 403
 * `{"error":{"code":"FORBIDDEN","message":"token \"<name>\" lacks scope \"<scope>\""}}`.
 * Unknown paths also require credentials, so the 404s do not map the API for anonymous
 * callers.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import type { AppContext } from './context.js';
import { ADMIN_NAME, NO_ADMIN_MESSAGE } from '../repositories/admin-account.js';
import { createRepositories } from '../repositories/index.js';
import { hashToken, verifyAdminPassword } from '../domain/secrets.js';
import { hasScope, isScope, type Scope } from '../domain/scopes.js';
import { ApiError, errorBody, RETRY_AFTER_SECONDS, UnavailableError, withDeadline } from './errors.js';

/**
 * A credential lookup waits at most this long: a database that does not answer makes the
 * request a 503 (Retry-After) in bounded time instead of a hang (reads: nothing to undo).
 */
const CREDENTIAL_LOOKUP_TIMEOUT_MS = 2_000;
const bounded = <T>(lookup: Promise<T>) =>
  withDeadline(lookup, CREDENTIAL_LOOKUP_TIMEOUT_MS, 'the database').catch((err: unknown) => {
    throw err instanceof UnavailableError ? new RetryLaterError(503, err.message, RETRY_AFTER_SECONDS) : err;
  });

export type FixedScope = Scope | 'public' | 'never';
export type RouteScope = FixedScope | ((request: FastifyRequest) => Scope);

export interface Principal {
  /** `admin` or `token:<tokenId>`: recorded as the actor of the jobs it submits. */
  actor: string;
  /** The administrator's name or the token's name (for messages). */
  name: string;
  kind: 'admin' | 'token';
  scopes: readonly Scope[];
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Shorthand for `principal.actor` (empty on an anonymous public request). */
    actor: string;
    /** Who is calling; null on a public route called without credentials. */
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** The scope this route needs: see the top of src/api/auth.ts. */
    scope?: RouteScope;
  }
}

/** lastUsedAt is informational: one write per token per minute is plenty. */
const TOUCH_INTERVAL_MS = 60_000;
/**
 * scrypt costs tens of milliseconds and 32 MiB by design; paying it on every request
 * would make the administrator's own dashboard (Bull Board polls) the slowest client. A
 * successful verification is remembered, keyed by a hash of the header (never the header
 * itself) and tied to the stored password hash it was checked against: the stored row is
 * read on every request (one indexed read), so a changed password stops the old one at
 * once.
 */
const BASIC_CACHE_TTL_MS = 5 * 60_000;
const BASIC_CACHE_MAX = 1_000;

export interface AuthLimits {
  /** Failed Basic logins per client address per window before 429 (default 10). */
  perClient: number;
  /** Failed Basic logins from everywhere per window before 429 (default 100). */
  global: number;
  /** The window, in ms (default 60 s). */
  windowMs: number;
  /** Password verifications running at once (default 4). */
  concurrentVerifications: number;
  /** Logins waiting for a verification slot; more are refused with 429 (default 16). */
  waitingVerifications: number;
}

export const DEFAULT_AUTH_LIMITS: AuthLimits = Object.freeze({ perClient: 10, global: 100, windowMs: 60_000, concurrentVerifications: 4, waitingVerifications: 16 });

const unauthorized = (message: string) => new ApiError(401, 'UNAUTHORIZED', message);

/** A failure answered with a Retry-After header (seconds). */
export class RetryLaterError extends ApiError {
  constructor(
    statusCode: 429 | 503,
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(statusCode, statusCode === 429 ? 'TOO_MANY_REQUESTS' : 'UNAVAILABLE', message);
  }
}

export const ADMIN_PRINCIPAL: Principal = Object.freeze({ actor: ADMIN_NAME, name: ADMIN_NAME, kind: 'admin', scopes: Object.freeze(['admin'] as Scope[]) });

/** Throttles failed logins; reads the counters before any hashing. */
export interface LoginThrottle {
  /** Seconds to wait when `clientKey` (or everyone) is over the limit, else 0. */
  check(request: FastifyRequest): Promise<number>;
  recordFailure(request: FastifyRequest): Promise<void>;
}

export class Authenticator {
  private readonly basicCache = new Map<string, { until: number; passwordHash: string }>();
  private readonly touchedAt = new Map<string, number>();
  private readonly pending = new Set<Promise<unknown>>();
  private verifying = 0;
  /** Once an administrator exists it always will (only its password changes). */
  private adminSeen = false;
  private readonly waiting: (() => void)[] = [];
  /** Verifications under way, by header hash and stored hash (see basic()). */
  private readonly checking = new Map<string, Promise<boolean>>();
  private readonly storedHash = new FreshRead(() =>
    bounded(createRepositories(this.app.uow.fork(), { serverKey: this.app.serverKey }).admin.passwordHash(ADMIN_NAME)),
  );

  constructor(
    private readonly app: Pick<AppContext, 'uow' | 'serverKey' | 'log'>,
    private readonly throttle: LoginThrottle,
    private readonly limits: AuthLimits,
  ) {}

  /** Resolves to the principal, or throws 401 (or 429/503 with Retry-After). */
  async authenticate(request: FastifyRequest): Promise<Principal> {
    const header = request.headers.authorization;
    if (!header) {
      await this.refuseWithoutAdmin();
      throw unauthorized('authentication required: HTTP Basic (administrator) or Bearer <api token>');
    }
    const [scheme, value = ''] = splitOnce(header.trim(), ' ');
    switch (scheme.toLowerCase()) {
      case 'basic':
        return this.basic(request, value.trim(), header);
      case 'bearer':
        return this.bearer(value.trim());
      default:
        throw unauthorized(`unsupported authorization scheme "${scheme}": use Basic or Bearer`);
    }
  }

  private async basic(request: FastifyRequest, encoded: string, header: string): Promise<Principal> {
    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    const [name, password] = splitOnce(decoded, ':');
    if (password === undefined || name !== ADMIN_NAME) {
      await this.refuseWithoutAdmin();
      await this.throttle.recordFailure(request);
      throw unauthorized('wrong administrator name or password');
    }
    // Read for every request, so that a changed password takes effect at once: see FreshRead.
    const passwordHash = await this.storedHash.get();
    // Nothing to guess yet: say what to do instead of "wrong password".
    if (passwordHash === undefined) throw unauthorized(NO_ADMIN_MESSAGE);
    this.adminSeen = true;
    const cacheKey = createHash('sha256').update(header).digest('base64');
    const cached = this.basicCache.get(cacheKey);
    if (cached && cached.until > Date.now() && cached.passwordHash === passwordHash) return ADMIN_PRINCIPAL;
    if (cached) this.basicCache.delete(cacheKey);

    // The same header against the same stored hash has one answer: requests that arrive
    // while it is being checked (a client opening several connections at once) share that
    // check instead of each paying its own scrypt. Each still counts as its own failure.
    const checkKey = `${cacheKey}\n${passwordHash}`;
    const shared = this.checking.get(checkKey);
    let ok: boolean;
    if (shared) {
      // A refusal of the other request (its client throttled) is not this one's answer.
      ok = await shared.catch(() => this.verify(request, password, passwordHash));
    } else {
      const check = this.verify(request, password, passwordHash).finally(() => this.checking.delete(checkKey));
      this.checking.set(checkKey, check);
      ok = await check;
    }
    if (!ok) {
      await this.throttle.recordFailure(request);
      throw unauthorized('wrong administrator name or password');
    }
    if (this.basicCache.size >= BASIC_CACHE_MAX) this.basicCache.delete(this.basicCache.keys().next().value!);
    this.basicCache.set(cacheKey, { until: Date.now() + BASIC_CACHE_TTL_MS, passwordHash });
    return ADMIN_PRINCIPAL;
  }

  private async verify(request: FastifyRequest, password: string, passwordHash: string): Promise<boolean> {
    // Throttled before any hashing: a guesser pays nothing but a counter read.
    await this.refuseIfThrottled(request);
    await this.acquireVerification();
    try {
      // Checked again with the slot held: requests that queued up behind the first
      // failures must not all get their guess in.
      await this.refuseIfThrottled(request);
      return await verifyAdminPassword(password, passwordHash);
    } finally {
      this.releaseVerification();
    }
  }

  /**
   * Each verification costs a 32 MiB scrypt on the libuv pool that DNS, file and zlib
   * work share: only a few run at once, a few more may wait, and the rest are refused at
   * once rather than queued without bound.
   */
  private async acquireVerification(): Promise<void> {
    if (this.verifying < this.limits.concurrentVerifications) {
      this.verifying++;
      return;
    }
    if (this.waiting.length >= this.limits.waitingVerifications) {
      throw new RetryLaterError(429, 'too many password checks in progress; retry shortly', 1);
    }
    // The slot is handed over by releaseVerification, so `verifying` stays counted.
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private releaseVerification(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.verifying--;
  }

  /** Until an administrator exists, every refusal says how to create one (ADMIN_PASSWORD or `npm run admin`). */
  private async refuseWithoutAdmin(): Promise<void> {
    if (this.adminSeen) return;
    const admin = await bounded(createRepositories(this.app.uow.fork(), { serverKey: this.app.serverKey }).admin.findByName(ADMIN_NAME));
    if (!admin) throw unauthorized(NO_ADMIN_MESSAGE);
    this.adminSeen = true;
  }

  private async refuseIfThrottled(request: FastifyRequest): Promise<void> {
    const wait = await this.throttle.check(request);
    if (wait > 0) throw new RetryLaterError(429, `too many failed logins; retry in ${wait} s`, wait);
  }

  /**
   * Bearer tokens are not throttled: they are 256-bit random values (nothing to guess),
   * and a wrong one costs one indexed read of a sha256.
   */
  private async bearer(token: string): Promise<Principal> {
    if (!token) throw unauthorized('empty bearer token');
    // No cache here: a revoked token must stop working at once.
    const identity = await bounded(createRepositories(this.app.uow.fork(), { serverKey: this.app.serverKey }).tokens.findByHash(hashToken(token)));
    if (!identity) {
      await this.refuseWithoutAdmin();
      throw unauthorized('unknown or revoked API token');
    }
    if (identity.expiresAt !== null && identity.expiresAt.getTime() <= Date.now()) {
      throw unauthorized(`API token "${identity.name}" expired at ${identity.expiresAt.toISOString()}`);
    }
    this.touch(identity.id);
    return { actor: `token:${identity.id}`, name: identity.name, kind: 'token', scopes: identity.scopes.filter(isScope) };
  }

  /** Fire and forget, but tracked: close() waits for it so the ORM is never closed under it. */
  private touch(id: string): void {
    const now = Date.now();
    if ((this.touchedAt.get(id) ?? 0) + TOUCH_INTERVAL_MS > now) return;
    this.touchedAt.set(id, now);
    if (this.touchedAt.size > BASIC_CACHE_MAX) this.touchedAt.delete(this.touchedAt.keys().next().value!);
    const p = this.app.uow
      .write((em) => createRepositories(em, { serverKey: this.app.serverKey }).tokens.touchLastUsed(id, new Date(now)))
      .catch((err: unknown) => this.app.log.warn({ err, tokenId: id }, 'could not record token use'))
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  async close(): Promise<void> {
    await Promise.all([...this.pending]);
  }
}

/**
 * A value read from the database for each caller, with reads shared: a caller gets the
 * result of a read that STARTED after it asked, never one already under way (that one may
 * have seen the row before a change the caller must see). Callers that ask in the same
 * event-loop round share one read, started once the round's callbacks have run, so
 * concurrent requests cost one query per round instead of one each, and none waits
 * longer than its own read.
 */
export class FreshRead<T> {
  private next: Promise<T> | undefined;

  constructor(private readonly read: () => Promise<T>) {}

  get(): Promise<T> {
    this.next ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      // Callers from now on get the next round's read.
      this.next = undefined;
      return this.read();
    });
    return this.next;
  }
}

/** The 403 every missing scope answers. */
export const forbidden = (principal: Principal, scope: Scope) =>
  new ApiError(403, 'FORBIDDEN', `${principal.kind === 'admin' ? 'user' : 'token'} "${principal.name}" lacks scope "${scope}"`);

/**
 * Gives the routes a third-party plugin registers (which declare no scope of their own)
 * a scope from `decide`. Call it inside the encapsulation context the plugin is
 * registered in, before registering it; routes that already declare one keep theirs.
 */
export function assignScopes(api: FastifyInstance, decide: (method: string, url: string) => RouteScope): void {
  api.addHook('onRoute', (route: RouteOptions) => {
    if (route.config?.scope !== undefined) return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const scopes = new Set(methods.map((m) => decide(m, route.url)));
    if (scopes.size !== 1) throw new Error(`route ${methods.join(',')} ${route.url}: one scope per route, got ${[...scopes].join(', ')}`);
    route.config = { ...route.config, scope: [...scopes][0]! };
  });
}

export interface RegisteredRoute {
  method: string;
  url: string;
  scope: RouteScope | undefined;
}

/**
 * Installs authentication (onRequest) and authorization (preHandler) on `api` and so on
 * every plugin registered inside it, and records every route so that one without a
 * scope fails `ready()`. Returns the recorded routes (the authorization test walks them).
 */
export function registerAuth(
  api: FastifyInstance,
  app: Pick<AppContext, 'uow' | 'serverKey' | 'log'>,
  throttle: LoginThrottle,
  limits: AuthLimits = DEFAULT_AUTH_LIMITS,
): { auth: Authenticator; routes: () => RegisteredRoute[] } {
  const auth = new Authenticator(app, throttle, limits);
  const recorded: RouteOptions[] = [];
  api.decorateRequest('actor', '');
  api.decorateRequest('principal', null);

  api.addHook('onRoute', (route: RouteOptions) => {
    recorded.push(route);
  });
  const routes = (): RegisteredRoute[] =>
    recorded.flatMap((r) => (Array.isArray(r.method) ? r.method : [r.method]).map((method) => ({ method, url: r.url, scope: r.config?.scope })));
  api.addHook('onReady', async () => {
    const missing = routes().filter((r) => r.scope === undefined || !validRouteScope(r.scope));
    if (missing.length > 0) {
      throw new Error(`routes without a valid config.scope (see src/api/auth.ts): ${missing.map((r) => `${r.method} ${r.url}`).join(', ')}`);
    }
  });

  // Answered here rather than thrown: Bull Board's plugin has an error handler of its
  // own, and a browser only prompts for credentials when the 401 carries WWW-Authenticate.
  // A fixed scope is checked here, before the body is even read (a token without
  // `snapshots` cannot make the API parse a restore upload); a scope that depends on the
  // request is checked in preHandler, once the body is validated.
  api.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const declared = request.routeOptions.config?.scope;
    if (declared === 'public' && !request.headers.authorization) return;
    let principal: Principal;
    try {
      principal = await auth.authenticate(request);
    } catch (err) {
      return sendAuthError(request, reply, err);
    }
    request.principal = principal;
    request.actor = principal.actor;
    if (request.is404 || typeof declared === 'function') return;
    const refusal = refuse(request, declared, principal);
    if (refusal) return reply.status(403).send(errorBody('FORBIDDEN', refusal));
  });

  api.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    const declared = request.routeOptions.config?.scope;
    if (request.is404 || typeof declared !== 'function') return;
    const refusal = refuse(request, declared(request), request.principal);
    if (refusal) return reply.status(403).send(errorBody('FORBIDDEN', refusal));
  });
  api.addHook('onClose', () => auth.close());
  return { auth, routes };
}

/** Why `principal` may not call this route, or undefined when it may. */
function refuse(request: FastifyRequest, declared: FixedScope | undefined, principal: Principal | null): string | undefined {
  if (declared === 'public') return undefined;
  // Unreachable while the onReady check holds; fail closed all the same.
  if (declared === undefined || !validRouteScope(declared)) return 'this route declares no scope';
  if (declared === 'never') return `${request.method} ${request.routeOptions.url} is disabled for every caller`;
  if (principal === null) return 'authentication required';
  return hasScope(principal.scopes, declared) ? undefined : forbidden(principal, declared).message;
}

const validRouteScope = (s: RouteScope): boolean => typeof s === 'function' || s === 'public' || s === 'never' || isScope(s);

function sendAuthError(request: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  if (err instanceof RetryLaterError) {
    return reply.status(err.statusCode).header('retry-after', String(err.retryAfterSeconds)).send(errorBody(err.code, err.message));
  }
  if (err instanceof ApiError) {
    return reply.status(err.statusCode).header('www-authenticate', 'Basic realm="meshq"').send(errorBody(err.code, err.message));
  }
  request.log.error({ err }, 'could not verify credentials');
  return reply.status(503).header('retry-after', String(RETRY_AFTER_SECONDS)).send(errorBody('UNAVAILABLE', 'credentials cannot be verified right now; try again'));
}

function splitOnce(s: string, sep: string): [string, string | undefined] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + sep.length)];
}
