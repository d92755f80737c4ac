/**
 * A contract double of the EMQX 5 management API: the slice meshq talks to, with EMQX's
 * status codes, error codes, paging and import semantics. EMQX itself cannot run on our
 * machines, so this double is the only EMQX our tests see; it follows the EMQX 5.8 source
 * (noted at each place), because a double that is kinder than the real thing hides client
 * bugs.
 *
 * Authorization as a whole: `GET /authorization/settings` answers
 * `{"no_match": "allow"|"deny", "deny_action": ..., "cache": {...}}` and
 * `GET /authorization/sources` answers `{"sources": [{"type", "enable", ...}, ...]}` in
 * the order EMQX consults them (the first source with a matching rule decides). The
 * double starts secure (no_match deny, only the built_in_database source); stock EMQX is
 * the opposite (no_match allow, a permissive `file` source first), which
 * `setAuthorization(STOCK_EMQX_AUTHORIZATION)` reproduces.
 *
 * Faults are switchable at run time so that retry, timeout and reachability handling can
 * be tested over real sockets.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface EmqxUserRecord {
  user_id: string;
  password_hash: string;
  salt: string;
  is_superuser: boolean;
}

/** A rule as EMQX stores and returns it: qos and retain always filled in. */
export interface EmqxRule {
  topic: string;
  permission: 'allow' | 'deny';
  action: 'publish' | 'subscribe' | 'all';
  qos: number[];
  retain: boolean | 'all';
}

export interface RecordedRequest {
  method: string;
  /** The path as received, e.g. `/api/v5/clients/c1`, still percent-encoded. */
  path: string;
  query: Record<string, string>;
}

export type EmqxFault = 'none' | 'down' | '503' | 'slow' | '401' | 'drop';

export interface EmqxAuthzSource {
  type: string;
  enable: boolean;
}

export interface EmqxAuthorizationConfig {
  noMatch: 'allow' | 'deny';
  /** In the order EMQX consults them. */
  sources: EmqxAuthzSource[];
}

/** Denies by default; meshq's per-user rules are the only source. */
export const SECURE_AUTHORIZATION: EmqxAuthorizationConfig = {
  noMatch: 'deny',
  sources: [{ type: 'built_in_database', enable: true }],
};

/** EMQX as installed: allows by default, and its acl.conf file source comes first. */
export const STOCK_EMQX_AUTHORIZATION: EmqxAuthorizationConfig = {
  noMatch: 'allow',
  sources: [
    { type: 'file', enable: true },
    { type: 'built_in_database', enable: true },
  ],
};

export interface EmqxDouble {
  /** Base URL of the API, `http://127.0.0.1:PORT/api/v5`. */
  readonly url: string;
  readonly port: number;
  readonly apiKey: string;
  readonly apiSecret: string;
  readonly users: Map<string, EmqxUserRecord>;
  readonly rules: Map<string, EmqxRule[]>;
  /** Client ids EMQX considers connected; a kick removes the id. Tests fill it. */
  readonly connected: Set<string>;
  /** Client ids actually disconnected by a kick (single or bulk), in order. */
  readonly kicked: string[];
  /** Every request received, faulted ones included. */
  readonly requests: RecordedRequest[];
  /** How many received requests were not GETs (writes attempted). */
  writeRequests(): number;
  /**
   * Switches the fault. `down` refuses connections (the listening socket is closed and
   * reopened on the same port when the fault is lifted); `503` and `401` answer every call
   * with that status; `slow` delays every answer by `delayMs` (default 2000); `drop`
   * destroys the socket without answering.
   */
  setFault(fault: EmqxFault, opts?: { delayMs?: number }): void;
  /** Resolves once the listening socket matches the fault (after lifting `down`). */
  settled(): Promise<void>;
  /** Replaces the authorization settings and sources the double reports. */
  setAuthorization(config: EmqxAuthorizationConfig): void;
  /** Empties every store and record, lifts any fault and makes authorization secure again. */
  reset(): void;
  close(): Promise<void>;
}

