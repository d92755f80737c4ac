/**
 * The only reader of process.env. The environment is validated once, every bad variable
 * is reported in one message, and the result is frozen and passed down explicitly.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { CronExpressionParser } from 'cron-parser';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const url = (protocols: string[]) =>
  z.string().refine(
    (s) => {
      try {
        return protocols.includes(new URL(s).protocol);
      } catch {
        return false;
      }
    },
    { message: `must be a URL with one of the schemes ${protocols.join(', ')}` },
  );

const envSchema = z.object({
  DATABASE_URL: z
    .string()
    .default('sqlite:./data/meshq.db')
    .refine((s) => /^sqlite:.+/.test(s) || /^postgres(ql)?:\/\/.+/.test(s), {
      message: 'must be sqlite:<path> or postgres://user:pass@host:port/db',
    }),
  REDIS_URL: url(['redis:', 'rediss:']).default('redis://127.0.0.1:6379'),
  REDIS_SENTINELS: z.string().optional(),
  REDIS_SENTINEL_NAME: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,128}$/, 'must be the master name of the sentinels\' configuration (letters, digits, _ . -), e.g. mymaster')
    .optional(),
  REDIS_SENTINEL_USERNAME: z.string().optional(),
  REDIS_SENTINEL_PASSWORD: z.string().optional(),
  REDIS_SENTINEL_TLS: bool.optional(),
  REDIS_WAIT_REPLICAS: int(0, 16).optional(),
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: int(0, 65535).default(3000),
  ADMIN_PASSWORD: z.string().min(8, 'must be at least 8 characters').optional(),
  SECRET_KEY: z.string().optional(),
  WORKER_CONCURRENCY: int(1, 1000).default(8),
  DB_POOL_MAX: int(1, 500).default(10),
  DB_CONNECT_TIMEOUT_MS: int(0, 3_600_000).default(30_000),
  DB_STATEMENT_TIMEOUT_MS: int(0, 86_400_000).default(300_000),
  SUBMIT_TIMEOUT_MS: int(100, 600_000).default(5_000),
  REDIS_DURABILITY: z.enum(['aof', 'none']).default('aof'),
  JOB_RETRY_WINDOW_MS: int(0, 30 * 86_400_000).default(3_600_000),
  JOB_RETRY_MAX_DELAY_MS: int(10, 3_600_000).default(60_000),
  MQTT_ENABLED: bool.default(false),
  MQTT_URL: url(['mqtt:', 'mqtts:', 'ws:', 'wss:', 'tcp:']).default('mqtt://emqx:1883'),
  MQTT_USERNAME: z.string().optional(),
  MQTT_PASSWORD: z.string().optional(),
  EMQX_API_URL: url(['http:', 'https:']).default('http://emqx:18083/api/v5'),
  EMQX_API_KEY: z.string().optional(),
  EMQX_API_SECRET: z.string().optional(),
  SNAPSHOT_KEEP: int(1, 10_000).default(20),
  AUDIT_RETENTION_DAYS: int(1, 36_500).optional(),
  SNAPSHOT_SCHEDULE: z
    .string()
    .refine(isCronPattern, {
      message: 'must be a cron pattern (5 fields, or 6 with seconds first), e.g. "0 3 * * *" for 03:00 every day',
    })
    .optional(),
  WORKER_HTTP_PORT: int(0, 65535).default(3001),
  LOG_FORMAT: z.enum(['json', 'pretty']).default('json'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be 1-64 letters, digits, _ . - (no : or spaces)')
    .default('meshq'),
  OTEL_EXPORTER_OTLP_ENDPOINT: url(['http:', 'https:']).optional(),
  OTEL_SERVICE_NAME: z
    .string()
    .regex(/^[\x21-\x7e]{1,128}$/, 'must be 1-128 printable characters without spaces')
    .optional(),
});

/** BullMQ's job schedulers read cron patterns with cron-parser: the same parser checks them here, at start. */
function isCronPattern(pattern: string): boolean {
  const fields = pattern.trim().split(/\s+/).length;
  if (fields < 5 || fields > 6) return false;
  try {
    CronExpressionParser.parse(pattern);
    return true;
  } catch {
    return false;
  }
}

