/**
 * Broker-sync data for tests and benchmarks: many dynamic nodes with MQTT credentials,
 * written straight into the tables a thousand rows per statement (node.create jobs would
 * spend the time generating keys the sync never reads).
 */
import type { UnitOfWork } from '../../src/db/unit-of-work.js';
import { newId } from '../../src/domain/ids.js';
import { MqttCredential, Node } from '../../src/domain/entities/mesh.js';
import { createRepositories } from '../../src/repositories/index.js';
import { hashMqttPassword, newSalt } from '../../src/domain/secrets.js';

/**
 * `count` dynamic nodes in the config (addresses from 10.64.0.1 on; the config's subnet is
 * not checked here), each with a credential, and the broker sync marked pending.
 */
export async function seedDynamicNodes(uow: UnitOfWork, configId: string, count: number): Promise<void> {
  const now = new Date();
  await uow.write(async (em) => {
    for (let i = 0; i < count; i += 1000) {
      const nodes = [];
      const credentials = [];
      for (let k = i; k < Math.min(count, i + 1000); k++) {
        const id = newId();
        const salt = newSalt();
        const username = `node-${id}`;
        nodes.push({
          id,
          config: configId,
          name: `bulk-${k}`,
          kind: 'dynamic',
          address: `10.64.${(k + 1) >> 8}.${(k + 1) & 255}`,
          endpoint: null,
          listenPort: null,
          publicKey: 'k'.repeat(44),
          privateKeyEnc: 'v1:unused',
          clientInitialized: false,
          online: false,
          lastSeenAt: null,
          createdAt: now,
          updatedAt: now,
        });
        credentials.push({ id: newId(), node: id, username, clientId: username, passwordHash: hashMqttPassword(`pw-${k}`, salt), salt, version: 1, rotatedAt: now });
      }
      await em.insertMany(Node, nodes);
      await em.insertMany(MqttCredential, credentials);
    }
    await createRepositories(em, { serverKey: Buffer.alloc(32) }).system.markBrokerSyncPending(`seeded ${count} credentials`);
  });
}