export interface EmqxDoubleOptions {
  apiKey?: string;
  apiSecret?: string;
  /** Is the `password_based:built_in_database` authenticator configured? Default true. */
  authenticatorConfigured?: boolean;
  /** Is the `built_in_database` authorization source configured? Default true. */
  authzConfigured?: boolean;
  /** `max_rules` of the authorization source. Default 100, as in EMQX. */
  ruleLimit?: number;
}

export const AUTHENTICATOR_ID = 'password_based:built_in_database';
const API_PREFIX = '/api/v5';
const MAX_PAGE_LIMIT = 10_000;
const DEFAULT_PAGE_LIMIT = 100;
const NODE_NAME = 'emqx@127.0.0.1';

/** EMQX's default built-in-database hashing: sha256 with the salt as prefix, lowercase hex. */
export function hashPassword(salt: string, password: string): string {
  return createHash('sha256')
    .update(salt + password)
    .digest('hex');
}

export async function startEmqxDouble(opts: EmqxDoubleOptions = {}): Promise<EmqxDouble> {
  const state = new DoubleState(opts);
  await state.start();
  return state.facade();
}

// ---------------------------------------------------------------------------------------
// Errors and replies

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const badRequest = (message: string) => new ApiError(400, 'BAD_REQUEST', message);
const notFound = (message: string) => new ApiError(404, 'NOT_FOUND', message);

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

const noContent: Reply = { status: 204 };
const ok = (body: unknown): Reply => ({ status: 200, body });

function send(res: ServerResponse, reply: Reply): void {
  if (res.destroyed || res.writableEnded) return;
  const headers: Record<string, string> = { ...reply.headers };
  if (reply.body === undefined) {
    res.writeHead(reply.status, headers).end();
    return;
  }
  const text = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
  headers['content-type'] ??= 'application/json';
  res.writeHead(reply.status, headers).end(text);
}

function errorReply(status: number, code: string, message: string, headers?: Record<string, string>): Reply {
  return { status, body: { code, message }, ...(headers ? { headers } : {}) };
}

// ---------------------------------------------------------------------------------------
// Request parsing helpers

interface Req {
  method: string;
  segments: string[];
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  rawBody: string;
}

function parseJsonBody(req: Req): unknown {
  if (req.rawBody.trim() === '') throw badRequest('Request body is required');
  try {
    return JSON.parse(req.rawBody) as unknown;
  } catch {
    throw badRequest('Invalid JSON in request body');
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function rejectUnknownFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k));
  if (unknown.length) throw badRequest(`Unknown field(s): ${unknown.join(', ')}`);
}

interface Paging {
  page: number;
  limit: number;
}

/** EMQX rejects non-positive or non-numeric paging, and limits above 10000. */
function parsePaging(query: URLSearchParams): Paging {
  const page = query.get('page') ?? '1';
  const limit = query.get('limit') ?? String(DEFAULT_PAGE_LIMIT);
  const valid = (s: string) => /^[0-9]+$/.test(s) && Number(s) > 0;
  if (!valid(page) || !valid(limit) || Number(limit) > MAX_PAGE_LIMIT) {
    throw new ApiError(400, 'INVALID_PARAMETER', 'page_limit_invalid');
  }
  return { page: Number(page), limit: Number(limit) };
}

/**
 * One page of a sorted key set. EMQX's tables are ordered sets, so pages are stable while
 * nothing is written; `count` is only reported when no fuzzy filter is applied, because
 * EMQX only knows the total cheaply then.
 */
function pageOf<T>(keys: string[], paging: Paging, filtered: boolean, render: (key: string) => T) {
  const sorted = [...keys].sort();
  const start = (paging.page - 1) * paging.limit;
  const data = sorted.slice(start, start + paging.limit).map(render);
  const meta: Record<string, unknown> = {
    page: paging.page,
    limit: paging.limit,
    hasnext: sorted.length > start + paging.limit,
  };
  if (!filtered) meta.count = sorted.length;
  return { data, meta };
}

const nonEmptyString = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

// ---------------------------------------------------------------------------------------
// Rule validation (emqx_authz_api_mnesia schema + emqx_authz_rule_raw)