/** Every variable meshq reads; docker-compose.yml and .env.example are checked against it. */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape) as (keyof typeof envSchema.shape)[];

export type Dialect = 'sqlite' | 'postgresql';

export interface Config {
  readonly dialect: Dialect;
  readonly databaseUrl: string;
  /** SQLite file path (resolved) when dialect is sqlite. */
  readonly sqlitePath?: string;
  /**
   * Redis of the queues: with `redisSentinel` absent, the server REDIS_URL names. With it,
   * REDIS_URL gives only the scheme (rediss: for TLS), user, password and database number
   * of the data nodes, and the sentinels name the primary.
   */
  readonly redisUrl: string;
  /** REDIS_SENTINELS and friends: the primary is asked of these sentinels, and followed across a failover. */
  readonly redisSentinel?: RedisSentinelConfig;
  /**
   * Replicas that must hold an accepted job before the API answers (Redis WAIT;
   * REDIS_WAIT_REPLICAS, by default 1 with Sentinel and 0 without): replication is
   * asynchronous, and a job only the failed primary held is lost with it.
   */
  readonly redisWaitReplicas: number;
  readonly host: string;
  readonly port: number;
  readonly adminPassword?: string;
  /** 32-byte server key, hex. */
  readonly secretKey: string;
  readonly workerConcurrency: number;
  readonly dbPoolMax: number;
  readonly dbConnectTimeoutMs: number;
  /** PostgreSQL statement_timeout of every connection (0: none); a stuck statement ends as a retryable error. */
  readonly dbStatementTimeoutMs: number;
  /** Bound on a submission's checks and enqueue: past it the API answers 503 and enqueues nothing. */
  readonly submitTimeoutMs: number;
  /** `aof`: start-up refuses a Redis without append-only persistence; `none`: accepted jobs may be lost with Redis. */
  readonly redisDurability: 'aof' | 'none';
  /** How long infrastructure errors are retried (capped backoff), counted from a job's first failure. */
  readonly jobRetryWindowMs: number;
  /** The cap of the retry backoff. */
  readonly jobRetryMaxDelayMs: number;
  readonly mqtt: {
    readonly enabled: boolean;
    readonly url: string;
    readonly username?: string;
    readonly password?: string;
  };
  readonly emqx: { readonly apiUrl: string; readonly apiKey?: string; readonly apiSecret?: string };
  readonly snapshotKeep: number;
  /** Audit records older than this many days are pruned by `retention.prune` (AUDIT_RETENTION_DAYS); absent: kept. */
  readonly auditRetentionDays?: number;
  /** Cron pattern of scheduled snapshot exports (SNAPSHOT_SCHEDULE); absent: none. */
  readonly snapshotSchedule?: string;
  /** Port of a worker process's /healthz, /readyz and /metrics (0: any free port). */
  readonly workerHttpPort: number;
  readonly logLevel: string;
  readonly logFormat: 'json' | 'pretty';
  /** Prefix of every BullMQ key (QUEUE_PREFIX): meshq deployments sharing a Redis, and tests, each use their own. */
  readonly queuePrefix: string;
  /**
   * OpenTelemetry tracing (OTEL_EXPORTER_OTLP_ENDPOINT): the collector's OTLP/HTTP base URL
   * (traces go to `<endpoint>/v1/traces`) and the service name (OTEL_SERVICE_NAME; absent:
   * `meshq-api` or `meshq-worker` by role). Absent: no tracing, and no OpenTelemetry code loaded.
   */
  readonly tracing?: { readonly endpoint: string; readonly serviceName?: string };
}

export interface RedisSentinelConfig {
  readonly sentinels: readonly { readonly host: string; readonly port: number }[];
  /** The master name the sentinels monitor (REDIS_SENTINEL_NAME). */
  readonly name: string;
  readonly username?: string;
  readonly password?: string;
  /** TLS to the sentinels (REDIS_SENTINEL_TLS; by default as REDIS_URL: on for rediss:). */
  readonly tls: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const SECRET_KEY_FORMAT = /^([0-9a-fA-F]{64}|[A-Za-z0-9+/]{43}=)$/;

/** Removes the password from a URL so it can be shown in messages and logs. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return raw.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
  }
}

export interface LoadOptions {
  /** Overrides on top of the environment (tests). */
  overrides?: Record<string, string | undefined>;
  /** Where a generated SQLite server key goes; defaults beside the database file. */
  generateSecretKey?: boolean;
  queuePrefix?: string;
}

