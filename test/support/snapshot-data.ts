/**
 * Snapshot helpers for tests and benchmarks: a generator of valid business rows in the
 * snapshot's shape (current schema, column names), files encoded from them, multipart
 * uploads for Fastify's inject, and dumps of a database's business rows to compare.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { v7 as uuidv7 } from 'uuid';
import type { AppContext } from '../../src/bin/bootstrap.js';
import { createRepositories } from '../../src/repositories/index.js';
import { encryptSecret } from '../../src/domain/secrets.js';
import { LATEST_SCHEMA_VERSION } from '../../src/migrations/index.js';
import { TEST_SECRET_KEY } from './db.js';
import { deriveKey, newKdfParams } from '../../src/crypto.js';
import { SNAPSHOT_FORMAT_VERSION } from '../../src/snapshots/container.js';
import type { SnapshotPayload } from '../../src/snapshots/payload.js';
import { encodeSnapshot } from '../../src/snapshots/writer.js';
import type { SnapshotRow, SnapshotTables } from '../../src/snapshots/tables.js';
import { selectTable, snapshotRows } from '../../src/repositories/snapshot-rows.js';

export interface GenerateOptions {
  configs?: number;
  nodesPerConfig?: number;
  /** Each node is paired with this many following nodes (two link rows per pair). */
  neighbours?: number;
  forwardsPerNode?: number;
  audit?: number;
  settings?: number;
  /** api_token rows, as files from before tokens left snapshots carry them (none by default). */
  tokens?: number;
  /** Prefix for names, so two generated sets differ visibly. */
  label?: string;
  /** The SECRET_KEY node private keys are sealed under (as meshq stores them); the tests' by default. */
  serverKey?: Buffer;
  /** Every n-th node is static (no credential); 0: all dynamic. */
  staticEvery?: number;
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
/** Dates with milliseconds that are not zero: a restore that loses them shows. */
const at = (base: number, i: number) => new Date(base + i * 1_003 + 7).toISOString();

/** Valid rows for every business table at the current schema. */
export function generateBusinessTables(opts: GenerateOptions = {}): SnapshotTables {
  const o = { configs: 1, nodesPerConfig: 10, neighbours: 2, forwardsPerNode: 1, audit: 20, settings: 4, tokens: 0, label: 'gen', staticEvery: 4, ...opts };
  const base = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
  const serverKey = o.serverKey ?? Buffer.from(TEST_SECRET_KEY, 'hex');
  const tables: SnapshotTables = {
    setting: [],
    mesh_config: [],
    node: [],
    peer_link: [],
    mqtt_credential: [],
    port_forward_rule: [],
    audit_record: [],
  };
  const settingValues: unknown[] = ['text', 42, { nested: { on: true, list: [1, 'two', null] } }, [1, 2, 3], true, 'Zürich ↔ 東京 🛰️'];
  for (let s = 0; s < o.settings; s++) {
    tables.setting!.push({ key: `${o.label}.setting.${s}`, value: settingValues[s % settingValues.length], updated_at: at(base, s) });
  }
  for (let c = 0; c < o.configs; c++) {
    const configId = uuidv7();
    const awg = c % 2 === 1;
    tables.mesh_config!.push({
      id: configId,
      name: `${o.label}-config-${c}`,
      subnet: `10.${c % 250}.0.0/16`,
      listen_port: 51820 + c,
      dns: ['1.1.1.1', `10.${c % 250}.0.1`],
      protocol: awg ? 'amneziawg' : 'wireguard',
      awg: awg ? { jc: 4, jmin: 40, jmax: 70, s1: 0, s2: 0, h1: 5, h2: 6, h3: 7, h4: 8 } : null,
      mtu: 1280 + c,
      created_at: at(base, c),
      updated_at: at(base, c + 1),
    });
    const nodes: { id: string; address: string; dynamic: boolean }[] = [];
    for (let n = 0; n < o.nodesPerConfig; n++) {
      const id = uuidv7();
      const host = n + 2;
      const address = `10.${c % 250}.${host >> 8}.${host & 255}`;
      const dynamic = o.staticEvery === 0 || n % o.staticEvery !== o.staticEvery - 1;
      nodes.push({ id, address, dynamic });
      tables.node!.push({
        id,
        config_id: configId,
        name: `${o.label}-node-${n}`,
        kind: dynamic ? 'dynamic' : 'static',
        address,
        endpoint: dynamic ? null : `host-${n}.example.net:51820`,
        listen_port: dynamic ? null : 51820,
        public_key: randomBytes(32).toString('base64'),
        private_key_enc: encryptSecret(randomBytes(32).toString('base64'), serverKey),
        client_initialized: n % 2 === 0,
        online: n % 3 === 0,
        last_seen_at: n % 3 === 0 ? at(base, n) : null,
        created_at: at(base, n),
        updated_at: at(base, n + 2),
      });
      if (dynamic) {
        tables.mqtt_credential!.push({
          id: uuidv7(),
          node_id: id,
          username: `node-${id}`,
          client_id: `node-${id}`,
          password_hash: hex(32),
          salt: hex(16),
          version: 1 + (n % 3),
          rotated_at: at(base, n),
        });
      }
    }
    for (let i = 0; i < nodes.length; i++) {
      for (let k = 1; k <= o.neighbours && i + k < nodes.length; k++) {
        const a = nodes[i]!;
        const b = nodes[i + k]!;
        const group = uuidv7();
        for (const [from, to] of [[a, b], [b, a]] as const) {
          tables.peer_link!.push({
            id: uuidv7(),
            config_id: configId,
            from_node_id: from.id,
            to_node_id: to.id,
            link_group_id: group,
            allowed_ips: [`${to.address}/32`],
            persistent_keepalive: (i + k) % 5 === 0 ? null : 25,
          });
        }
      }
      for (let f = 0; f < o.forwardsPerNode && nodes.length > 1; f++) {
        const to = nodes[(i + 1) % nodes.length]!;
        tables.port_forward_rule!.push({
          id: uuidv7(),
          config_id: configId,
          from_node_id: nodes[i]!.id,
          from_port: 1000 + f,
          to_node_id: to.id,
          to_port: 20000 + i * o.forwardsPerNode + f,
          protocol: f % 2 === 0 ? 'tcp' : 'udp',
          enabled: f % 3 !== 2,
          created_at: at(base, i),
        });
      }
    }
  }
  if (o.tokens > 0) tables.api_token = [];
  for (let t = 0; t < o.tokens; t++) {
    tables.api_token!.push({
      id: uuidv7(),
      name: `${o.label}-token-${t}`,
      token_hash: createHash('sha256').update(`${o.label}-${t}-${hex(8)}`).digest('hex'),
      scopes: ['admin'],
      created_at: at(base, t),
      last_used_at: t % 2 === 0 ? null : at(base, t + 5),
    });
  }
  for (let a = 0; a < o.audit; a++) {
    tables.audit_record!.push({
      id: uuidv7(),
      at: at(base, a),
      actor: a % 2 === 0 ? 'admin' : 'token:0192',
      action: a % 3 === 0 ? 'node.create' : 'config.update',
      entity_type: a % 3 === 0 ? 'node' : 'config',
      entity_id: a % 7 === 0 ? null : uuidv7(),
      detail: { n: a, changed: ['name', 'dns'], note: `${o.label} record ${a}` },
    });
  }
  return tables;
}

