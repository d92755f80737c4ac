/**
 * Authentication: HTTP Basic with the administrator's credentials, or
 * `Authorization: Bearer <api token>`. Every route requires it unless its config says
 * `public: true` (health probes); unknown paths too, so the 404s do not map the API for
 * anonymous callers.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppContext } from './context.js';
import { ADMIN_NAME, verifyAdmin } from '../repositories/admin-account.js';
import { createRepositories } from '../repositories/index.js';
import { hashToken } from '../domain/secrets.js';
import { ApiError, errorBody } from './errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** `admin` or `token:<tokenId>`: recorded as the actor of the jobs it submits. */
    actor: string;
  }
  interface FastifyContextConfig {
    /** Reachable without credentials. */
    public?: boolean;
  }
}

/**
 * scrypt costs tens of milliseconds by design; paying it on every request would make the
 * administrator's own dashboard (Bull Board polls) the slowest client. A successful
 * verification is remembered for a minute, keyed by a hash of the header (never the
 * header itself). The price: a changed password takes up to that long to stop working
 * for a client that already used the old one.
 */
const BASIC_CACHE_TTL_MS = 60_000;
const BASIC_CACHE_MAX = 1_000;
/** lastUsedAt is informational: one write per token per minute is plenty. */
const TOUCH_INTERVAL_MS = 60_000;

const unauthorized = (message: string) => new ApiError(401, 'UNAUTHORIZED', message);

export class Authenticator {
  private readonly basicCache = new Map<string, number>();
  private readonly touchedAt = new Map<string, number>();
  private readonly pending = new Set<Promise<unknown>>();

  constructor(private readonly app: Pick<AppContext, 'uow' | 'serverKey' | 'log'>) {}

  /** Resolves to the actor, or throws 401. */
  async authenticate(header: string | undefined): Promise<string> {
    if (!header) throw unauthorized('authentication required: HTTP Basic (administrator) or Bearer <api token>');
    const [scheme, value = ''] = splitOnce(header.trim(), ' ');
    switch (scheme.toLowerCase()) {
      case 'basic':
        return this.basic(value.trim(), header);
      case 'bearer':
        return this.bearer(value.trim());
      default:
        throw unauthorized(`unsupported authorization scheme "${scheme}": use Basic or Bearer`);
    }
  }

  private async basic(encoded: string, header: string): Promise<string> {
    const cacheKey = createHash('sha256').update(header).digest('base64');
    const until = this.basicCache.get(cacheKey);
    if (until !== undefined && until > Date.now()) return ADMIN_NAME;

    const decoded = Buffer.from(encoded, 'base64').toString('utf8');
    const [name, password] = splitOnce(decoded, ':');
    if (password === undefined || name !== ADMIN_NAME || !(await verifyAdmin(this.app, name, password))) {
      throw unauthorized('wrong administrator name or password');
    }
    if (this.basicCache.size >= BASIC_CACHE_MAX) this.basicCache.delete(this.basicCache.keys().next().value!);
    this.basicCache.set(cacheKey, Date.now() + BASIC_CACHE_TTL_MS);
    return ADMIN_NAME;
  }

  private async bearer(token: string): Promise<string> {
    if (!token) throw unauthorized('empty bearer token');
    // No cache here: a revoked token must stop working at once, and the lookup is one
    // indexed read of a sha256.
    const identity = await createRepositories(this.app.uow.fork(), { serverKey: this.app.serverKey }).tokens.findByHash(hashToken(token));
    if (!identity) throw unauthorized('unknown or revoked API token');
    this.touch(identity.id);
    return `token:${identity.id}`;
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

/** Installs the onRequest hook on `api` (and so on every plugin registered inside it). */
export function registerAuth(api: FastifyInstance, app: Pick<AppContext, 'uow' | 'serverKey' | 'log'>): Authenticator {
  const auth = new Authenticator(app);
  api.decorateRequest('actor', '');
  // Answered here rather than thrown: Bull Board's plugin has an error handler of its
  // own, and a browser only prompts for credentials when the 401 carries WWW-Authenticate.
  api.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.routeOptions.config?.public) return;
    try {
      request.actor = await auth.authenticate(request.headers.authorization);
    } catch (err) {
      if (err instanceof ApiError) {
        return reply.status(err.statusCode).header('www-authenticate', 'Basic realm="meshq"').send(errorBody(err.code, err.message));
      }
      request.log.error({ err }, 'could not verify credentials');
      return reply.status(503).send(errorBody('UNAVAILABLE', 'credentials cannot be verified right now; try again'));
    }
  });
  api.addHook('onClose', () => auth.close());
  return auth;
}

function splitOnce(s: string, sep: string): [string, string | undefined] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + sep.length)];
}

