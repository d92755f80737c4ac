/**
 * The API's Prometheus metrics, in a registry of this app's own (not prom-client's global
 * one), so several apps can live in one process (tests) without clashing names.
 *
 * Counted once, where the work happens: the API counts the HTTP requests it answered;
 * jobs are counted by the worker process that ran them (src/jobs/metrics.ts), never here,
 * so summing over API replicas and workers counts nothing twice. Where API and workers
 * share a process (`npm start`), this endpoint serves the workers' registry too, merged,
 * with the process metrics once.
 *
 * Queue depth, broker lag and lagging nodes are read when scraped: Redis and the database are the truth,
 * and a gauge kept in memory would drift.
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AppContext } from './context.js';
import { createRepositories } from '../repositories/index.js';

const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface ApiMetricsOptions {
  /**
   * The workers' metrics (Prometheus text) when they run in this process (`npm start`,
   * in a thread of their own): served after this registry's, with the process metrics
   * once (theirs).
   */
  workers?: () => Promise<string>;
}

export class ApiMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly duration: Histogram<'method' | 'route' | 'status'>;
  private readonly workers?: () => Promise<string>;

  constructor(app: Pick<AppContext, 'queues' | 'uow' | 'serverKey' | 'config'>, opts: ApiMetricsOptions = {}) {
    const depth = new Gauge({
      name: 'meshq_queue_jobs',
      help: 'Jobs in each queue by state, read from Redis at scrape time',
      labelNames: ['queue', 'state'] as const,
      registers: [this.registry],
      collect: async () => {
        depth.reset();
        for (const [queue, counts] of Object.entries(await app.queues.counts())) {
          for (const [state, n] of Object.entries(counts)) depth.set({ queue, state }, n);
        }
      },
    });
    if (app.config.mqtt.enabled) {
      const read = async () => {
        const repos = createRepositories(app.uow.fork(), { serverKey: app.serverKey });
        return { epoch: await repos.system.dataEpoch(), sync: await repos.system.brokerSyncState() };
      };
      let snapshot: Promise<Awaited<ReturnType<typeof read>>> | undefined;
      // Both gauges come from one read per scrape.
      const once = () => (snapshot ??= read().finally(() => setTimeout(() => (snapshot = undefined), 0)));
      const epochLag = new Gauge({
        name: 'meshq_broker_epoch_lag',
        help: 'Restores EMQX has not been synced to yet (data epoch minus the epoch the last sync applied)',
        registers: [this.registry],
        collect: async () => {
          const { epoch, sync } = await once();
          epochLag.set(Math.max(0, epoch - sync.syncedEpoch));
        },
      });
      const pending = new Gauge({
        name: 'meshq_broker_pending_changes',
        help: 'Credential changes marked for EMQX and not yet applied by a sync',
        registers: [this.registry],
        collect: async () => {
          const { sync } = await once();
          pending.set(Math.max(0, sync.pendingSeq - sync.appliedSeq));
        },
      });
      const lagging = new Gauge({
        name: 'meshq_nodes_config_lagging',
        help: 'Dynamic nodes whose agent has not acknowledged the config revision last pushed to it',
        registers: [this.registry],
        collect: async () => {
          lagging.set(await createRepositories(app.uow.fork(), { serverKey: app.serverKey }).nodeSync.laggingCount());
        },
      });
    }
    this.requests = new Counter({
      name: 'meshq_http_requests_total',
      help: 'HTTP requests answered, by method, route pattern and status code',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [this.registry],
    });
    this.duration = new Histogram({
      name: 'meshq_http_request_duration_seconds',
      help: 'Time to answer HTTP requests, by method, route pattern and status code',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: HTTP_BUCKETS,
      registers: [this.registry],
    });
    // The workers' metrics have the process metrics when they share this process.
    if (!opts.workers) collectDefaultMetrics({ register: this.registry });
    this.workers = opts.workers;
  }

  /** Counts every answer by its route pattern (never the raw URL: ids would mint series). */
  install(api: FastifyInstance): void {
    api.addHook('onResponse', async (request, reply) => {
      const labels = { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) };
      this.requests.inc(labels);
      this.duration.observe(labels, reply.elapsedTime / 1000);
    });
  }

  async text(): Promise<string> {
    const own = await this.registry.metrics();
    if (!this.workers) return own;
    return (own.endsWith('\n') ? own : own + '\n') + (await this.workers());
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
