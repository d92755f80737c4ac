/**
 * SQLite only (PostgreSQL has no WAL checkpoint of the application's to move): the
 * connection of a process that answers HTTP never checkpoints the WAL on its own loop
 * (OffLoopCheckpoints, src/db/sqlite-checkpoint.ts). Its commits leave the frames in the
 * WAL, large or not, whoever wrote them; a short-lived thread copies them once they reach
 * the automatic checkpoint's threshold. `wal_checkpoint(NOOP)` on a second connection says
 * how many frames the WAL holds and how many a checkpoint has copied, without copying any.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { bootstrap } from '../../src/bin/bootstrap.js';
import { sqliteNative } from '../../src/db/orm.js';
import { OffLoopCheckpoints, type CheckpointResult } from '../../src/db/sqlite-checkpoint.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { deletePrefix } from '../support/redis.js';

/** Pages of 4 KiB that one bulk write adds to the WAL: about three times the threshold (1,000). */
const BULK_ROWS = 3000;

describe('WAL checkpoints of a SQLite connection that answers HTTP', () => {
  let db: TestDatabase;
  let file: string;
  const open: Database.Database[] = [];
  const connect = () => {
    const c = new Database(file);
    c.pragma('journal_mode = WAL');
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    db = await createTestDatabase('sqlite', 'checkpoints');
    file = db.config().sqlitePath!;
    connect().exec('create table bulk (b blob)');
  });

  afterAll(async () => {
    for (const c of open) c.close();
    await db?.drop();
  });

  const bulk = (c: Database.Database, rows = BULK_ROWS) =>
    c.prepare(`insert into bulk select randomblob(4000) from (with recursive r(x) as (select 1 union all select x + 1 from r where x < ?) select x from r)`).run(rows);

  it('leaves every commit of its own, and one that follows a large write elsewhere, to a thread', async () => {
    const api = connect();
    const observer = connect();
    const wal = () => (observer.pragma('wal_checkpoint(NOOP)') as CheckpointResult[])[0]!;
    const checkpoints = new OffLoopCheckpoints(api, undefined, 20);
    try {
      expect(api.pragma('wal_autocheckpoint', { simple: true })).toBe(0);

      // Its own large commit: the frames are all still in the WAL when the commit returns.
      let size = statSync(file).size;
      bulk(api);
      expect(wal().log).toBeGreaterThan(BULK_ROWS);
      expect(wal().checkpointed).toBe(0);
      // ... until the thread copies them into the file.
      await vi.waitFor(() => expect(wal().checkpointed).toBe(wal().log), { timeout: 30_000, interval: 20 });
      expect(statSync(file).size).toBeGreaterThan(size + 10_000_000);

      // A large commit of another connection whose checkpoint is not done (as a job's
      // whose thread has not started yet), then a small commit of this one: with its
      // automatic checkpoint, that small commit would have copied the whole WAL.
      const worker = connect();
      worker.pragma('wal_autocheckpoint = 0');
      size = statSync(file).size;
      bulk(worker);
      const before = wal();
      bulk(api, 1);
      expect(wal().log).toBeGreaterThan(before.log);
      expect(wal().checkpointed).toBe(0);
      await vi.waitFor(() => expect(wal().checkpointed).toBe(wal().log), { timeout: 30_000, interval: 20 });
      expect(statSync(file).size).toBeGreaterThan(size + 10_000_000);

      // Below the threshold the frames wait, as they would for the automatic checkpoint.
      bulk(api, 10);
      await new Promise((r) => setTimeout(r, 300));
      expect(wal().checkpointed).toBeLessThan(wal().log);
    } finally {
      await checkpoints.close();
    }
    // Closed: nothing looks any more.
    bulk(api);
    await new Promise((r) => setTimeout(r, 300));
    expect(wal().checkpointed).toBeLessThan(wal().log);
  });

  it('is how the API and `npm start` connect; the workers keep their automatic checkpoint', async () => {
    const config = db.config();
    const autocheckpoint = async (role: string) => {
      const app = await bootstrap(role, config);
      try {
        return (await sqliteNative(app.orm)).pragma('wal_autocheckpoint', { simple: true });
      } finally {
        await app.close();
      }
    };
    try {
      expect(await autocheckpoint('api')).toBe(0);
      expect(await autocheckpoint('both')).toBe(0);
      expect(await autocheckpoint('worker')).toBe(1000);
    } finally {
      await deletePrefix(config.queuePrefix);
    }
  });
});