function normaliseQos(raw: unknown): number[] {
  if (raw === undefined || raw === null) return [0, 1, 2];
  const one = (q: unknown) => {
    if (q === 0 || q === 1 || q === 2) return q;
    throw badRequest(`Invalid qos: ${JSON.stringify(raw)}`);
  };
  return Array.isArray(raw) ? raw.map(one) : [one(raw)];
}

function normaliseRetain(raw: unknown): boolean | 'all' {
  if (raw === undefined || raw === null || raw === 'all') return 'all';
  if (raw === true || raw === false) return raw;
  throw badRequest(`Invalid retain: ${JSON.stringify(raw)}`);
}

function normaliseRule(raw: unknown): EmqxRule {
  if (!isObject(raw)) throw badRequest('A rule must be an object');
  const { topic, permission, action } = raw;
  if (!nonEmptyString(topic)) throw badRequest('Rule field topic is required');
  if (permission !== 'allow' && permission !== 'deny') throw badRequest('Rule permission must be allow or deny');
  if (action !== 'publish' && action !== 'subscribe' && action !== 'all') {
    throw badRequest('Rule action must be publish, subscribe or all');
  }
  // Other fields (clientid_re, ipaddr, ...) are filters EMQX accepts; this double ignores them.
  return { topic, permission, action, qos: normaliseQos(raw.qos), retain: normaliseRetain(raw.retain) };
}

function parseUserRules(raw: unknown): { username: string; rules: EmqxRule[] } {
  if (!isObject(raw)) throw badRequest('Each entry must be an object {username, rules}');
  if (!nonEmptyString(raw.username)) throw badRequest('Field username is required');
  if (!Array.isArray(raw.rules)) throw badRequest('Field rules must be an array');
  return { username: raw.username, rules: raw.rules.map(normaliseRule) };
}

// ---------------------------------------------------------------------------------------
// Import parsing (emqx_authn_mnesia:convert_user)

type ImportType = 'hash' | 'plain';

function parseImportItem(raw: unknown, type: ImportType): EmqxUserRecord {
  if (!isObject(raw) || !nonEmptyString(raw.user_id)) throw badRequest('bad_format');
  // EMQX accepts the string "true" too (the CSV path shares this code); anything else is false.
  const is_superuser = raw.is_superuser === true || raw.is_superuser === 'true';
  if (type === 'hash') {
    if (typeof raw.password_hash !== 'string') throw badRequest('hash_import_requires_password_hash_field');
    // As in EMQX, a missing salt is an empty salt, not an error.
    const salt = typeof raw.salt === 'string' ? raw.salt : '';
    return { user_id: raw.user_id, password_hash: raw.password_hash, salt, is_superuser };
  }
  if (typeof raw.password !== 'string') throw badRequest('plain_import_requires_password_field');
  const salt = newSalt();
  return { user_id: raw.user_id, password_hash: hashPassword(salt, raw.password), salt, is_superuser };
}

const newSalt = () => randomBytes(16).toString('hex');

const sameUser = (a: EmqxUserRecord, b: EmqxUserRecord) =>
  a.password_hash === b.password_hash && a.salt === b.salt && a.is_superuser === b.is_superuser;

const userOut = (u: EmqxUserRecord) => ({ user_id: u.user_id, is_superuser: u.is_superuser });

// ---------------------------------------------------------------------------------------
// The server

class DoubleState {
  readonly apiKey: string;
  readonly apiSecret: string;
  readonly users = new Map<string, EmqxUserRecord>();
  readonly rules = new Map<string, EmqxRule[]>();
  readonly connected = new Set<string>();
  readonly kicked: string[] = [];
  readonly requests: RecordedRequest[] = [];

