/**
 * Config pushes follow every change: a processor whose change alters what some dynamic
 * node should run calls `requestPushes` inside its transaction, naming who is affected.
 * The receivers are read there (the data the job saw, before a delete cascades away the
 * links that name them) and one `node.push-config` per node is enqueued once the job
 * commits; nothing is enqueued on rollback or with MQTT disabled.
 *
 * Coalesced per node: every push of a node shares the deduplication id `push-<nodeId>`
 * with `keepLastIfActive` (its job table row). While a node's push waits, further
 * requests join it; while one runs, one more is kept to run after it. The push reads the
 * node's state when it runs, so a burst of N changes gives each node at most a couple of
 * pushes, the last with the final state. A push whose content did not change since the
 * node's last published revision publishes nothing (push-config.ts), so asking too
 * broadly costs a read, never a message.
 *
 * Who asks: node.create (the node), node.update and key changes (the node and its
 * peers), node.delete (its peers, read before the delete), config.update (every node of
 * the config), mesh.generate and link changes (the nodes whose links changed), and the
 * broker sync that applies a restore (every node). config.delete asks nobody: every node
 * that could hear of it goes with it. Port-forward rules are not part of a push, so
 * their jobs ask nobody either.
 */
import type { JobContext } from './context.js';
import type { Queue } from 'bullmq';

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

/** The deduplication id of a node's pushes: one waiting and one running per node at most. */
export const pushDeduplicationId = (nodeId: string): string => `push-${nodeId}`;

/**
 * Requests a push to every dynamic node `target` names, enqueued after the calling job
 * commits (never on rollback). Call it inside the processor, after the change, or for
 * `peersOf` before the delete. Returns how many nodes will get a push request (0 with
 * MQTT disabled: nothing is ever enqueued for the broker then).
 */
export async function requestPushes(ctx: JobContext, target: PushTarget): Promise<number> {
  if (!ctx.config.mqtt.enabled) return 0;
  const nodeIds = await receivers(ctx, target);
  for (const nodeId of nodeIds) ctx.enqueue('node.push-config', { nodeId });
  if (nodeIds.length > 0) ctx.log.debug({ nodes: nodeIds.length }, 'config pushes requested');
  return nodeIds.length;
}

async function receivers(ctx: JobContext, target: PushTarget): Promise<string[]> {
  const sync = ctx.repos.nodeSync;
  if ('nodeIds' in target) return sync.dynamicAmong(target.nodeIds);
  if ('dynamicNodeIds' in target) return [...new Set(target.dynamicNodeIds)];
  if ('nodeAndPeers' in target) {
    const [self, peers] = [await sync.dynamicAmong([target.nodeAndPeers]), await sync.dynamicPeersOf(target.nodeAndPeers)];
    return [...self, ...peers];
  }
  if ('peersOf' in target) return sync.dynamicPeersOf(target.peersOf);
  if ('configId' in target) return (await ctx.repos.nodes.dynamicNodes(target.configId)).map((n) => n.id);
  return (await ctx.repos.nodes.dynamicNodes()).map((n) => n.id);
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
  ctx.enqueue('node.push-config', { nodeId, resend: true });
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
    if (job?.name !== 'node.push-config') continue;
    // Another process may have promoted it (or a worker taken it) meanwhile.
    if (await job.promote().then(() => true, () => false)) promoted++;
  }
  return promoted;
}
