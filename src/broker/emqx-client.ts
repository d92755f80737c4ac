/**
 * The EMQX 5 management API client: built-in-database users, per-user authorization
 * rules, client kicks (all the credential sync needs), and the global authorization
 * settings and source order (what the deny-by-default check reads).
 *
 * Failures come out as one typed error, EmqxError, whose `retryable` flag is the whole
 * retry policy: transport failures, timeouts and 5xx are transient (EMQX restarting, a
 * node in a cluster going away) and are retried here with capped exponential backoff;
 * 4xx answers are our fault or EMQX's configuration and retrying them only repeats the
 * mistake. The caller (the sync job) gets the error after the budget is spent and decides
 * on its own, slower retry.
 *
 * Every read is validated with zod: EMQX is a boundary, and a silently misread page would
 * make the reconcile delete users it did not see.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { backoffDelay } from '../backoff.js';
import type { Logger } from '../logger.js';

export type EmqxLogger = Pick<Logger, 'warn' | 'debug'>;

export interface EmqxClientConfig {
  /** The API root, e.g. `http://emqx:18083/api/v5`. */
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly apiSecret: string;
  /** Per attempt, connection and body included. Default 10 s. */
  readonly timeoutMs?: number;
  /** Retries after the first attempt for retryable failures. Default 4. */
  readonly retries?: number;
  /** First backoff delay; doubles each retry (with jitter) up to maxBackoffMs. Default 250 ms. */
  readonly minBackoffMs?: number;
  /** Default 5 s. */
  readonly maxBackoffMs?: number;
  readonly logger?: EmqxLogger;
}

/**
 * Codes are EMQX's own (`BAD_API_KEY_OR_SECRET`, `NOT_FOUND`, `ALREADY_EXISTS`,
 * `BAD_REQUEST`, `INVALID_PARAMETER`, ...) when EMQX answered, plus `UNREACHABLE` (no
 * connection, or it was dropped before an answer), `TIMEOUT`, `BAD_RESPONSE` (an answer
 * we cannot read) and `HTTP_<status>` for an error without an EMQX body.
 */
export class EmqxError extends Error {
  readonly status?: number;
  readonly code: string;
  readonly retryable: boolean;
  /** The message of EMQX's error body, when it sent one (ours wraps it with context). */
  readonly emqxMessage?: string;

  constructor(
    code: string,
    message: string,
    opts: { status?: number; retryable: boolean; emqxMessage?: string; cause?: unknown },
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'EmqxError';
    this.code = code;
    this.retryable = opts.retryable;
    if (opts.status !== undefined) this.status = opts.status;
    if (opts.emqxMessage !== undefined) this.emqxMessage = opts.emqxMessage;
  }
}

// ---------------------------------------------------------------------------------------
// Wire types

const pageMetaSchema = z.object({
  page: z.number().int(),
  limit: z.number().int(),
  hasnext: z.boolean(),
  count: z.number().int().optional(),
});

const userSchema = z.object({ user_id: z.string(), is_superuser: z.boolean() });

// Loose: EMQX may carry filters (clientid_re, ipaddr, ...) we do not model; dropping them
// would make a rule set that differs from ours look equal.
const ruleSchema = z.looseObject({
  topic: z.string(),
  permission: z.enum(['allow', 'deny']),
  action: z.enum(['publish', 'subscribe', 'all']),
  qos: z.array(z.number().int()).optional(),
  retain: z.union([z.boolean(), z.literal('all')]).optional(),
});

const userRulesSchema = z.object({ username: z.string(), rules: z.array(ruleSchema) });

const importResultSchema = z.object({
  total: z.number().int(),
  success: z.number().int(),
  override: z.number().int(),
  skipped: z.number().int(),
  failed: z.number().int(),
});

const statusSchema = z.object({
  node_name: z.string().optional(),
  rel_vsn: z.string().optional(),
  broker_status: z.string().optional(),
  app_status: z.string().optional(),
});

/** Loose: EMQX also reports `deny_action` and the cache, which meshq does not judge. */
const authzSettingsSchema = z.looseObject({ no_match: z.enum(['allow', 'deny']) });

/** Each source carries its own configuration (file rules, database URLs, ...): kept loose. */
const authzSourcesSchema = z.looseObject({
  sources: z.array(z.looseObject({ type: z.string(), enable: z.boolean() })),
});

const errorBodySchema = z.object({ code: z.string(), message: z.unknown().optional() });

