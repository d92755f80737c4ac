/**
 * The worker side: one BullMQ Worker per queue, all running jobs through the runner.
 * Stateless; start as many worker processes as you like (docker compose --scale).
 */
import { hostname } from 'node:os';
import { Worker, type Job, type Telemetry } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { UnitOfWork } from '../db/unit-of-work.js';
import { JOBS, JOB_TYPES, isJobType, retryStrategyFor } from './table.js';
import type { JobQueues } from './queue-client.js';
import { redisConnection } from './redis.js';
import { QUEUE_RULES, concurrencyOf, type QueueName } from './names.js';
import { runJob, type RunnerDeps } from './runner.js';
import { AppliedRecorder } from './acks.js';
import { promoteDelayedPushes } from './pushes.js';
import { UnrecoverableError } from 'bullmq';
import { backoffDelay } from '../backoff.js';
import { BROKER_RECONCILE_SCHEDULER_ID, configureScheduledReconcile, requestBrokerSync, requestPushBatch } from './broker-requests.js';
import { envelopeKey, verifyEnvelope } from './envelope.js';
import { RETENTION_SCHEDULER_ID, configureRetentionSchedule } from './retention-schedule.js';
import { CommittedEvents, publishApplied } from './events.js';
import type { AppliedAck } from '../repositories/node-sync.js';
import { WorkerMetrics } from './metrics.js';
import { configureScheduledExport, lastExportAt } from './snapshot-schedule.js';
import { MQTT_CONNECTED_SYNC_REASON, startMqttLink, type MqttLink, type MqttLinkOptions } from '../broker/mqtt-link.js';

export interface WorkerOptions {
  /** How often BullMQ looks for jobs whose worker died (default 30 s). */
  stalledIntervalMs?: number;
  /** How long a job's lock lives without renewal (default 30 s). */
  lockDurationMs?: number;
  /** Bound on waiting for active jobs at shutdown. */
  shutdownTimeoutMs?: number;
  onCommitted?: RunnerDeps['onCommitted'];
  /** How often the scheduled broker reconcile looks for pending work (default 60 s). */
  brokerReconcileEveryMs?: number;
  /** Tuning of this process's MQTT link (tests: a shorter presence window). */
  mqttLinkOptions?: MqttLinkOptions;
  /** How often settings that live only in Redis are checked and re-applied when missing (default 60 s). */
  redisSettingsEveryMs?: number;
  /** prom-client's process metrics in this pool's registry (default true; once per process). */
  processMetrics?: boolean;
}

export interface WorkerPool {
  workers: Worker[];
  /** This process's MQTT connection; only with MQTT_ENABLED=true. */
  mqtt?: MqttLink;
  /** The attempts this process ran, for its /metrics (src/jobs/http.ts). */
  metrics: WorkerMetrics;
  close(): Promise<void>;
}

/**
 * This process's MQTT link, wired to the queues: a node's coalesced presence becomes a
 * `node.presence` job whose id is the event's key, so every process's copy of one event
 * is one job; each (re)connection requests a broker sync, because credentials changed
 * while EMQX was unreachable are pending (requests coalesce: N workers reconnecting ask
 * for one sync) and runs at once the config pushes waiting out a retry backoff (they
 * failed while the broker was away). Agents' acknowledgements go to `acks` (acks.ts).
 */
export function startWorkerMqttLink(
  deps: { config: Config; log: Logger; queues: JobQueues; acks?: AppliedRecorder },
  options?: MqttLinkOptions,
): MqttLink {
  const { config, log, queues } = deps;
  return startMqttLink(
    {
      config,
      log,
      onPresence: (event) => {
        const jobId = `presence-${event.key}`;
        const payload = { nodeId: event.nodeId, online: event.online, at: event.at.toISOString() };
        queues
          .submit('node.presence', payload, { actor: 'mqtt', jobId })
          .catch((err: unknown) => log.warn({ err, nodeId: event.nodeId, jobId }, 'enqueueing a presence event failed'));
      },
      onConnected: () => {
        requestBrokerSync(queues, MQTT_CONNECTED_SYNC_REASON).catch((err: unknown) =>
          log.warn({ err }, 'requesting a broker sync after connecting failed'),
        );
        promoteDelayedPushes(queues.queue(JOBS['node.push-configs'].queue))
          .then(() => requestPushBatch(queues))
          .catch((err: unknown) => log.warn({ err }, 'running the delayed config pushes after connecting failed'));
      },
      onApplied: (ack) => {
        deps.acks?.push(ack);
      },
    },
    options,
  );
}

