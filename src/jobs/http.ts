/**
 * A worker process's own small HTTP server on WORKER_HTTP_PORT, for orchestrators and
 * Prometheus: `/healthz` (the process answers and its workers run: a hung or stopped
 * worker is restarted), `/readyz` (database and Redis answer; warnings such as overdue
 * scheduled backups) and `/metrics` (what this process ran). Without credentials, like
 * the API's probes: it says ok or not, never an error text that could name a host, and
 * its metrics hold no secret. The port is meant for the private network only (compose
 * publishes none).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Orm } from '../db/orm.js';
import type { UnitOfWork } from '../db/unit-of-work.js';
import type { JobQueues } from './queue-client.js';
import { scheduleWarnings } from './snapshot-schedule.js';
import type { WorkerPool } from './worker.js';

const CHECK_TIMEOUT_MS = 3_000;

/** Start-up prints its message alone (one line), as for the API's port. */
class PortUnavailableError extends Error {
  constructor(host: string, port: number) {
    super(`WORKER_HTTP_PORT ${port} on ${host} is already in use (another meshq worker, or another program, listens there): stop it or set WORKER_HTTP_PORT`);
    this.name = 'PortUnavailableError';
  }
}

export interface WorkerHttpDeps {
  config: Pick<Config, 'host' | 'workerHttpPort' | 'snapshotSchedule'>;
  log: Logger;
  orm: Orm;
  uow: UnitOfWork;
  queues: JobQueues;
  serverKey: Buffer;
  pool: WorkerPool;
  /** What /metrics serves; default the pool's own registry. */
  metricsText?: () => Promise<{ text: string; contentType: string }>;
}

export interface WorkerHttp {
  port: number;
  close(): Promise<void>;
}

async function bounded(fn: () => Promise<void>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), CHECK_TIMEOUT_MS)));
  try {
    return await Promise.race([fn().then(() => true), timeout]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

export async function startWorkerHttp(deps: WorkerHttpDeps): Promise<WorkerHttp> {
  const started = Date.now();
  const metricsText =
    deps.metricsText ?? (async () => ({ text: await deps.pool.metrics.text(), contentType: deps.pool.metrics.contentType }));
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const running = () => deps.pool.workers.every((w) => w.isRunning());

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: { code: 'METHOD_NOT_ALLOWED', message: 'only GET' } });
    if (path === '/healthz') {
      const ok = running();
      return json(res, ok ? 200 : 503, { status: ok ? 'ok' : 'workers not running' });
    }
    if (path === '/readyz') {
      const [database, redis, warnings] = await Promise.all([
        bounded(async () => {
          if (!(await deps.orm.checkConnection()).ok) throw new Error('not connected');
        }),
        bounded(async () => {
          if ((await deps.queues.connection.ping()) !== 'PONG') throw new Error('no PONG');
        }),
        scheduleWarnings(deps, started).catch(() => [] as string[]),
      ]);
      const checks = { database: { ok: database }, redis: { ok: redis }, workers: { ok: running() } };
      const failed = Object.entries(checks).filter(([, c]) => !c.ok).map(([name]) => name);
      return json(res, failed.length ? 503 : 200, { status: failed.length ? 'unavailable' : 'ready', failed, checks, warnings });
    }
    if (path === '/metrics') {
      const { text, contentType } = await metricsText();
      res.writeHead(200, { 'content-type': contentType });
      res.end(text);
      return;
    }
    json(res, 404, { error: { code: 'NOT_FOUND', message: `no route ${path}; this port serves /healthz, /readyz and /metrics` } });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      deps.log.warn({ err, url: req.url }, 'worker http: request failed');
      if (!res.headersSent) json(res, 500, { error: { code: 'INTERNAL', message: 'internal error' } });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new PortUnavailableError(deps.config.host, deps.config.workerHttpPort) : err);
    server.once('error', failed);
    server.listen(deps.config.workerHttpPort, deps.config.host, () => {
      server.off('error', failed);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  deps.log.info({ port }, 'worker health and metrics listening');
  return {
    port,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
