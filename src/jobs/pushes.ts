/**
 * Config pushes follow every change: a processor whose change alters what some dynamic
 * node should run calls `requestPushes` inside its transaction, naming who is affected.
 * One statement writes a push request for every receiver into the push_request outbox
 * (src/repositories/node-sync.ts), in the job's transaction: the data the job saw (before
 * a delete cascades away the links that name them), and a request that commits exactly
 * when the change does. After commit one `node.push-configs` batch is enqueued
 * (deduplicated: one waiting, one more kept while one runs); the batch serves the
 * requests page by page (src/jobs/processors/push-config.ts). Nothing is written with
 * MQTT disabled.
 *
 * Coalesced per node: a node has at most one request row, which every further request
 * joins, and the batch reads the node's state when it runs, so a burst of N changes gives
 * each node a few pushes, the last with the final state. A push whose content did not
 * change since the node's last published revision publishes nothing, so asking too
 * broadly costs a read, never a message. A request lost between commit and enqueue (a
 * crash) still waits in the database: a worker asks for a batch whenever its MQTT link
 * connects.
 *
 * Who asks: node.create (the node), node.update and key changes (the node and its
 * peers), node.delete (its peers, read before the delete), config.update (every node of
 * the config), mesh.generate and link changes (the nodes whose links changed), and the
 * broker sync that applies a restore (every node). config.delete asks nobody: every node
 * that could hear of it goes with it. Port-forward rules are not part of a push, so
 * their jobs ask nobody either.
 */
import type { Queue } from 'bullmq';
import type { JobContext } from './context.js';

/** Who a change affects. Static nodes and ids that do not exist are left out. */
export type PushTarget =
  /** These nodes (read: static and unknown ones are left out). */
  | { readonly nodeIds: readonly string[] }
  /** These nodes, which the caller knows are dynamic (no read: a node created in this job). */
  | { readonly dynamicNodeIds: readonly string[] }
  /** A node and every node linked to it in either direction (its peers). */
  | { readonly nodeAndPeers: string }
  /**
   * Every node linked to this one, not the node itself: for `node.delete`, called BEFORE
   * the delete (the links that say who its peers were go with it).
   */
  | { readonly peersOf: string }
  /** Every dynamic node of a config. */
  | { readonly configId: string }
  /** Every dynamic node (a restore replaced the data). */
  | { readonly all: true };

/** The deduplication id of a node's own pushes (`node.push-config`): one waiting and one running per node at most. */
export const pushDeduplicationId = (nodeId: string): string => `push-${nodeId}`;

/** The deduplication id of the push batches: one waiting and one running at most. */
export const PUSH_BATCH_DEDUPLICATION_ID = 'push-configs';

/**
 * Requests a push to every dynamic node `target` names, written now in the calling job's
 * transaction and served by a batch enqueued after commit (never on rollback). Call it
 * inside the processor, after the change, or for `peersOf` before the delete. Returns how
 * many nodes got a push request (0 with MQTT disabled: nothing is ever enqueued for the
 * broker then).
 */
export async function requestPushes(ctx: JobContext, target: PushTarget): Promise<number> {
  if (!ctx.config.mqtt.enabled) return 0;
  const sync = ctx.repos.nodeSync;
  const marked = 'dynamicNodeIds' in target ? await sync.requestPushesForNew(target.dynamicNodeIds) : await sync.requestPushes(target);
  if (marked > 0) {
    requestBatch(ctx);
    ctx.log.debug({ nodes: marked }, 'config pushes requested');
  }
  return marked;
}

/** One batch per job, however many times the job asked. */
const batchRequested = new WeakSet<JobContext>();
function requestBatch(ctx: JobContext): void {
  if (batchRequested.has(ctx)) return;
  batchRequested.add(ctx);
  ctx.enqueue('node.push-configs', {});
}

/** Enough for every node of a large deployment; the rest wait out their own backoff. */
const MAX_PROMOTED = 10_000;

/**
 * Asks for the node's current revision to be published again if its agent has not
 * acknowledged it: for a node that comes online (a push sent while it was away may never
 * have reached it). Enqueued after commit; nothing with MQTT disabled.
 */
export async function requestResend(ctx: JobContext, nodeId: string): Promise<boolean> {
  if (!ctx.config.mqtt.enabled) return false;
  const sync = await ctx.repos.nodeSync.view(nodeId);
  if (sync.desired === 0 || (sync.applied ?? 0) >= sync.desired) return false;
  await ctx.repos.nodeSync.requestPushes({ nodeIds: [nodeId] }, { resend: true });
  requestBatch(ctx);
  return true;
}

/**
 * Runs every push that is waiting out its retry backoff now: called when this process's
 * MQTT link (re)connects (`queue`: the pushes' queue, from the job table), so that a push that failed while the broker was away goes out
 * as soon as it is back instead of at the end of its backoff.
 */
export async function promoteDelayedPushes(queue: Queue): Promise<number> {
  let promoted = 0;
  // One bounded pass: promoting removes jobs from the delayed set, so paging would skip.
  for (const job of await queue.getDelayed(0, MAX_PROMOTED - 1)) {
    if (job?.name !== 'node.push-config' && job?.name !== 'node.push-configs') continue;
    // Another process may have promoted it (or a worker taken it) meanwhile.
    if (await job.promote().then(() => true, () => false)) promoted++;
  }
  return promoted;
}
