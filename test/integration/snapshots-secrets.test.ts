/**
 * Snapshots keep their secrets: no snapshot password, no data key (derived or sealed)
 * and no row that only a snapshot carries ever reaches Redis (job data, results,
 * progress, events) or the logs of the API and the workers, even at trace level and
 * even for a refused upload.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ADMIN_NAME } from '../../src/repositories/admin-account.js';
import { createRepositories } from '../../src/repositories/index.js';
import { REDACTED_PATHS } from '../../src/logger.js';
import { deriveKey } from '../../src/crypto.js';
import { readHeader } from '../../src/snapshots/container.js';
import { DIALECTS } from '../support/db.js';
import { dumpPrefix } from '../support/redis.js';
import { encodeTestSnapshot, generateBusinessTables, uploadSnapshot } from '../support/snapshot-data.js';
import { memorySink, startStack, type JobView, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'admin-pw-Secret-7f3a9c';
const FILE_PASSWORD = 'file-pw-Secret-51d2e8';
const WRONG_PASSWORD = 'wrong-pw-Secret-0b6c4d';
const MARKER = 'snapshot-only-marker-e41f';

describe.each(DIALECTS)('snapshot secrets on %s', (dialect) => {
  let s: Stack;
  let logs = '';

  beforeAll(async () => {
    const sink = memorySink((text) => (logs += text));
    // The application's redaction, at trace level, into memory: API and workers both log here.
    const log = pino({ level: 'trace', redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, sink);
    s = await startStack(dialect, 'snap_secrets', { adminPassword: ADMIN_PASSWORD, app: (app) => ({ ...app, log }) });
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('exports and restores without a password, key or snapshot-only row in Redis or the logs', async () => {
    expect((await s.job('config.create', { name: 'visible-config', subnet: '10.3.0.0/24' })).state).toBe('completed');

    // An export, downloaded and restored with the administrator password.
    const exported = await s.call({ method: 'POST', url: '/api/v1/snapshots/export?wait=20000' });
    const { snapshotId } = exported.json<JobView>().result as { snapshotId: string };
    const ownFile = (await s.call({ method: 'GET', url: `/api/v1/snapshots/${snapshotId}/download` })).rawPayload;
    expect((await uploadSnapshot(s.api, s.auth, ownFile, ADMIN_PASSWORD, '?wait=20000')).json<JobView>().state).toBe('completed');

    // A foreign file with rows that exist nowhere but in the file, and its own password.
    const foreign = generateBusinessTables({ configs: 1, nodesPerConfig: 8, label: MARKER, serverKey: s.app.serverKey });
    foreign.setting!.push({ key: `${MARKER}.key`, value: { secret: `${MARKER}-value` }, updated_at: new Date().toISOString() });
    const foreignFile = await encodeTestSnapshot(foreign, FILE_PASSWORD);
    const refused = await uploadSnapshot(s.api, s.auth, foreignFile, WRONG_PASSWORD);
    expect(refused.statusCode).toBe(400);
    expect(refused.body).not.toContain(WRONG_PASSWORD);
    const restored = await uploadSnapshot(s.api, s.auth, foreignFile, FILE_PASSWORD, '?wait=20000');
    expect(restored.json<JobView>().state).toBe('completed');
    expect(restored.body).not.toContain(MARKER);

    const admin = (await createRepositories(s.app.uow.fork(), { serverKey: s.app.serverKey }).admin.findByName(ADMIN_NAME))!;
    const ownKey = await deriveKey(ADMIN_PASSWORD, readHeader(ownFile).kdf);
    const foreignKey = await deriveKey(FILE_PASSWORD, readHeader(foreignFile).kdf);
    const forbidden: [string, string][] = [
      ['administrator password', ADMIN_PASSWORD],
      ['file password', FILE_PASSWORD],
      ['wrong password', WRONG_PASSWORD],
      ['export key (hex)', ownKey.toString('hex')],
      ['export key (base64)', ownKey.toString('base64')],
      ['file key (hex)', foreignKey.toString('hex')],
      ['file key (base64)', foreignKey.toString('base64')],
      ['sealed export key', admin.exportKeySealed],
      ['snapshot-only rows', MARKER],
      ...foreign.node!.map((n) => ['node private key', n.private_key_enc as string] as [string, string]),
      ...foreign.mqtt_credential!.map((c) => ['credential hash', c.password_hash as string] as [string, string]),
    ];

    const redis = [...(await dumpPrefix(s.app.config.queuePrefix)).entries()].map(([k, v]) => `${k} ${v}`).join('\n');
    expect(redis).toContain('snapshot.restore'); // the dump does see the jobs
    expect(logs).toContain('snapshot restored'); // and the logs the work
    for (const [what, secret] of forbidden) {
      expect(redis.includes(secret), `${what} in Redis`).toBe(false);
      expect(logs.includes(secret), `${what} in the logs`).toBe(false);
    }
  });
});