export type EmqxPageMeta = z.infer<typeof pageMetaSchema>;
export interface EmqxPage<T> {
  data: T[];
  meta: EmqxPageMeta;
}
export type EmqxUser = z.infer<typeof userSchema>;
export type EmqxRule = z.infer<typeof ruleSchema>;
export type EmqxUserRules = z.infer<typeof userRulesSchema>;
export type EmqxImportResult = z.infer<typeof importResultSchema>;

/** A user as meshq imports it: the hash is computed by meshq (sha256, salt as prefix). */
export interface EmqxHashedUser {
  user_id: string;
  password_hash: string;
  salt: string;
  is_superuser?: boolean;
}

/** A rule as meshq writes it; EMQX fills in qos [0,1,2] and retain "all" when omitted. */
export interface EmqxRuleInput {
  topic: string;
  permission: 'allow' | 'deny';
  action: 'publish' | 'subscribe' | 'all';
  qos?: number[];
  retain?: boolean | 'all';
}

export interface EmqxAuthorizationSettings {
  /** What EMQX decides when no source has a rule for a request. */
  noMatch: 'allow' | 'deny';
}

/** One authorization source, in the order EMQX consults them. */
export interface EmqxAuthorizationSource {
  type: string;
  enable: boolean;
}

export interface EmqxStatus {
  running: boolean;
  nodeName?: string;
  version?: string;
}

// ---------------------------------------------------------------------------------------

const AUTHN_USERS = '/authentication/password_based:built_in_database';
const AUTHZ_USERS = '/authorization/sources/built_in_database/rules/users';
const EMPTY_IMPORT: EmqxImportResult = { total: 0, success: 0, override: 0, skipped: 0, failed: 0 };

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

interface Call {
  method: Method;
  path: string;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** /status needs none, and credentials are not sent where they are not needed. */
  auth?: boolean;
}

interface Answer {
  status: number;
  body: unknown;
}

export class EmqxClient {
  readonly #baseUrl: string;
  // A private field keeps the credentials out of util.inspect and JSON of the client.
  readonly #authorization: string;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #logger: EmqxLogger | undefined;

  constructor(config: EmqxClientConfig) {
    this.#baseUrl = config.baseUrl.replace(/\/+$/, '');
    this.#authorization = `Basic ${Buffer.from(`${config.apiKey}:${config.apiSecret}`).toString('base64')}`;
    this.#timeoutMs = config.timeoutMs ?? 10_000;
    this.#retries = config.retries ?? 4;
    this.#minBackoffMs = config.minBackoffMs ?? 250;
    this.#maxBackoffMs = config.maxBackoffMs ?? 5_000;
    this.#logger = config.logger;
  }

  /**
   * One attempt, no retries: a health probe must answer quickly. A 503 is an answer
   * ("not running"), not an error; no connection is an UNREACHABLE error.
   */
  async status(): Promise<EmqxStatus> {
    try {
      const { body } = await this.#attempt({ method: 'GET', path: '/status', query: { format: 'json' }, auth: false });
      const s = parse(statusSchema, body, 'GET /status');
      return {
        running: s.app_status === undefined || s.app_status === 'running',
        ...(s.node_name !== undefined ? { nodeName: s.node_name } : {}),
        ...(s.rel_vsn !== undefined ? { version: s.rel_vsn } : {}),
      };
    } catch (err) {
      if (err instanceof EmqxError && err.status === 503) return { running: false };
      throw err;
    }
  }

  // -------------------------------------------------------------------------------------
  // Users of the built-in-database authenticator

