import { ConflictError, InvalidError, NotFoundError } from '../../domain/errors.js';
import { allocateAddress, validateRequestedAddress } from '../../domain/allocation.js';
import { generateKeyPair } from '../../domain/keys.js';
import type { ConfigView } from '../../repositories/configs.js';
import type { NodeView } from '../../repositories/nodes.js';
import { generateSecret, hashMqttPassword, newSalt } from '../../domain/secrets.js';
import type { JobContext } from '../context.js';
import type { ById, NodeCreate, NodePresence, NodeRotateCredentials, NodeUpdate } from '../payloads.js';
import { requestPushes, requestResend } from '../pushes.js';

async function assertNameFree(ctx: JobContext, config: ConfigView, name: string, exceptId?: string): Promise<void> {
  const other = await ctx.repos.nodes.findByName(config.id, name);
  if (other && other.id !== exceptId) {
    throw new ConflictError(`a node named "${name}" already exists in config "${config.name}"`, { nodeId: other.id });
  }
}

/** WireGuard tells a node's peers apart by public key: two nodes of a config never share one. */
async function assertPublicKeyFree(ctx: JobContext, configId: string, publicKey: string, exceptId?: string): Promise<void> {
  const other = await ctx.repos.nodes.findByPublicKey(configId, publicKey);
  if (other && other.id !== exceptId) {
    throw new ConflictError(`node "${other.name}" of this config already has public key ${publicKey}`, { nodeId: other.id });
  }
}

/**
 * A requested address is checked against the subnet first (INVALID: the request can
 * never succeed), then against the other nodes (CONFLICT, naming the holder).
 */
async function addressFor(ctx: JobContext, config: ConfigView, requested: string | undefined): Promise<string> {
  if (requested === undefined) {
    return allocateAddress(config.subnet, await ctx.repos.nodes.takenAddresses(config.id), { configName: config.name });
  }
  const address = validateRequestedAddress(config.subnet, requested, [], config.name);
  const holder = await ctx.repos.nodes.findByAddress(config.id, address);
  if (holder) {
    throw new ConflictError(`address ${address} is already used by node "${holder.name}" in config "${config.name}"`, {
      nodeId: holder.id,
    });
  }
  return address;
}

/**
 * The initial MQTT password is random and thrown away at once: nobody can log in with it.
 * A dynamic node becomes usable when the administrator rotates its credentials, which is
 * the only moment a password is ever shown.
 */
function unusableInitialCredential(): { passwordHash: string; salt: string } {
  const salt = newSalt();
  return { passwordHash: hashMqttPassword(generateSecret(), salt), salt };
}

export async function createNode(data: NodeCreate, ctx: JobContext): Promise<{ id: string; address: string }> {
  // Locked: the lowest free address and the name check must not race a parallel node.create.
  const config = await ctx.repos.configs.requireForUpdate(data.configId);
  await assertNameFree(ctx, config, data.name);
  const address = await addressFor(ctx, config, data.address);
  // A public key given: the node's agent holds the private key and meshq keeps none.
  if (data.publicKey !== undefined) await assertPublicKeyFree(ctx, config.id, data.publicKey);
  const keys = data.publicKey === undefined ? generateKeyPair() : { publicKey: data.publicKey, privateKey: null };
  const id = ctx.repos.nodes.create({
    configId: config.id,
    name: data.name,
    kind: data.kind,
    address,
    endpoint: data.endpoint ?? null,
    listenPort: data.listenPort ?? null,
    publicKey: keys.publicKey,
    privateKey: keys.privateKey,
  });
  if (data.kind === 'dynamic') {
    ctx.repos.credentials.create(id, unusableInitialCredential());
    await ctx.repos.system.markBrokerSyncPending(`node.create ${id}`);
    // Its agent gets its interface as soon as it connects (its peers come with mesh.generate or link.create).
    await requestPushes(ctx, { dynamicNodeIds: [id] });
  }
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'node.create',
    entityType: 'node',
    entityId: id,
    detail: { configId: config.id, name: data.name, kind: data.kind, address, publicKey: keys.publicKey, keyMode: keys.privateKey === null ? 'agent' : 'server' },
  });
  return { id, address };
}

