/**
 * The worker's metrics, counted where the work happens: each worker process counts the
 * attempts it ran itself, so summing over worker processes counts every job once (the
 * API counts none of them). A registry of its own (not prom-client's global one), so
 * several pools can live in one process (tests) without clashing names.
 *
 * The time of the last successful export is read from the database when scraped: the
 * database is the truth, and a value kept in memory would be lost with a restart.
 */
import type { Job } from 'bullmq';
import { UnrecoverableError } from 'bullmq';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { JobHistogram, type HistogramSeries } from './job-histogram.js';
import { isJobType } from './table.js';

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800];

/** completed; failed: for good (no retry left, or a permanent error); retried: this attempt failed, another follows. */
export type AttemptStatus = 'completed' | 'failed' | 'retried';

export interface WorkerMetricsOptions {
  /** Newest successful export (ms since the epoch), or null when there is none. */
  lastExportAt?: () => Promise<number | null>;
  /** prom-client's process metrics (CPU, memory, event loop, GC); once per process. */
  processMetrics?: boolean;
}

/**
 * Per-job observations go to JobHistogram series kept per label set (prom-client's own
 * observe and inc rebuild a label key on every call); the attempts counter is the
 * duration histogram's count per (type, status), copied into it when scraped.
 */
export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly duration: JobHistogram<'type' | 'status'>;
  private readonly wait: JobHistogram<'type'>;

  constructor(opts: WorkerMetricsOptions = {}) {
    // Registered in this order (the scrape lists them so): attempts, durations, waits.
    const jobs: Counter<'type' | 'status'> = new Counter({
      name: 'meshq_jobs_total',
      help: 'Job attempts this worker process ran, by job type and outcome (completed, failed for good, retried)',
      labelNames: ['type', 'status'] as const,
      registers: [this.registry],
      collect: () => {
        jobs.reset();
        for (const s of this.duration.allSeries()) jobs.inc(s.labels, s.count);
      },
    });
    this.duration = new JobHistogram(
      'meshq_job_duration_seconds',
      'Run time of each attempt this worker process ran, by job type and outcome',
      DURATION_BUCKETS,
      this.registry,
    );
    this.wait = new JobHistogram(
      'meshq_job_wait_seconds',
      'Time a job waited in its queue before its first attempt started (from when it became runnable)',
      WAIT_BUCKETS,
      this.registry,
    );
    const lastExportAt = opts.lastExportAt;
    if (lastExportAt) {
      const lastExport = new Gauge({
        name: 'meshq_snapshot_last_success_timestamp_seconds',
        help: 'When the newest stored snapshot export was made (Unix time); absent when there is none',
        registers: [this.registry],
        collect: async () => {
          lastExport.reset();
          const at = await lastExportAt().catch(() => null);
          if (at !== null) lastExport.set(at / 1000);
        },
      });
    }
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * Runs one attempt of `job` and counts it. The type label is the job's name only when it
   * is a known type: a name comes from Redis, and an arbitrary one must not mint series.
   */
  async track<T>(job: Job, attempt: () => Promise<T>): Promise<T> {
    const type = isJobType(job.name) ? job.name : 'unknown';
    const started = Date.now();
    if (job.attemptsMade === 0) {
      const runnable = job.timestamp + (job.opts.delay ?? 0);
      this.wait.observe(this.wait.series(type, () => ({ type })), Math.max(0, started - runnable) / 1000);
    }
    let status: AttemptStatus = 'completed';
    try {
      return await attempt();
    } catch (err) {
      const last = err instanceof UnrecoverableError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      status = last ? 'failed' : 'retried';
      throw err;
    } finally {
      this.duration.observe(this.durationSeries(type, status), (Date.now() - started) / 1000);
    }
  }

  private durationSeries(type: string, status: AttemptStatus): HistogramSeries<'type' | 'status'> {
    return this.duration.series(`${type} ${status}`, () => ({ type, status }));
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
