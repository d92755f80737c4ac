/**
 * Prometheus metrics, in a registry of this app's own (not prom-client's global one), so
 * several apps can live in one process (tests) without clashing names.
 *
 * Queue depth is read from BullMQ when scraped: Redis is the truth and a gauge kept in
 * memory would drift. Job durations need a moment in time to be observed, so they come
 * from BullMQ's event stream (QueueEvents completed/failed, the final outcome only: a
 * retried attempt emits no `failed`), looking the job up for its type and its
 * processedOn -> finishedOn. Chosen over "read the recently finished jobs on each scrape"
 * because a histogram is a set of counters: rebuilding it from a sliding window would
 * make counts go down as BullMQ's retention removes jobs. The cost: each API process
 * counts every job it sees finish while it runs (sum over one instance, not over
 * replicas), and one Redis connection per queue.
 */
import { QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { JobQueues } from '../jobs/queue-client.js';
import { QUEUE_NAMES, type QueueName } from '../jobs/names.js';

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export class ApiMetrics {
  readonly registry = new Registry();
  private readonly duration: Histogram<'queue' | 'type' | 'status'>;
  private readonly watchers: { events: QueueEvents; connection: Redis }[] = [];

  constructor(
    private readonly queues: JobQueues,
    private readonly config: Pick<Config, 'redisUrl' | 'queuePrefix'>,
    private readonly log: Logger,
  ) {
    const depth = new Gauge({
      name: 'meshq_queue_jobs',
      help: 'Jobs in each queue by state, read from Redis at scrape time',
      labelNames: ['queue', 'state'] as const,
      registers: [this.registry],
      collect: async () => {
        depth.reset();
        for (const [queue, counts] of Object.entries(await queues.counts())) {
          for (const [state, n] of Object.entries(counts)) depth.set({ queue, state }, n);
        }
      },
    });
    this.duration = new Histogram({
      name: 'meshq_job_duration_seconds',
      help: 'Run time of finished jobs (last attempt: processedOn to finishedOn), by final status',
      labelNames: ['queue', 'type', 'status'] as const,
      buckets: DURATION_BUCKETS,
      registers: [this.registry],
    });
  }

  /** Starts listening to every queue's events; resolves when they are subscribed. */
  async start(): Promise<void> {
    for (const name of QUEUE_NAMES) {
      const { events, connection } = await this.queues.eventsFromTail(name);
      events.on('error', (err) => this.log.warn({ err, queue: name }, 'metrics: queue events error'));
      events.on('completed', ({ jobId }) => void this.observe(name, jobId, 'completed'));
      events.on('failed', ({ jobId }) => void this.observe(name, jobId, 'failed'));
      this.watchers.push({ events, connection });
    }
    await Promise.all(this.watchers.map((w) => w.events.waitUntilReady()));
  }

  private async observe(queue: QueueName, jobId: string, status: 'completed' | 'failed'): Promise<void> {
    try {
      const job = await this.queues.queue(queue).getJob(jobId);
      // Already removed by retention: nothing to measure.
      if (!job?.processedOn || !job.finishedOn) return;
      this.duration.observe({ queue, type: job.name, status }, Math.max(0, job.finishedOn - job.processedOn) / 1000);
    } catch (err) {
      this.log.debug({ err, jobId }, 'metrics: could not read finished job');
    }
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.watchers.map(async (w) => {
        await w.events.close().catch(() => undefined);
        await w.connection.quit().catch(() => w.connection.disconnect());
      }),
    );
    this.watchers.length = 0;
  }
}