  private readonly authenticatorConfigured: boolean;
  private readonly authzConfigured: boolean;
  private readonly ruleLimit: number;
  private readonly server: Server;
  private readonly timers = new Set<NodeJS.Timeout>();
  private fault: EmqxFault = 'none';
  private authorization: EmqxAuthorizationConfig = structuredClone(SECURE_AUTHORIZATION);
  private delayMs = 2000;
  private port = 0;
  /** The latest bind/unbind transition; `settled()` and `close()` wait for it. */
  private transition: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(opts: EmqxDoubleOptions) {
    this.apiKey = opts.apiKey ?? 'meshq-test-key';
    this.apiSecret = opts.apiSecret ?? 'meshq-test-secret';
    this.authenticatorConfigured = opts.authenticatorConfigured ?? true;
    this.authzConfigured = opts.authzConfigured ?? true;
    this.ruleLimit = opts.ruleLimit ?? 100;
    this.server = createServer((req, res) => this.onRequest(req, res));
  }

  /** Binds the first time on a free port; later on the same one (after `down`). */
  start(): Promise<void> {
    return this.sync();
  }

  /**
   * Brings the listening socket in line with the fault. Transitions are chained so that
   * a quick down/up/down sequence ends in the state of the last call, never in between.
   */
  private sync(): Promise<void> {
    this.transition = this.transition
      .catch(() => undefined)
      .then(() => (this.fault === 'down' || this.closed ? this.unbind() : this.bind()));
    return this.transition;
  }