export async function startWorkers(
  deps: { config: Config; log: Logger; uow: UnitOfWork; queues: JobQueues; serverKey: Buffer; jobTelemetry?: Telemetry },
  opts: WorkerOptions = {},
): Promise<WorkerPool> {
  const { config, log, queues } = deps;
  // One connection per worker process, up before the first job can ask to publish; it
  // connects in the background, so a broker that is down does not hold start-up.
  const onRecorded = (acked: AppliedAck[], at: Date) => publishApplied(queues.connection, config.queuePrefix, acked, at);
  const acks = config.mqtt.enabled ? new AppliedRecorder({ uow: deps.uow, serverKey: deps.serverKey, log, onRecorded }) : undefined;
  const mqtt = config.mqtt.enabled ? startWorkerMqttLink({ config, log, queues, acks }, opts.mqttLinkOptions) : undefined;
  const committedEvents = new CommittedEvents(queues.connection, config.queuePrefix, (err, events) =>
    log.warn({ err, events }, 'publishing committed jobs\' events failed'),
  );
  const runnerDeps: RunnerDeps = {
    uow: deps.uow,
    config,
    log,
    serverKey: deps.serverKey,
    enqueue: (type, payload, o) => queues.submit(type, payload, { actor: o?.actor ?? 'system', jobId: o?.jobId }),
    onCommitted: opts.onCommitted,
    requestBrokerSync: (reason) => requestBrokerSync(queues, reason),
    mqtt,
    publishCommitted: async (job) => committedEvents.publish(job),
  };
  const metrics = new WorkerMetrics({ lastExportAt: () => lastExportAt(deps), processMetrics: opts.processMetrics });

  const served = new Set(JOB_TYPES.map((t) => JOBS[t].queue));
  for (const q of served) if (QUEUE_RULES[q].globallySerial) await queues.queue(q).setGlobalConcurrency(1);
  const key = envelopeKey(deps.serverKey);

  // BullMQ never closes a connection it was given: these are quit in close(), below.
  const connections: Redis[] = [];
  const workers = [...served].map((queueName) => {
    const connection = redisConnection(config);
    connections.push(connection);
    const worker = new Worker(
      queueName,
      async (job: Job) => metrics.track(job, async () => {
        // Before anything else: whoever could write to Redis could have written this job.
        const envelope = verifyEnvelope(key, job.name, job.data);
        if (!envelope) {
          log.warn({ jobId: job.id, type: job.name, queue: queueName }, 'refused a job whose envelope is not signed by meshq');
          throw new UnrecoverableError(`[UNVERIFIED] job ${job.id} has no valid envelope signature: it was not submitted by meshq; nothing was applied`);
        }
        if (!isJobType(job.name) || JOBS[job.name].queue !== queueName) {
          throw new UnrecoverableError(`[INVALID] job type "${job.name}" is not served by queue ${queueName}`);
        }
        return runJob(runnerDeps, { jobId: job.id!, type: job.name, envelope, job });
      }),
      {
        connection,
        prefix: config.queuePrefix,
        // Recorded on each job as processedBy: which process ran it (scaling, debugging).
        name: `${hostname()}:${process.pid}`,
        concurrency: concurrencyOf(queueName, config.workerConcurrency),
        // BullMQ rejects an explicit undefined: only pass what was set.
        ...(opts.stalledIntervalMs ? { stalledInterval: opts.stalledIntervalMs } : {}),
        ...(opts.lockDurationMs ? { lockDuration: opts.lockDurationMs } : {}),
        // Each job type's capped backoff, from its row; BullMQ's builtin types never reach it.
        settings: { backoffStrategy: retryStrategyFor(config.jobRetryMaxDelayMs) },
        // Tracing on: each run is a span, child of the span that added the job (src/bin/telemetry.ts).
        ...(deps.jobTelemetry ? { telemetry: deps.jobTelemetry } : {}),
        autorun: true,
      },
    );
    worker.on('error', (err) => log.error({ err, queue: queueName }, 'worker error'));
    worker.on('failed', (job, err) => {
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) log.warn({ jobId: job.id, type: job.name, reason: err.message }, 'job failed');
    });
    return worker;
  });
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  if (served.has(JOBS['broker.sync'].queue)) await configureScheduledReconcile(queues, config, opts.brokerReconcileEveryMs);
  const stopReapplying = reapplyRedisSettings({ config, log, queues }, served, opts);
  if (served.has(JOBS['snapshot.export'].queue)) await configureScheduledExport(queues, config);
  if (served.has(JOBS['retention.prune'].queue)) await configureRetentionSchedule(queues);
  log.info({ queues: [...served], concurrency: config.workerConcurrency }, 'workers started');

  return {
    workers,
    mqtt,
    metrics,
    async close() {
      stopReapplying();
      // worker.close() stops taking jobs and waits for active ones; bound the wait so a
      // stuck job cannot hold shutdown forever (its lock expires and another worker
      // takes it over as stalled).
      const timeout = opts.shutdownTimeoutMs ?? 30_000;
      if (!(await settlesWithin(Promise.all(workers.map((w) => w.close())), timeout))) {
        log.warn({ timeoutMs: timeout }, 'active jobs did not finish in time; forcing close');
        // A BullMQ worker whose blocking connection is stuck reconnecting after a Redis
        // restart may never finish even a forced close: bounded too, and the connections
        // are cut below either way.
        if (!(await settlesWithin(Promise.all(workers.map((w) => w.close(true))), FORCED_CLOSE_MS))) {
          log.warn({ timeoutMs: FORCED_CLOSE_MS }, 'workers did not close; cutting their connections');
        }
      }
      // The finished jobs' events, before anything that writes them closes.
      await committedEvents.flush();
      await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
      // After the workers: active jobs may still have been publishing.
      await mqtt?.close();
      // Acknowledgements that arrived before the link closed.
      await acks?.flush();
    },
  };
}

