/**
 * `broker.sync`: EMQX credential and authorization sync (src/broker/reconcile.ts).
 *
 * Runs like every job inside the runner's write transaction. It writes no business data:
 * only meshq's record of what EMQX holds (broker_applied) and the sync bookkeeping, so
 * an EMQX failure rolls back nothing anyone else wrote. The failure itself is recorded by
 * `recordSyncFailure`, which the runner calls in a small transaction of its own after the
 * job's transaction rolled back.
 */
import { createEmqxClient, SYNC_CLIENT_TUNING } from '../../broker/emqx.js';
import { EmqxError } from '../../broker/emqx-client.js';
import { isBrokerSyncPending, reconcileBroker } from '../../broker/reconcile.js';
import type { Repositories } from '../../repositories/index.js';
import type { JobContext } from '../context.js';
import { SCHEDULED_SYNC_REASON, type BrokerSync } from '../payloads.js';
import { requestPushes } from '../pushes.js';

export interface BrokerSyncResult {
  created: number;
  updated: number;
  deleted: number;
  kicked: number;
  /** The data epoch EMQX now reflects. */
  epoch: number;
}

export async function syncBroker(data: BrokerSync, ctx: JobContext): Promise<BrokerSyncResult> {
  // Read before the desired state: every change counted in `seq` is then in what we read.
  const epoch = await ctx.repos.system.dataEpoch();
  const state = await ctx.repos.system.brokerSyncState();
  const nothing: BrokerSyncResult = { created: 0, updated: 0, deleted: 0, kicked: 0, epoch: state.syncedEpoch };

  if (!ctx.config.mqtt.enabled) {
    // A job left in the queue from when MQTT was enabled: EMQX is not to be talked to.
    ctx.log.info('MQTT is disabled; broker sync skipped');
    return nothing;
  }
  // A failed sync leaves lastError set even when nothing is pending (an explicit request
  // that failed): the schedule retries that too.
  if (data.reason === SCHEDULED_SYNC_REASON && !isBrokerSyncPending(state, epoch) && state.lastError === null) {
    return nothing;
  }

  const client = createEmqxClient(ctx.config, SYNC_CLIENT_TUNING, ctx.log);
  // One quick probe without retries first: when EMQX is down the job fails in
  // milliseconds instead of holding its transaction through the client's retries.
  const status = await client.status();
  if (!status.running) {
    throw new EmqxError('NOT_RUNNING', 'EMQX answered /status: not running', { status: 503, retryable: true });
  }
  const counts = await reconcileBroker(client, ctx.repos, ctx.log.child({ reason: data.reason }));
  const after = await ctx.repos.system.recordBrokerSyncApplied({ seq: state.pendingSeq, epoch, at: new Date() });
  if (isBrokerSyncPending(after, epoch)) {
    // Marked while this sync ran, after it read the database: go again once committed.
    ctx.repos.system.requestBrokerSyncAfterCommit('changes committed during the previous sync');
  }
  // A new data epoch means a restore replaced the data since the last applied sync:
  // every agent's configuration may be stale, so each dynamic node gets a push, enqueued
  // once this sync has committed (its credentials are in EMQX by then).
  if (epoch > state.syncedEpoch) await requestPushes(ctx, { all: true });
  return { ...counts, epoch };
}

/**
 * Called by the runner after the job's transaction rolled back, in a transaction of its
 * own: the status endpoint must show why EMQX is behind even though the job wrote nothing.
 */
export async function recordSyncFailure(err: unknown, repos: Repositories): Promise<void> {
  await repos.system.updateBrokerSyncState({ lastError: describeFailure(err) });
}

function describeFailure(err: unknown): string {
  if (err instanceof EmqxError) return `${err.code}: ${err.message}`.slice(0, 1000);
  return (err instanceof Error ? err.message : String(err)).slice(0, 1000);
}
