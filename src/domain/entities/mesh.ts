import { defineEntity, p } from '@mikro-orm/core';

/**
 * Relations are mapped to primary keys (`mapToPk`): processors and snapshots move ids,
 * not object graphs, and bulk work (mesh.generate, restore) never has to load the other
 * side. Deleting a config or a node cascades in the database, so a delete is one
 * statement however large the mesh is.
 */
const now = () => new Date();

export const MeshConfigSchema = defineEntity({
  name: 'MeshConfig',
  tableName: 'mesh_config',
  properties: {
    id: p.uuid().primary(),
    name: p.string().length(64).unique(),
    subnet: p.string().length(64),
    listenPort: p.integer(),
    dns: p.json<string[]>(),
    protocol: p.string().length(16),
    awg: p.json<Record<string, number>>().nullable(),
    /** Tunnel MTU (Migration20261124200000_config_mtu); WireGuard's usual 1420 by default. */
    mtu: p.integer().default(1420),
    createdAt: p.datetime().length(3).onCreate(now),
    updatedAt: p.datetime().length(3).onCreate(now).onUpdate(now),
  },
});
export class MeshConfig extends MeshConfigSchema.class {}
MeshConfigSchema.setClass(MeshConfig);

export const NodeSchema = defineEntity({
  name: 'Node',
  tableName: 'node',
  properties: {
    id: p.uuid().primary(),
    config: () => p.manyToOne(MeshConfigSchema).mapToPk().deleteRule('cascade').index(),
    name: p.string().length(64),
    kind: p.string().length(16),
    address: p.string().length(64),
    endpoint: p.string().length(300).nullable(),
    listenPort: p.integer().nullable(),
    publicKey: p.string().length(64),
    /** Null when the node's agent holds its own key (node.create with publicKey). */
    privateKeyEnc: p.text().nullable(),
    clientInitialized: p.boolean().default(false),
    online: p.boolean().default(false),
    lastSeenAt: p.datetime().length(3).nullable(),
    createdAt: p.datetime().length(3).onCreate(now),
    updatedAt: p.datetime().length(3).onCreate(now).onUpdate(now),
  },
  uniques: [
    { name: 'node_config_name_unique', properties: ['config', 'name'] },
    { name: 'node_config_address_unique', properties: ['config', 'address'] },
  ],
});
export class Node extends NodeSchema.class {}
NodeSchema.setClass(Node);

export const PeerLinkSchema = defineEntity({
  name: 'PeerLink',
  tableName: 'peer_link',
  properties: {
    id: p.uuid().primary(),
    config: () => p.manyToOne(MeshConfigSchema).mapToPk().deleteRule('cascade').index(),
    // No index of its own: the (from, to) unique index starts with it (the ORM would add
    // one on SQLite, and every mesh.generate row would pay for it).
    fromNode: () => p.manyToOne(NodeSchema).mapToPk().deleteRule('cascade').index(false),
    // SQLite only: PostgreSQL finds the links to a node from its config's nodes instead
    // (declarePeerLinkReferences in src/migrations/peer-link-references.ts).
    toNode: () => p.manyToOne(NodeSchema).mapToPk().deleteRule('cascade').index(),
    // No index: link.delete finds a pair through the (from, to) unique index.
    linkGroupId: p.uuid(),
    allowedIps: p.json<string[]>(),
    persistentKeepalive: p.integer().nullable(),
  },
  uniques: [{ name: 'peer_link_from_to_unique', properties: ['fromNode', 'toNode'] }],
});
export class PeerLink extends PeerLinkSchema.class {}
PeerLinkSchema.setClass(PeerLink);

export const MqttCredentialSchema = defineEntity({
  name: 'MqttCredential',
  tableName: 'mqtt_credential',
  properties: {
    id: p.uuid().primary(),
    node: () => p.oneToOne(NodeSchema).mapToPk().owner().deleteRule('cascade').unique(),
    username: p.string().length(64).unique(),
    clientId: p.string().length(64),
    passwordHash: p.string().length(64),
    salt: p.string().length(64),
    version: p.integer().default(1),
    rotatedAt: p.datetime().length(3),
  },
});
export class MqttCredential extends MqttCredentialSchema.class {}
MqttCredentialSchema.setClass(MqttCredential);

export const PortForwardRuleSchema = defineEntity({
  name: 'PortForwardRule',
  tableName: 'port_forward_rule',
  properties: {
    id: p.uuid().primary(),
    config: () => p.manyToOne(MeshConfigSchema).mapToPk().deleteRule('cascade').index(),
    fromNode: () => p.manyToOne(NodeSchema).mapToPk().deleteRule('cascade').index(),
    fromPort: p.integer(),
    toNode: () => p.manyToOne(NodeSchema).mapToPk().deleteRule('cascade'),
    toPort: p.integer(),
    protocol: p.string().length(8),
    enabled: p.boolean().default(true),
    createdAt: p.datetime().length(3).onCreate(now),
  },
  uniques: [{ name: 'port_forward_to_unique', properties: ['toNode', 'toPort', 'protocol'] }],
});
export class PortForwardRule extends PortForwardRuleSchema.class {}
PortForwardRuleSchema.setClass(PortForwardRule);