  async listUsers(page = 1, limit = 100, opts: { likeUserId?: string } = {}): Promise<EmqxPage<EmqxUser>> {
    const { body } = await this.#send({
      method: 'GET',
      path: `${AUTHN_USERS}/users`,
      query: { page, limit, like_user_id: opts.likeUserId },
    });
    return parse(pageSchema(userSchema), body, 'user list');
  }

  /**
   * Every user, page by page until EMQX says there is no next page. Offset paging is only
   * consistent while nothing is written in between, so callers read everything first.
   */
  async *allUsers(pageSize = 1000, opts: { likeUserId?: string } = {}): AsyncGenerator<EmqxUser> {
    for (let page = 1; ; page++) {
      const { data, meta } = await this.listUsers(page, pageSize, opts);
      yield* data;
      if (!meta.hasnext || data.length === 0) return;
    }
  }

  /**
   * Creates or overwrites the users in one EMQX transaction (`import_users?type=hash`).
   * EMQX rejects an empty list with 400; here it is simply nothing to do. Chunking large
   * sets is the caller's choice: each call is atomic on its own.
   */
  async importUsersHash(users: readonly EmqxHashedUser[]): Promise<EmqxImportResult> {
    if (users.length === 0) return { ...EMPTY_IMPORT };
    const { body } = await this.#send({
      method: 'POST',
      path: `${AUTHN_USERS}/import_users`,
      query: { type: 'hash' },
      body: users.map((u) => ({
        user_id: u.user_id,
        password_hash: u.password_hash,
        salt: u.salt,
        is_superuser: u.is_superuser ?? false,
      })),
    });
    return parse(importResultSchema, body, 'import result');
  }

  /** True when deleted, false when the user was already gone. Live sessions stay: kick them. */
  async deleteUser(userId: string): Promise<boolean> {
    return this.#deleteTolerating404({ method: 'DELETE', path: `${AUTHN_USERS}/users/${seg(userId)}` });
  }

  // -------------------------------------------------------------------------------------
  // Authorization rules of the built_in_database source, per user name

  async listRules(page = 1, limit = 100, opts: { likeUsername?: string } = {}): Promise<EmqxPage<EmqxUserRules>> {
    const { body } = await this.#send({
      method: 'GET',
      path: AUTHZ_USERS,
      query: { page, limit, like_username: opts.likeUsername },
    });
    return parse(pageSchema(userRulesSchema), body, 'rule list');
  }

  async *allRules(pageSize = 1000, opts: { likeUsername?: string } = {}): AsyncGenerator<EmqxUserRules> {
    for (let page = 1; ; page++) {
      const { data, meta } = await this.listRules(page, pageSize, opts);
      yield* data;
      if (!meta.hasnext || data.length === 0) return;
    }
  }

  /**
   * Creates rule sets for users that have none. All or nothing: a 409 ALREADY_EXISTS
   * (any user already has rules) writes nothing. Not idempotent, so a retried request
   * whose first attempt did land answers 409; prefer replaceRules in a reconcile.
   */
  async createRules(entries: readonly { username: string; rules: readonly EmqxRuleInput[] }[]): Promise<void> {
    if (entries.length === 0) return;
    await this.#send({ method: 'POST', path: AUTHZ_USERS, body: entries });
  }

  /** Full replace of one user's rules; creates them when absent (idempotent). */
  async replaceRules(username: string, rules: readonly EmqxRuleInput[]): Promise<void> {
    await this.#send({ method: 'PUT', path: `${AUTHZ_USERS}/${seg(username)}`, body: { username, rules } });
  }

  /** True when deleted, false when the user had no rules. */
  async deleteRules(username: string): Promise<boolean> {
    return this.#deleteTolerating404({ method: 'DELETE', path: `${AUTHZ_USERS}/${seg(username)}` });
  }

  // -------------------------------------------------------------------------------------
  // Authorization as a whole

  async authorizationSettings(): Promise<EmqxAuthorizationSettings> {
    const { body } = await this.#send({ method: 'GET', path: '/authorization/settings' });
    return { noMatch: parse(authzSettingsSchema, body, 'authorization settings').no_match };
  }

  /** Every configured source in EMQX's order (it asks them one after the other). */
  async authorizationSources(): Promise<EmqxAuthorizationSource[]> {
    const { body } = await this.#send({ method: 'GET', path: '/authorization/sources' });
    return parse(authzSourcesSchema, body, 'authorization source list').sources.map((s) => ({ type: s.type, enable: s.enable }));
  }

  // -------------------------------------------------------------------------------------
  // Clients

  /** True when a connected client was kicked, false when it was not connected. */
  async kickClient(clientId: string): Promise<boolean> {
    try {
      await this.#send({ method: 'DELETE', path: `/clients/${seg(clientId)}` });
      return true;
    } catch (err) {
      if (err instanceof EmqxError && err.code === 'CLIENTID_NOT_FOUND') return false;
      throw err;
    }
  }

  /** Kicks whichever of the clients are connected; EMQX does not say which were. */
  async kickClients(clientIds: readonly string[]): Promise<void> {
    if (clientIds.length === 0) return;
    await this.#send({ method: 'POST', path: '/clients/kickout/bulk', body: clientIds });
  }

  // -------------------------------------------------------------------------------------
  // Transport

  /**
   * A 404 on a user means "already gone", but EMQX also answers 404 NOT_FOUND on every
   * route of an authenticator or authorization source that is not configured. Treating
   * that as success would let a sync "delete" into a misconfigured EMQX and report
   * success, so the two are told apart by EMQX's message, which names the container
   * ("Authenticator '…' does not exist", "Not found: built_in_database").
   */
  async #deleteTolerating404(call: Call): Promise<boolean> {
    try {
      await this.#send(call);
      return true;
    } catch (err) {
      if (err instanceof EmqxError && err.status === 404 && !namesMissingContainer(err.emqxMessage ?? '')) {
        return false;
      }
      throw err;
    }
  }

  /**
   * Retries retryable failures with the shared capped backoff (jitter keeps several
   * workers that lost EMQX together from retrying in lockstep).
   */
  async #send(call: Call): Promise<Answer> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(call);
      } catch (error) {
        const retriesLeft = this.#retries - (attempt - 1);
        if (!(error instanceof EmqxError) || !error.retryable || retriesLeft <= 0) throw error;
        const retryDelay = backoffDelay(attempt, { baseMs: this.#minBackoffMs, capMs: this.#maxBackoffMs });
        this.#logger?.warn(
          { method: call.method, path: call.path, attempt, retriesLeft, retryDelay, code: error.code },
          'EMQX API call failed; retrying',
        );
        await sleep(retryDelay);
      }
    }
  }

  async #attempt(call: Call): Promise<Answer> {
    const what = `${call.method} ${call.path}`;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (call.auth ?? true) headers.authorization = this.#authorization;
    if (call.body !== undefined) headers['content-type'] = 'application/json';

    let status: number;
    let text: string;
    try {
      const res = await fetch(this.#url(call), {
        method: call.method,
        headers,
        ...(call.body !== undefined ? { body: JSON.stringify(call.body) } : {}),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      status = res.status;
      // The timeout signal covers the body too: a stalled body is a timeout like any other.
      text = await res.text();
    } catch (err) {
      throw transportError(err, what, this.#timeoutMs);
    }
    this.#logger?.debug({ method: call.method, path: call.path, status }, 'EMQX API call');
    if (status >= 200 && status < 300) return { status, body: decodeOk(text, what) };
    throw answerError(status, text, what);
  }

  #url(call: Call): string {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(call.query ?? {})) {
      if (v !== undefined) params.set(k, String(v));
    }
    const qs = params.toString();
    return `${this.#baseUrl}${call.path}${qs ? `?${qs}` : ''}`;
  }
}