export const rowCount = (tables: SnapshotTables) => Object.values(tables).reduce((n, rows) => n + rows.length, 0);

/** Cheap scrypt for tests (the format accepts any N >= 2). */
export const TEST_KDF = { N: 2 ** 10 };

export function snapshotPayload(tables: SnapshotTables, schemaVersion = LATEST_SCHEMA_VERSION): SnapshotPayload {
  return {
    formatVersion: SNAPSHOT_FORMAT_VERSION,
    schemaVersion,
    appVersion: '0.1.0',
    createdAt: new Date().toISOString(),
    counts: Object.fromEntries(Object.entries(tables).map(([t, rows]) => [t, rows.length])),
    tables,
  };
}

/** A snapshot file of these rows that `password` opens. */
export async function encodeTestSnapshot(tables: SnapshotTables, password: string, schemaVersion = LATEST_SCHEMA_VERSION): Promise<Buffer> {
  const kdf = newKdfParams(TEST_KDF);
  return encodeSnapshot(snapshotPayload(tables, schemaVersion), await deriveKey(password, kdf), kdf);
}

/** A multipart/form-data body for inject(). */
export function multipartBody(parts: { name: string; value: string | Buffer; filename?: string }[]): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----meshq${hex(12)}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const disposition = `form-data; name="${part.name}"${part.filename ? `; filename="${part.filename}"` : ''}`;
    const type = part.filename ? 'Content-Type: application/octet-stream\r\n' : '';
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n${type}\r\n`));
    chunks.push(typeof part.value === 'string' ? Buffer.from(part.value) : part.value);
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

/** POST /api/v1/snapshots/restore with a file and a password. */
export function uploadSnapshot(api: FastifyInstance, auth: Record<string, string>, file: Buffer, password: string, query = '') {
  const body = multipartBody([
    { name: 'password', value: password },
    { name: 'file', value: file, filename: 'snapshot.meshq' },
  ]);
  return api.inject({ method: 'POST', url: `/api/v1/snapshots/restore${query}`, payload: body.payload, headers: { ...auth, ...body.headers } });
}

/**
 * Every business row as the snapshot carries it, read in one consistent read by plain
 * SELECTs and converted in JS: a reader independent of the export's JSON paths (COPY text,
 * SQLite's json_object), to compare them with. Sorted by key.
 */
export async function businessRows(app: Pick<AppContext, 'uow' | 'serverKey'>): Promise<SnapshotTables> {
  return app.uow.read(async (em) => {
    const tables: SnapshotTables = {};
    for (const spec of createRepositories(em, { serverKey: app.serverKey }).snapshots.tableSpecs()) {
      tables[spec.table] = snapshotRows(em, spec, await em.execute<SnapshotRow[]>(selectTable(em, spec)));
    }
    return tables;
  });
}

/** Rows of a generated set as the database returns them: ordered by primary key. */
export function sortedByKey(tables: SnapshotTables): SnapshotTables {
  const keyOf = (table: string, row: Record<string, unknown>) => String(table === 'setting' ? row.key : row.id);
  return Object.fromEntries(
    Object.entries(tables).map(([t, rows]) => [t, [...rows].sort((a, b) => (keyOf(t, a) < keyOf(t, b) ? -1 : keyOf(t, a) > keyOf(t, b) ? 1 : 0))]),
  );
}