export function loadConfig(env: Record<string, string | undefined> = process.env, opts: LoadOptions = {}): Config {
  const merged = { ...env, ...opts.overrides };
  // Empty strings in .env files mean "unset", as users expect from compose files.
  const input = Object.fromEntries(CONFIG_VARIABLES.map((k) => [k, merged[k] === '' ? undefined : merged[k]]));
  const parsed = envSchema.safeParse(input);
  const problems: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      problems.push(`${issue.path.join('.')}: ${issue.message}`);
    }
  }
  const e = parsed.success ? parsed.data : undefined;
  const dialect: Dialect = (input.DATABASE_URL ?? 'sqlite:').startsWith('sqlite:') ? 'sqlite' : 'postgresql';
  if (input.SECRET_KEY !== undefined && !SECRET_KEY_FORMAT.test(input.SECRET_KEY)) {
    problems.push('SECRET_KEY: must be 64 hex characters or the base64 of 32 bytes');
  }
  if (dialect === 'postgresql' && input.SECRET_KEY === undefined) {
    problems.push('SECRET_KEY: required with PostgreSQL (generate one: openssl rand -hex 32)');
  }
  if (e?.MQTT_ENABLED && (!e.EMQX_API_KEY || !e.EMQX_API_SECRET)) {
    problems.push('EMQX_API_KEY, EMQX_API_SECRET: required when MQTT_ENABLED=true');
  }
  const redisSentinel = sentinelConfig(input, e, problems);
  if (problems.length > 0 || !e) throw new ConfigError(problems);

  const sqlitePath = dialect === 'sqlite' ? resolve(e.DATABASE_URL.slice('sqlite:'.length)) : undefined;
  const secretKey = e.SECRET_KEY ?? sqliteSecretKey(sqlitePath!, opts.generateSecretKey ?? true);

  return Object.freeze({
    dialect,
    databaseUrl: e.DATABASE_URL,
    sqlitePath,
    redisUrl: e.REDIS_URL,
    redisSentinel,
    redisWaitReplicas: e.REDIS_WAIT_REPLICAS ?? (redisSentinel ? 1 : 0),
    host: e.HOST,
    port: e.PORT,
    adminPassword: e.ADMIN_PASSWORD,
    secretKey,
    workerConcurrency: e.WORKER_CONCURRENCY,
    dbPoolMax: e.DB_POOL_MAX,
    dbConnectTimeoutMs: e.DB_CONNECT_TIMEOUT_MS,
    dbStatementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
    submitTimeoutMs: e.SUBMIT_TIMEOUT_MS,
    redisDurability: e.REDIS_DURABILITY,
    jobRetryWindowMs: e.JOB_RETRY_WINDOW_MS,
    jobRetryMaxDelayMs: e.JOB_RETRY_MAX_DELAY_MS,
    mqtt: Object.freeze({
      enabled: e.MQTT_ENABLED,
      url: e.MQTT_URL,
      username: e.MQTT_USERNAME,
      password: e.MQTT_PASSWORD,
    }),
    emqx: Object.freeze({ apiUrl: e.EMQX_API_URL, apiKey: e.EMQX_API_KEY, apiSecret: e.EMQX_API_SECRET }),
    snapshotKeep: e.SNAPSHOT_KEEP,
    auditRetentionDays: e.AUDIT_RETENTION_DAYS,
    snapshotSchedule: e.SNAPSHOT_SCHEDULE,
    workerHttpPort: e.WORKER_HTTP_PORT,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    queuePrefix: opts.queuePrefix ?? e.QUEUE_PREFIX,
    tracing: e.OTEL_EXPORTER_OTLP_ENDPOINT
      ? Object.freeze({ endpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: e.OTEL_SERVICE_NAME })
      : undefined,
  });
}

const SENTINEL_DEFAULT_PORT = 26379;

