/**
 * graphile-worker, a job queue that keeps its jobs in PostgreSQL itself, as a peer of
 * meshq in the jobs bench (issue 14): the same node.update transaction (update one node
 * row, insert one audit row) as the hand-written BullMQ baseline, run as a graphile-worker
 * task at the concurrency meshq's worker runs at.
 *
 * It gets a database of its own, made here and dropped by close(): meshq's schema (the
 * node and audit tables, nodes created through meshq's runner) plus graphile-worker's
 * own schema, so its job table's churn never touches the database meshq is measured on.
 * Both sides use their default connection pool size (10): neither is tuned for the bench.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { Logger, makeWorkerUtils, run, runMigrations, type Task, type WorkerEvents } from 'graphile-worker';
import { bootstrap } from '../src/bin/bootstrap.js';
import { benchDatabase, dropRedisPrefix, seconds } from './support.js';

const POOL_MAX = 10;
const SCHEMA = 'graphile_worker';
const TASK = 'node_update';

/** node.update's work as a hand-written transaction (the BullMQ baseline runs it too). */
export async function handWrittenNodeUpdate(pool: pg.Pool, id: string, listenPort: number): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query('update node set listen_port = $2, updated_at = now() where id = $1', [id, listenPort]);
    await client.query(
      'insert into audit_record (id, at, actor, action, entity_type, entity_id, detail) values ($1, now(), $2, $3, $4, $5, $6)',
      [randomUUID(), 'bench', 'node.update', 'node', id, JSON.stringify({ listenPort })],
    );
    await client.query('commit');
  } catch (err) {
    await client.query('rollback');
    throw err;
  } finally {
    client.release();
  }
}

export interface GraphilePeer {
  /** Jobs per second for n node.update jobs added first, then run by a runner at `concurrency`. */
  rate(n: number, concurrency: number): Promise<number>;
  close(): Promise<void>;
}

const silent = new Logger(() => () => undefined);

/** `seed` creates the nodes through meshq's runner (jobs-bench's seed, passed in to keep this file free of it). */
export async function graphilePeer(seed: (app: Awaited<ReturnType<typeof bootstrap>>) => Promise<string[]>): Promise<GraphilePeer> {
  const db = await benchDatabase('postgresql');
  const app = await bootstrap('bench-graphile', db.config);
  const ids = await seed(app);
  await app.close();
  await dropRedisPrefix(db.config.queuePrefix);

  const pool = new pg.Pool({ connectionString: db.config.databaseUrl, max: POOL_MAX });
  const report = (err: Error) => console.error('graphile-worker bench pool:', err.message);
  pool.on('error', report);
  pool.on('connect', (client) => client.on('error', report));
  await runMigrations({ pgPool: pool, schema: SCHEMA, logger: silent });
  const utils = await makeWorkerUtils({ pgPool: pool, schema: SCHEMA, logger: silent });
  const task: Task = async (payload) => {
    const { id, listenPort } = payload as { id: string; listenPort: number };
    await handWrittenNodeUpdate(pool, id, listenPort);
  };

  return {
    async rate(n, concurrency) {
      for (let i = 0; i < n; i += 1000) {
        const specs = Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({
          identifier: TASK,
          payload: { id: ids[(i + k) % ids.length]!, listenPort: 1024 + ((i + k) % 60_000) },
        }));
        await utils.addJobs(specs);
      }
      let done = 0;
      let resolve!: () => void;
      const finished = new Promise<void>((r) => (resolve = r));
      // The clock includes the runner's start (a version check and LISTEN on a migrated
      // schema), a few milliseconds that count against graphile-worker.
      const events = new EventEmitter() as WorkerEvents;
      events.on('job:complete', ({ error }) => {
        if (error) console.error('graphile-worker bench job failed', (error as Error).message);
        if (++done === n) resolve();
      });
      const t0 = process.hrtime.bigint();
      const runner = await run({ pgPool: pool, schema: SCHEMA, concurrency, noHandleSignals: true, logger: silent, events, taskList: { [TASK]: task } });
      await finished;
      const rate = n / seconds(t0);
      await runner.stop();
      return rate;
    },
    async close() {
      await utils.release();
      await pool.end();
      await db.drop();
    },
  };
}