  private bind(): Promise<void> {
    if (this.server.listening) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen(this.port, '127.0.0.1', () => {
        this.server.off('error', onError);
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private unbind(): Promise<void> {
    if (!this.server.listening) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      // Open keep-alive connections would keep answering while "down"; cut them too.
      this.server.closeAllConnections();
    });
  }

  setFault(fault: EmqxFault, opts: { delayMs?: number } = {}): void {
    if (this.closed) throw new Error('the EMQX double is closed');
    const wasDown = this.fault === 'down';
    this.fault = fault;
    if (opts.delayMs !== undefined) this.delayMs = opts.delayMs;
    // Binding and unbinding are asynchronous (a microtask or two); a request started
    // after setFault still meets the new state, since connecting needs I/O. `settled()`
    // waits for it explicitly.
    // A failed re-bind surfaces through settled(); it must not crash the test run here.
    if ((fault === 'down') !== wasDown) this.sync().catch(() => undefined);
  }

  reset(): void {
    this.users.clear();
    this.rules.clear();
    this.connected.clear();
    this.kicked.length = 0;
    this.requests.length = 0;
    this.delayMs = 2000;
    this.authorization = structuredClone(SECURE_AUTHORIZATION);
    this.setFault('none');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.sync();
  }

  facade(): EmqxDouble {
    // A plain object so that a test can destructure it; methods stay bound to the state.
    const url = `http://127.0.0.1:${this.port}${API_PREFIX}`;
    return {
      url,
      port: this.port,
      apiKey: this.apiKey,
      apiSecret: this.apiSecret,
      users: this.users,
      rules: this.rules,
      connected: this.connected,
      kicked: this.kicked,
      requests: this.requests,
      writeRequests: () => this.requests.filter((r) => r.method !== 'GET').length,
      setFault: (fault, opts) => this.setFault(fault, opts),
      settled: () => this.transition,
      setAuthorization: (config) => {
        this.authorization = structuredClone(config);
      },
      reset: () => this.reset(),
      close: () => this.close(),
    };
  }

  // -------------------------------------------------------------------------------------
  // Request pipeline: record, apply the fault, route, authenticate, handle.

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://double');
    const method = req.method ?? 'GET';
    this.requests.push({ method, path: url.pathname, query: Object.fromEntries(url.searchParams) });

    if (this.fault === 'drop') {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      const run = () => send(res, this.answer(req, url, method, rawBody));
      if (this.fault !== 'slow') return run();
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        // A client that gave up has gone; like a cowboy handler whose connection closed,
        // its request then changes nothing.
        if (!req.socket.destroyed) run();
      }, this.delayMs);
      this.timers.add(timer);
    });
  }

  private answer(req: IncomingMessage, url: URL, method: string, rawBody: string): Reply {
    if (this.fault === '503') {
      return errorReply(503, 'SERVICE_UNAVAILABLE', 'EMQX is not running', { 'retry-after': '1' });
    }
    if (this.fault === '401') return errorReply(401, 'BAD_API_KEY_OR_SECRET', 'Check api_key/api_secret');
    if (!url.pathname.startsWith(`${API_PREFIX}/`)) return errorReply(404, 'NOT_FOUND', 'Request Path Not Found');

    let segments: string[];
    try {
      segments = url.pathname.slice(API_PREFIX.length + 1).split('/').map(decodeURIComponent);
    } catch {
      return errorReply(400, 'BAD_REQUEST', 'Malformed percent-encoding in path');
    }
    const request: Req = { method, segments, query: url.searchParams, headers: req.headers, rawBody };
    const route = this.route(segments);
    if (!route) return errorReply(404, 'NOT_FOUND', 'Request Path Not Found');
    const handler = isMethod(method) ? route[method] : undefined;
    if (!handler) return errorReply(405, 'METHOD_NOT_ALLOWED', `${method} is not allowed here`);
    if (!(route.public ?? false)) {
      const denied = this.authenticate(req.headers.authorization);
      if (denied) return denied;
    }
    try {
      return handler(request);
    } catch (err) {
      if (err instanceof ApiError) return errorReply(err.status, err.code, err.message);
      return errorReply(500, 'INTERNAL_ERROR', String(err));
    }
  }

  /** Missing or non-basic credentials and wrong ones get different codes, as in emqx_dashboard. */
  private authenticate(header: string | undefined): Reply | undefined {
    const m = /^Basic\s+(\S+)$/i.exec(header ?? '');
    if (!m) return errorReply(401, 'AUTHORIZATION_HEADER_ERROR', 'Support authorization: basic/bearer ');
    const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
    const sep = decoded.indexOf(':');
    const key = decoded.slice(0, sep);
    const secret = decoded.slice(sep + 1);
    if (sep < 0 || key !== this.apiKey || secret !== this.apiSecret) {
      return errorReply(401, 'BAD_API_KEY_OR_SECRET', 'Check api_key/api_secret');
    }
    return undefined;
  }

  private route(s: string[]): Route | undefined {
    const [a, b, c] = s;
    if (s.length === 1 && a === 'status') return { public: true, GET: (r) => this.status(r) };
    if (a === 'authentication' && b !== undefined) return this.authnRoute(b, s.slice(2));
    if (s.length === 2 && a === 'authorization' && b === 'settings') return { GET: () => this.authzSettings() };
    if (s.length === 2 && a === 'authorization' && b === 'sources') return { GET: () => this.authzSources() };
    if (s.slice(0, 5).join('/') === 'authorization/sources/built_in_database/rules/users') {
      if (s.length === 5) return this.authzRoute(undefined);
      if (s.length === 6) return this.authzRoute(s[5]);
    }
    if (a === 'clients' && s.length === 3 && b === 'kickout' && c === 'bulk') {
      return { POST: (r) => this.kickBulk(r) };
    }
    if (a === 'clients' && s.length === 2 && b !== undefined) return { DELETE: () => this.kick(b) };
    return undefined;
  }

  private authnRoute(id: string, s: string[]): Route | undefined {
    const guard = (h: Handler): Handler => (r) => {
      if (id !== AUTHENTICATOR_ID || !this.authenticatorConfigured) {
        throw notFound(`Authenticator '${id}' does not exist`);
      }
      return h(r);
    };
    if (s.length === 1 && s[0] === 'users') {
      return { GET: guard((r) => this.listUsers(r)), POST: guard((r) => this.addUser(r)) };
    }
    if (s.length === 1 && s[0] === 'import_users') return { POST: guard((r) => this.importUsers(r)) };
    const userId = s[1];
    if (s.length === 2 && s[0] === 'users' && userId !== undefined) {
      return {
        GET: guard(() => this.getUser(userId)),
        PUT: guard((r) => this.updateUser(userId, r)),
        DELETE: guard(() => this.deleteUser(userId)),
      };
    }
    return undefined;
  }

  private authzRoute(username: string | undefined): Route {
    const guard = (h: Handler): Handler => (r) => {
      if (!this.authzConfigured) throw notFound('Not found: built_in_database');
      return h(r);
    };
    if (username === undefined) {
      return { GET: guard((r) => this.listRules(r)), POST: guard((r) => this.createRules(r)) };
    }
    return {
      GET: guard(() => this.getRules(username)),
      PUT: guard((r) => this.replaceRules(username, r)),
      DELETE: guard(() => this.deleteRules(username)),
    };
  }

  // -------------------------------------------------------------------------------------
  // Handlers

  private status(r: Req): Reply {
    if (r.query.get('format') === 'json') {
      return ok({ node_name: NODE_NAME, rel_vsn: '5.8.9', broker_status: 'started', app_status: 'running' });
    }
    return {
      status: 200,
      body: `Node ${NODE_NAME} is started\nemqx is running`,
      headers: { 'content-type': 'text/plain' },
    };
  }

  /** emqx_authz_api_settings: the global switches, cache included. */
  private authzSettings(): Reply {
    return ok({
      no_match: this.authorization.noMatch,
      deny_action: 'ignore',
      cache: { enable: true, max_size: 32, ttl: '1m', excludes: [] },
    });
  }

  /**
   * emqx_authz_api_sources: every configured source with its own configuration, in order.
   * The extra fields are what EMQX reports for each type (a client must not trip on them).
   */
  private authzSources(): Reply {
    const detail = (type: string): Record<string, unknown> => {
      if (type === 'file') return { rules: '{allow, all}.' };
      if (type === 'built_in_database') return { max_rules: this.ruleLimit };
      return {};
    };
    return ok({ sources: this.authorization.sources.map((src) => ({ type: src.type, enable: src.enable, ...detail(src.type) })) });
  }

  private listUsers(r: Req): Reply {
    const paging = parsePaging(r.query);
    const like = r.query.get('like_user_id');
    const keys = [...this.users.keys()].filter((k) => !like || k.includes(like));
    return ok(pageOf(keys, paging, Boolean(like), (k) => userOut(this.users.get(k)!)));
  }

  private addUser(r: Req): Reply {
    const body = parseJsonBody(r);
    if (!isObject(body)) throw badRequest('Request body must be an object');
    rejectUnknownFields(body, ['user_id', 'password', 'is_superuser']);
    if (!nonEmptyString(body.user_id)) throw badRequest('Missing required parameter: user_id');
    if (typeof body.password !== 'string') throw badRequest('Missing required parameter: password');
    if (body.is_superuser !== undefined && typeof body.is_superuser !== 'boolean') {
      throw badRequest('is_superuser must be a boolean');
    }
    if (this.users.has(body.user_id)) throw new ApiError(409, 'ALREADY_EXISTS', 'User already exists');
    const salt = newSalt();
    const user: EmqxUserRecord = {
      user_id: body.user_id,
      password_hash: hashPassword(salt, body.password),
      salt,
      is_superuser: body.is_superuser ?? false,
    };
    this.users.set(user.user_id, user);
    return { status: 201, body: userOut(user) };
  }

  private getUser(userId: string): Reply {
    const user = this.users.get(userId);
    if (!user) throw notFound('User not found');
    return ok(userOut(user));
  }

  private updateUser(userId: string, r: Req): Reply {
    const body = parseJsonBody(r);
    if (!isObject(body)) throw badRequest('Request body must be an object');
    rejectUnknownFields(body, ['password', 'is_superuser']);
    if (body.password === undefined && body.is_superuser === undefined) {
      throw badRequest('Missing required parameter: password');
    }
    if (body.password !== undefined && typeof body.password !== 'string') throw badRequest('password must be a string');
    if (body.is_superuser !== undefined && typeof body.is_superuser !== 'boolean') {
      throw badRequest('is_superuser must be a boolean');
    }
    const user = this.users.get(userId);
    if (!user) throw notFound('User not found');
    const next = { ...user };
    if (typeof body.password === 'string') {
      next.salt = newSalt();
      next.password_hash = hashPassword(next.salt, body.password);
    }
    if (typeof body.is_superuser === 'boolean') next.is_superuser = body.is_superuser;
    this.users.set(userId, next);
    return ok(userOut(next));
  }

  private deleteUser(userId: string): Reply {
    if (!this.users.delete(userId)) throw notFound('User not found');
    return noContent;
  }

  /**
   * One transaction: every item is validated before anything is written, then items are
   * applied in order (a repeated user_id sees the earlier one), counting new users as
   * success, identical ones as skipped and changed ones as override.
   */
  private importUsers(r: Req): Reply {
    const typeParam = r.query.get('type') ?? 'hash';
    if (typeParam !== 'hash' && typeParam !== 'plain') throw badRequest(`Invalid value for 'type'`);
    // EMQX only reads a JSON body under a JSON content type; anything else is multipart.
    if (!(r.headers['content-type'] ?? '').startsWith('application/json')) {
      throw badRequest('Missing required parameter: filename');
    }
    const body = parseJsonBody(r);
    if (!Array.isArray(body)) throw badRequest('unknown_file_format');
    if (body.length === 0) throw badRequest('empty_users');
    const incoming = body.map((item) => parseImportItem(item, typeParam));
    const result = { total: incoming.length, success: 0, override: 0, skipped: 0, failed: 0 };
    for (const user of incoming) {
      const existing = this.users.get(user.user_id);
      if (!existing) result.success++;
      else if (sameUser(existing, user)) result.skipped++;
      else result.override++;
      this.users.set(user.user_id, user);
    }
    return ok(result);
  }

  private listRules(r: Req): Reply {
    const paging = parsePaging(r.query);
    const like = r.query.get('like_username');
    const keys = [...this.rules.keys()].filter((k) => !like || k.includes(like));
    return ok(pageOf(keys, paging, Boolean(like), (k) => ({ username: k, rules: this.rules.get(k)! })));
  }

  /** Checked entry by entry as EMQX does (exists, then length); any failure writes nothing. */
  private createRules(r: Req): Reply {
    const body = parseJsonBody(r);
    if (!Array.isArray(body)) throw badRequest('Request body must be an array of {username, rules}');
    const entries = body.map(parseUserRules);
    for (const { username, rules } of entries) {
      if (this.rules.has(username)) throw new ApiError(409, 'ALREADY_EXISTS', `User '${username}' already exist`);
      if (rules.length > this.ruleLimit) {
        throw badRequest(`The rules length of User '${username}' exceeds the maximum limit.`);
      }
    }
    for (const { username, rules } of entries) this.rules.set(username, rules);
    return noContent;
  }

  private getRules(username: string): Reply {
    const rules = this.rules.get(username);
    if (!rules) throw notFound('Not Found');
    return ok({ username, rules });
  }

  private replaceRules(username: string, r: Req): Reply {
    const entry = parseUserRules(parseJsonBody(r));
    // EMQX only matches a body naming the same user as the path; we answer 400 otherwise.
    if (entry.username !== username) throw badRequest('username in body does not match the path');
    if (entry.rules.length > this.ruleLimit) throw badRequest('The rules length exceeds the maximum limit.');
    this.rules.set(username, entry.rules);
    return noContent;
  }

  private deleteRules(username: string): Reply {
    if (!this.rules.delete(username)) throw notFound('Username Not Found');
    return noContent;
  }

  private kick(clientId: string): Reply {
    if (!this.connected.delete(clientId)) {
      return errorReply(404, 'CLIENTID_NOT_FOUND', 'Client ID not found');
    }
    this.kicked.push(clientId);
    return noContent;
  }

  /** EMQX kicks whichever of the ids are connected and reports nothing per id. */
  private kickBulk(r: Req): Reply {
    const body = parseJsonBody(r);
    if (!Array.isArray(body) || !body.every((id) => typeof id === 'string')) {
      throw badRequest('Request body must be an array of client ids');
    }
    for (const id of body as string[]) {
      if (this.connected.delete(id)) this.kicked.push(id);
    }
    return noContent;
  }
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
type Handler = (r: Req) => Reply;
type Route = { public?: boolean } & Partial<Record<Method, Handler>>;
const isMethod = (m: string): m is Method => m === 'GET' || m === 'POST' || m === 'PUT' || m === 'DELETE';