/** How long a forced close of the workers may take before their connections are cut. */
const FORCED_CLOSE_MS = 5_000;

/** Whether `p` resolves within `ms` (a rejection is thrown as it comes). */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => {
    timer = setTimeout(() => r(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Retries of a failed check of the settings below. */
const SETTINGS_RETRY_BACKOFF = { baseMs: 500, capMs: 30_000 } as const;

/**
 * Some settings live only in Redis: the global concurrency of 1 of the serial queues
 * (snapshot-restore, broker-sync), the broker reconcile's scheduler and the daily retention
 * run's. A Redis that lost its data (restarted without persistence, flushed) would run
 * restores side by side and stop reconciling until every worker restarted. Each worker checks them whenever its
 * connection comes back and on a timer, and re-applies what is missing. Returns the stop.
 */
function reapplyRedisSettings(
  deps: { config: Config; log: Logger; queues: JobQueues },
  served: Set<QueueName>,
  opts: WorkerOptions,
): () => void {
  const { config, log, queues } = deps;
  let running = false;
  let failures = 0;
  let retry: NodeJS.Timeout | undefined;
  const check = async () => {
    if (running) return;
    running = true;
    clearTimeout(retry);
    try {
      for (const q of served) {
        if (!QUEUE_RULES[q].globallySerial) continue;
        if ((await queues.queue(q).getGlobalConcurrency()) !== 1) {
          await queues.queue(q).setGlobalConcurrency(1);
          log.warn({ queue: q }, 'the queue had lost its global concurrency in Redis; set it again');
        }
      }
      const sync = JOBS['broker.sync'].queue;
      if (config.mqtt.enabled && served.has(sync) && !(await queues.queue(sync).getJobScheduler(BROKER_RECONCILE_SCHEDULER_ID))) {
        await configureScheduledReconcile(queues, config, opts.brokerReconcileEveryMs);
        log.warn('the scheduled broker reconcile was missing in Redis; registered it again');
      }
      const retention = JOBS['retention.prune'].queue;
      if (served.has(retention) && !(await queues.queue(retention).getJobScheduler(RETENTION_SCHEDULER_ID))) {
        await configureRetentionSchedule(queues);
        log.warn('the daily retention run was missing in Redis; registered it again');
      }
      failures = 0;
    } catch (err) {
      // Often a Redis that answers again but is still loading: try again soon, not only at
      // the next 'ready' or tick, or a restore could run unserialized for a whole period.
      const delay = backoffDelay(++failures, SETTINGS_RETRY_BACKOFF);
      log.warn({ err, retryInMs: delay }, 'checking the settings kept in Redis failed; trying again');
      retry = setTimeout(onReady, delay);
      retry.unref();
    } finally {
      running = false;
    }
  };
  const onReady = () => void check();
  queues.connection.on('ready', onReady);
  const timer = setInterval(onReady, opts.redisSettingsEveryMs ?? 60_000);
  timer.unref();
  return () => {
    clearInterval(timer);
    clearTimeout(retry);
    queues.connection.off('ready', onReady);
  };
}
