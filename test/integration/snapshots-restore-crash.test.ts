/**
 * Restores with real worker processes:
 * - a worker killed with SIGKILL in the middle of a restore leaves the data exactly as it
 *   was before (one transaction, nothing locked afterwards), and the restore, retried by
 *   another worker, then completes;
 * - three restores submitted together with two workers run one at a time (their
 *   startedAt..finishedAt never overlap), and the data is the last one's;
 * - operations submitted while a restore runs wait for it and run against the restored
 *   data, failing cleanly with NOT_FOUND when their target is gone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import type { SnapshotTables } from '../../src/snapshots/tables.js';
import { parseFailedReason } from '../../src/jobs/errors.js';
import type { JobInput, JobType } from '../../src/jobs/table.js';
import { DIALECTS } from '../support/db.js';
import { killAll, startWorkerProcess, waitFor, type Child } from '../support/processes.js';
import { businessRows, encodeTestSnapshot, generateBusinessTables, rowCount, sortedByKey, uploadSnapshot } from '../support/snapshot-data.js';
import { startStack, type Stack } from '../support/stack.js';

const PASSWORD = 'crash-test-file-password';
const STALLED_MS = 1_000;

interface RestoreResult {
  rows: Record<string, number>;
  epoch: number;
  startedAt: string;
  finishedAt: string;
}

describe.each(DIALECTS)('restore under crashes and concurrency on %s', (dialect) => {
  let s: Stack;
  let env: Record<string, string>;
  const workers: Child[] = [];

  beforeAll(async () => {
    // The API in this process, no workers here: they are the child processes below.
    s = await startStack(dialect, 'snap_crash', { adminPassword: 'crash-admin-password', workers: false });
    env = { ...s.db.env, TEST_QUEUE_PREFIX: s.app.config.queuePrefix, TEST_STALLED_INTERVAL_MS: String(STALLED_MS) };
    workers.push(await startWorkerProcess(env));
  });
  afterAll(async () => {
    await killAll();
    await s?.stop();
  });

  async function submitRestore(tables: SnapshotTables): Promise<string> {
    const res = await uploadSnapshot(s.api, s.auth, await encodeTestSnapshot(tables, PASSWORD), PASSWORD);
    expect(res.statusCode, res.body).toBe(202);
    return res.json<{ id: string }>().id;
  }

  const job = async (id: string): Promise<Job> => (await s.app.queues.find(id))!;

  async function finished(id: string, timeoutMs = 90_000): Promise<Job> {
    await waitFor(`job ${id} to finish`, async () => {
      const state = await s.app.queues.queue((await job(id)).queueName as never).getJobState(id);
      return state === 'completed' || state === 'failed';
    }, timeoutMs, 50);
    // Fetched after the fact: a Job read while active carries no return value.
    return job(id);
  }

  /** Resolves once the restore has started writing (progress > 0) and is not done. */
  const midRestore = (id: string) =>
    waitFor(`restore ${id} to be under way`, async () => {
      const j = await job(id);
      const p = typeof j.progress === 'number' ? j.progress : 0;
      return p > 0 && p < 100 ? p : undefined;
    }, 60_000, 10);

  it('a worker killed mid-restore leaves the data as before; the retried restore completes', async () => {
    expect((await s.job('config.create', { name: 'before-restore', subnet: '10.7.0.0/24' })).state).toBe('completed');
    expect((await s.job('settings.update', { values: { 'state': 'before' } })).state).toBe('completed');
    const before = await businessRows(s.app);

    // Large enough that the restore takes a while after its first progress report.
    const big = generateBusinessTables({ configs: 2, nodesPerConfig: 2500, neighbours: 3, forwardsPerNode: 1, audit: 20_000, label: 'big' });
    expect(rowCount(big)).toBeGreaterThan(50_000);
    const id = await submitRestore(big);
    const progress = await midRestore(id);
    expect(progress).toBeGreaterThan(0);
    workers[0]!.proc.kill('SIGKILL');
    await workers[0]!.exited;

    expect(await (await job(id)).getState()).not.toBe('completed');
    expect(await businessRows(s.app)).toEqual(before);

    // A new worker takes the stalled job over and runs it from the start.
    workers.push(await startWorkerProcess(env));
    const done = await finished(id);
    expect(await done.getState(), done.failedReason).toBe('completed');
    expect(await businessRows(s.app)).toEqual(sortedByKey(big));
    expect((done.returnvalue as RestoreResult).epoch).toBe(1);
  }, 180_000);

  it('three restores submitted together with two workers run one at a time; the last one wins', async () => {
    workers.push(await startWorkerProcess(env));
    const sets = ['one', 'two', 'three'].map((label) => generateBusinessTables({ configs: 1, nodesPerConfig: 400, neighbours: 2, audit: 3_000, label }));
    const files = await Promise.all(sets.map((t) => encodeTestSnapshot(t, PASSWORD)));
    const ids: string[] = [];
    for (const file of files) {
      const res = await uploadSnapshot(s.api, s.auth, file, PASSWORD);
      expect(res.statusCode, res.body).toBe(202);
      ids.push(res.json<{ id: string }>().id);
    }
    const jobs = await Promise.all(ids.map((id) => finished(id)));
    for (const j of jobs) expect(await j.getState(), j.failedReason).toBe('completed');

    const spans = jobs.map((j, i) => ({ i, ...(j.returnvalue as RestoreResult) })).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
    for (let k = 1; k < spans.length; k++) {
      expect(spans[k]!.startedAt > spans[k - 1]!.finishedAt, JSON.stringify(spans)).toBe(true);
    }
    // FIFO: they ran in submission order, so the last submitted is the last applied.
    expect(spans.map((x) => x.i)).toEqual([0, 1, 2]);
    expect(spans.map((x) => x.epoch)).toEqual([2, 3, 4]);
    expect(await businessRows(s.app)).toEqual(sortedByKey(sets[2]!));
  }, 180_000);

  it('operations submitted during a restore wait for it and run against the restored data', async () => {
    const next = generateBusinessTables({ configs: 2, nodesPerConfig: 2500, neighbours: 3, forwardsPerNode: 1, audit: 20_000, label: 'next' });
    const restoredConfig = next.mesh_config![0]!.id as string; // does not exist yet
    const goneConfig = (await businessRows(s.app)).mesh_config![0]!.id as string; // exists now, not after the restore
    const id = await submitRestore(next);
    await midRestore(id);

    const submit = <T extends JobType>(type: T, payload: JobInput<T>) => s.app.queues.submit(type, payload, { actor: 'admin' });
    const create = await submit('node.create', { configId: restoredConfig, name: 'arrived-during-restore', kind: 'static' });
    const update = await submit('config.update', { id: goneConfig, listenPort: 40000 });
    const setting = await submit('settings.update', { values: { 'written.during.restore': true } });

    const restored = await finished(id);
    expect(await restored.getState(), restored.failedReason).toBe('completed');
    const restoredAt = (restored.returnvalue as RestoreResult).finishedAt;

    const [c, u, st] = await Promise.all([create, update, setting].map((j) => finished(j.id!)));
    expect(await c!.getState(), c!.failedReason).toBe('completed');
    expect(await st!.getState(), st!.failedReason).toBe('completed');
    expect(await u!.getState()).toBe('failed');
    expect(parseFailedReason(u!.failedReason)).toMatchObject({ code: 'NOT_FOUND' });
    for (const j of [c!, st!]) expect(new Date(j.finishedOn!).toISOString() > restoredAt).toBe(true);

    const rows = await businessRows(s.app);
    const node = rows.node!.find((n) => n.name === 'arrived-during-restore');
    expect(node).toMatchObject({ config_id: restoredConfig });
    expect(rows.setting!.find((r) => r.key === 'written.during.restore')).toMatchObject({ value: true });
    // Everything else is exactly the restored snapshot.
    const expected = sortedByKey(next);
    expect(rows.mesh_config).toEqual(expected.mesh_config);
    expect(rows.peer_link).toEqual(expected.peer_link);
    expect(rows.node!.filter((n) => n.id !== node!.id)).toEqual(expected.node);
  }, 180_000);
});