export async function updateNode(data: NodeUpdate, ctx: JobContext): Promise<{ id: string }> {
  const { id, publicKey, ...rest } = data;
  // A new public key is the agent's rotation; for a node whose key meshq held, meshq
  // forgets that private key and the agent holds the node's key from now on.
  const patch = publicKey === undefined ? rest : { ...rest, publicKey, privateKey: null };
  const renamed = patch.name !== undefined;
  if (renamed || publicKey !== undefined) {
    // A rename or a new key is checked against the config's other nodes under the
    // config's lock; other changes need no read.
    const node = await ctx.repos.nodes.require(id);
    if ((renamed && patch.name !== node.name) || (publicKey !== undefined && publicKey !== node.publicKey)) {
      const config = await ctx.repos.configs.requireForUpdate(node.configId);
      if (patch.name !== undefined) await assertNameFree(ctx, config, patch.name, id);
      if (publicKey !== undefined) await assertPublicKeyFree(ctx, config.id, publicKey, id);
    }
  }
  const updated = await ctx.repos.nodes.update(id, patch);
  if (!updated) throw new NotFoundError('node', id);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'node.update',
    entityType: 'node',
    entityId: id,
    detail: { configId: updated.configId, name: updated.name, changes: publicKey === undefined ? rest : { ...rest, publicKey } },
  });
  // Its own interface (name, listen port) and its peers' view of it (endpoint, name) may have changed.
  await requestPushes(ctx, { nodeAndPeers: id });
  return { id };
}

/** Links, forwards and the credential go with the node (ON DELETE CASCADE). */
export async function deleteNode(data: ById, ctx: JobContext): Promise<{ id: string }> {
  const node = await ctx.repos.nodes.get(data.id);
  if (!node) throw new NotFoundError('node', data.id);
  const hadCredential = (await ctx.repos.credentials.forNode(node.id)) !== undefined;
  // Before the delete: the links that say who its peers were go with it.
  await requestPushes(ctx, { peersOf: node.id });
  await ctx.repos.nodes.delete(node.id);
  if (hadCredential) await ctx.repos.system.markBrokerSyncPending(`node.delete ${node.id}`);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'node.delete',
    entityType: 'node',
    entityId: node.id,
    detail: { configId: node.configId, name: node.name, kind: node.kind, address: node.address },
  });
  return { id: node.id };
}

/**
 * A new key pair for a node whose key meshq holds (private key encrypted at rest as at
 * creation). Its peers get the new public key and the node itself the new private key,
 * by push (dynamic nodes) or in their wireguard.conf. A node whose agent holds its key
 * rotates by node.update {publicKey}: meshq has no private key to replace.
 */
export async function rotateKeys(data: ById, ctx: JobContext): Promise<{ id: string; publicKey: string }> {
  const node = await ctx.repos.nodes.require(data.id);
  if (node.keyMode === 'agent') {
    throw new InvalidError(
      `node "${node.name}" (${node.id}) holds its own key (key mode agent): its agent rotates it with node.update {id, publicKey}`,
    );
  }
  const keys = generateKeyPair();
  await ctx.repos.nodes.update(node.id, { publicKey: keys.publicKey, privateKey: keys.privateKey });
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'node.rotate-keys',
    entityType: 'node',
    entityId: node.id,
    detail: { configId: node.configId, name: node.name, previousPublicKey: node.publicKey, publicKey: keys.publicKey },
  });
  await requestPushes(ctx, { nodeAndPeers: node.id });
  return { id: node.id, publicKey: keys.publicKey };
}

function assertDynamic(node: NodeView): void {
  if (node.kind !== 'dynamic') {
    throw new InvalidError(`node "${node.name}" (${node.id}) is static; only dynamic nodes have MQTT credentials`);
  }
}

export async function rotateCredentials(
  data: NodeRotateCredentials,
  ctx: JobContext,
): Promise<{ nodeId: string; username: string; version: number }> {
  const node = await ctx.repos.nodes.require(data.nodeId);
  assertDynamic(node);
  const credential = await ctx.repos.credentials.rotate(node.id, { passwordHash: data.passwordHash, salt: data.salt });
  await ctx.repos.system.markBrokerSyncPending(`node.rotate-credentials ${node.id}`);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'node.rotate-credentials',
    entityType: 'node',
    entityId: node.id,
    detail: { configId: node.configId, name: node.name, username: credential.username, version: credential.version },
  });
  return { nodeId: node.id, username: credential.username, version: credential.version };
}

/**
 * Records a node's presence; only a change of state (online <-> offline) is audited, so a
 * node that repeats its status, or flaps faster than the link's coalescing window, costs
 * no audit rows beyond its real transitions. An event older than the recorded one
 * changes nothing.
 */
export async function recordPresence(data: NodePresence, ctx: JobContext): Promise<{ nodeId: string; online: boolean }> {
  const before = await ctx.repos.nodes.get(data.nodeId);
  if (!before) throw new NotFoundError('node', data.nodeId);
  const state = await ctx.repos.nodes.recordPresence(data.nodeId, data.online, new Date(data.at));
  if (!state) throw new NotFoundError('node', data.nodeId);
  if (state.applied && before.online !== state.online) {
    ctx.repos.audit.record({
      actor: ctx.actor,
      action: 'node.presence',
      entityType: 'node',
      entityId: data.nodeId,
      detail: { online: state.online, at: data.at },
    });
    // A push sent while the agent was away may never have reached it.
    if (state.online && before.kind === 'dynamic') await requestResend(ctx, data.nodeId);
  }
  return { nodeId: data.nodeId, online: state.online };
}
