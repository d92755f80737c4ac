/**
 * The EMQX sync from the outside: how far behind EMQX is, and a way to ask for a full
 * reconcile. With MQTT disabled the status still shows the recorded bookkeeping (marks
 * keep accumulating, so enabling MQTT later knows there is work), says `disabled`, and
 * nothing here talks to EMQX.
 */
import type { FastifyInstance } from 'fastify';
import type { z } from 'zod';
import type { AppContext } from '../context.js';
import { createEmqxClient, PROBE_CLIENT_TUNING } from '../../broker/emqx.js';
import { checkAuthorization } from '../../broker/authorization.js';
import { isBrokerSyncPending } from '../../broker/reconcile.js';
import { requestBrokerSync } from '../../jobs/broker-requests.js';
import { MqttDisabledError } from '../../domain/errors.js';
import { createRepositories } from '../../repositories/index.js';
import { replyWithJob, waitQuery } from './jobs.js';
import { brokerStatusSchema, errorResponses, jobAnswers, json } from '../schemas.js';

export type BrokerState = 'disabled' | 'synced' | 'pending' | 'error';

export interface BrokerStatus {
  enabled: boolean;
  /** disabled; error (the last sync attempt failed); pending (EMQX is behind); synced. */
  state: BrokerState;
  /** EMQX's /status answered "running"; null when MQTT is disabled (not asked). */
  reachable: boolean | null;
  /** The data epoch (restores so far) and the one EMQX reflects. */
  epoch: number;
  syncedEpoch: number;
  pending: boolean;
  pendingSeq: number;
  appliedSeq: number;
  lastError: string | null;
  lastSyncAt: string | null;
  /**
   * Whether EMQX's authorization makes a config push (it carries the node's private key)
   * safe: `ok` false with the reason when it would let other clients read it, in which
   * case pushes fail with BROKER_INSECURE. Null when MQTT is disabled or EMQX could not be
   * asked (see `reachable`).
   */
  authorization: { ok: boolean; reason: string | null } | null;
}

export async function brokerRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;
  const enabled = app.config.mqtt.enabled;
  // Built once: the client holds no connection of its own, only its configuration.
  const probe = enabled ? createEmqxClient(app.config, PROBE_CLIENT_TUNING) : undefined;

  api.get('/broker/status', { config: { scope: 'read' }, schema: {
        tags: ['broker'],
        summary: 'EMQX sync status: enabled, reachable, epochs, pending, last error',
        response: { 200: json('The sync status', brokerStatusSchema), ...errorResponses() },
      },
    }, async () => {
    const repos = createRepositories(app.uow.fork(), { serverKey: app.serverKey });
    const epoch = await repos.system.dataEpoch();
    const sync = await repos.system.brokerSyncState();
    const pending = isBrokerSyncPending(sync, epoch);
    const reachable = probe
      ? await probe.status().then(
          (s) => s.running,
          () => false,
        )
      : null;
    const authorization =
      probe && reachable
        ? await checkAuthorization(probe).then(
            (v) => (v.ok ? { ok: true, reason: null } : { ok: false, reason: v.reason }),
            () => null,
          )
        : null;
    const state: BrokerState = !enabled ? 'disabled' : sync.lastError !== null ? 'error' : pending ? 'pending' : 'synced';
    const status: BrokerStatus = {
      enabled,
      state,
      reachable,
      epoch,
      syncedEpoch: sync.syncedEpoch,
      pending,
      pendingSeq: sync.pendingSeq,
      appliedSeq: sync.appliedSeq,
      lastError: sync.lastError,
      lastSyncAt: sync.lastSyncAt,
      authorization,
    };
    return status;
  });

  api.post(
    '/broker/sync',
    {
      config: { scope: 'operate' },
      schema: {
        tags: ['broker'],
        summary: 'Request a full EMQX reconcile',
        description:
          'Answers 202 with the sync job (200 when it finished within `wait` ms). Requests coalesce: while a sync is waiting, this returns that job. 409 MQTT_DISABLED when MQTT is disabled.',
        querystring: waitQuery,
        response: jobAnswers(),
      },
    },
    async (request, reply) => {
      if (!enabled) throw new MqttDisabledError('the broker sync');
      const { wait } = request.query as z.infer<typeof waitQuery>;
      const job = await requestBrokerSync(app.queues, `requested by ${request.actor}`, request.actor);
      request.log.info({ jobId: job.id }, 'broker sync requested');
      return replyWithJob(reply, app.queues, job, wait);
    },
  );
}