// ---------------------------------------------------------------------------------------
// Helpers

const seg = (s: string) => encodeURIComponent(s);

const namesMissingContainer = (message: string) => /authenticator|built_in_database/i.test(message);

const pageSchema = <T extends z.ZodType>(item: T) => z.object({ data: z.array(item), meta: pageMetaSchema });

function parse<T extends z.ZodType>(schema: T, body: unknown, what: string): z.infer<T> {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  throw new EmqxError('BAD_RESPONSE', `EMQX API returned an unexpected ${what}: ${z.prettifyError(result.error)}`, {
    retryable: false,
  });
}

function decodeOk(text: string, what: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new EmqxError('BAD_RESPONSE', `EMQX API ${what} answered with a body that is not JSON`, {
      retryable: false,
      cause,
    });
  }
}

function answerError(status: number, text: string, what: string): EmqxError {
  let code = `HTTP_${status}`;
  let message = '';
  try {
    const body = errorBodySchema.safeParse(JSON.parse(text));
    if (body.success) {
      code = body.data.code;
      message = typeof body.data.message === 'string' ? body.data.message : JSON.stringify(body.data.message ?? '');
    }
  } catch {
    // Not JSON (a proxy's error page, say): the status alone has to do.
  }
  return new EmqxError(code, `EMQX API ${what} answered ${status} ${code}${message ? `: ${message}` : ''}`, {
    status,
    retryable: status >= 500,
    ...(message ? { emqxMessage: message } : {}),
  });
}

function transportError(err: unknown, what: string, timeoutMs: number): EmqxError {
  if (err instanceof Error && err.name === 'TimeoutError') {
    return new EmqxError('TIMEOUT', `EMQX API ${what} did not answer within ${timeoutMs} ms`, {
      retryable: true,
      cause: err,
    });
  }
  return new EmqxError('UNREACHABLE', `EMQX API ${what} failed: ${describeCause(err)}`, {
    retryable: true,
    cause: err,
  });
}

/** undici hides the useful part ("connect ECONNREFUSED", "other side closed") in `cause`. */
function describeCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code} ${cause.message}` : cause.message;
  }
  return err.message;
}
