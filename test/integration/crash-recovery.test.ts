/**
 * Exactly-once effect: a worker killed right after a job's commit and before BullMQ's
 * acknowledgement leaves a job that BullMQ runs again; the re-run finds the job's ledger
 * row and returns the recorded result, so the effect happens once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootstrap, type AppContext } from '../../src/bin/bootstrap.js';
import { AuditRecord } from '../../src/domain/entities/audit.js';
import { MeshConfig } from '../../src/domain/entities/mesh.js';
import { createTestDatabase, DIALECTS, type TestDatabase } from '../support/db.js';
import { killAll, startWorkerProcess, waitFor } from '../support/processes.js';
import { deletePrefix } from '../support/redis.js';

describe.each(DIALECTS)('crash between commit and acknowledgement on %s', (dialect) => {
  let db: TestDatabase;
  let app: AppContext;
  let dir: string;

  beforeAll(async () => {
    db = await createTestDatabase(dialect, 'crash');
    app = await bootstrap('test', db.config());
    dir = mkdtempSync(join(tmpdir(), 'meshq-crash-'));
  });

  afterAll(async () => {
    await killAll();
    if (app) {
      await deletePrefix(app.config.queuePrefix);
      await app.close();
    }
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('re-runs the job without a second effect and completes with the recorded result', async () => {
    const marker = join(dir, 'crashed');
    const env = {
      ...db.env,
      TEST_QUEUE_PREFIX: app.config.queuePrefix,
      TEST_STALLED_INTERVAL_MS: '500',
      TEST_CRASH_AFTER_COMMIT: 'config.create',
      TEST_CRASH_MARKER: marker,
    };
    const first = await startWorkerProcess(env);
    const job = await app.queues.submit('config.create', { name: 'crashy', subnet: '10.9.0.0/24' }, { actor: 'admin' });

    await waitFor('the worker to crash after commit', async () => existsSync(marker));
    await first.exited;
    expect(readFileSync(marker, 'utf8')).toBe(job.id);
    const em = app.orm.em.fork();
    expect(await em.count(MeshConfig, { name: 'crashy' })).toBe(1); // committed before the crash

    await startWorkerProcess(env); // the marker exists: this one does not crash
    const view = await waitFor('the job to complete after takeover', async () => {
      const v = await app.queues.view((await app.queues.find(job.id!))!);
      return v.state === 'completed' ? v : undefined;
    });

    const config = await em.fork().findOneOrFail(MeshConfig, { name: 'crashy' });
    expect(view.result).toEqual({ id: config.id });
    expect(await em.fork().count(MeshConfig, {})).toBe(1);
    expect(await em.fork().count(AuditRecord, { action: 'config.create' })).toBe(1);
  });
});