/**
 * REDIS_SENTINELS is `host[:port],host[:port],...` (port 26379 when left out; an IPv6
 * address in brackets). The sentinel variables come together: a name without sentinels,
 * or sentinels without a name, is a mistake worth stopping for, not a silent fallback to
 * REDIS_URL's host.
 */
function sentinelConfig(
  input: Record<string, string | undefined>,
  e: z.infer<typeof envSchema> | undefined,
  problems: string[],
): RedisSentinelConfig | undefined {
  const list = input.REDIS_SENTINELS;
  if (list === undefined) {
    const stray = ['REDIS_SENTINEL_NAME', 'REDIS_SENTINEL_USERNAME', 'REDIS_SENTINEL_PASSWORD', 'REDIS_SENTINEL_TLS'].filter((k) => input[k] !== undefined);
    if (stray.length > 0) problems.push(`${stray.join(', ')}: only used with REDIS_SENTINELS (host:port of each sentinel, comma-separated), which is not set`);
    return undefined;
  }
  const sentinels: { host: string; port: number }[] = [];
  for (const raw of list.split(',').map((s) => s.trim())) {
    const parsed = sentinelAddress(raw);
    if (!parsed) {
      problems.push(`REDIS_SENTINELS: "${raw}" is not host:port (expected e.g. "sentinel-1:26379,sentinel-2:26379", an IPv6 address in brackets)`);
      return undefined;
    }
    sentinels.push(parsed);
  }
  if (input.REDIS_SENTINEL_NAME === undefined) {
    problems.push('REDIS_SENTINEL_NAME: required with REDIS_SENTINELS (the master name the sentinels monitor, e.g. mymaster)');
  }
  if (!e) return undefined;
  return Object.freeze({
    sentinels: Object.freeze(sentinels.map((s) => Object.freeze(s))),
    name: e.REDIS_SENTINEL_NAME ?? '',
    username: e.REDIS_SENTINEL_USERNAME,
    password: e.REDIS_SENTINEL_PASSWORD,
    tls: e.REDIS_SENTINEL_TLS ?? new URL(e.REDIS_URL).protocol === 'rediss:',
  });
}

function sentinelAddress(raw: string): { host: string; port: number } | undefined {
  if (raw === '' || /[/@?#\s]/.test(raw)) return undefined;
  try {
    const u = new URL(`redis://${raw}`);
    if (!u.hostname) return undefined;
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    // '' when no port was given ("host:" with nothing after the colon is refused).
    const port = u.port === '' ? SENTINEL_DEFAULT_PORT : Number(u.port);
    if (u.port === '' && /:\d*$/.test(raw) && !raw.endsWith(']')) return undefined;
    return port >= 1 && port <= 65535 ? { host, port } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where meshq's Redis is, for messages and logs, with no password: REDIS_URL redacted, or
 * the master name and its sentinels.
 */
export function describeRedis(config: { redisUrl: string; redisSentinel?: RedisSentinelConfig }): string {
  const s = config.redisSentinel;
  if (!s) return `Redis at ${redactUrl(config.redisUrl)}`;
  const where = s.sentinels.map((a) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)).join(',');
  return `Redis primary "${s.name}" of the sentinels ${where}${s.tls ? ' (TLS)' : ''}`;
}

/**
 * With SQLite the server key may live beside the database (one machine, one folder to
 * back up). It is generated once and never printed. PostgreSQL deployments run several
 * machines, so there the key must come from the environment.
 */
function sqliteSecretKey(dbPath: string, generate: boolean): string {
  const keyPath = resolve(dirname(dbPath), 'secret.key');
  if (existsSync(keyPath)) return readFileSync(keyPath, 'utf8').trim();
  if (!generate) throw new ConfigError([`SECRET_KEY: not set and ${keyPath} does not exist`]);
  mkdirSync(dirname(keyPath), { recursive: true });
  const key = randomBytes(32).toString('hex');
  try {
    writeFileSync(keyPath, key + '\n', { mode: 0o600, flag: 'wx' });
    return key;
  } catch {
    // Another process created it first: use theirs.
    return readFileSync(keyPath, 'utf8').trim();
  }
}

/** Loads `.env` from the working directory if there is one (Node's own parser). */
export function loadDotEnv(): void {
  if (existsSync('.env')) process.loadEnvFile('.env');
}
