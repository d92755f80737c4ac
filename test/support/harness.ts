/**
 * Runs jobs through the real runner (validation, one transaction, ledger, error
 * classification) against a real database, without BullMQ: the fast way to test every
 * processor on both dialects. Queue behaviour is tested separately with real workers.
 */
import { UnrecoverableError } from 'bullmq';
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import type { Config, Dialect } from '../../src/config.js';
import { connectOrm, type Orm } from '../../src/db/orm.js';
import { migrateUnderLock } from '../../src/db/migrate.js';
import { UnitOfWork } from '../../src/db/unit-of-work.js';
import { createRepositories, type Repositories } from '../../src/repositories/index.js';
import type { JobType } from '../../src/jobs/table.js';
import { parseFailedReason, type JobError } from '../../src/jobs/errors.js';
import { runJob, type RunnerDeps } from '../../src/jobs/runner.js';
import { createTestDatabase, type TestDatabase } from './db.js';

export interface Harness {
  db: TestDatabase;
  config: Config;
  orm: Orm;
  uow: UnitOfWork;
  serverKey: Buffer;
  /** Follow-up jobs the runner enqueued after commit. */
  enqueued: { type: JobType; payload: unknown }[];
  run<R = unknown>(type: JobType, payload: unknown, opts?: { jobId?: string; actor?: string }): Promise<R>;
  /** Runs a job that must fail permanently; returns its {code, message}. */
  fail(type: JobType, payload: unknown): Promise<JobError>;
  /** Runs a job that must fail, retryably or not; returns the error. */
  error(type: JobType, payload: unknown): Promise<Error>;
  /** Read-only look at the data in a fresh fork. */
  read<T>(fn: (repos: Repositories) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** More environment for the config, over the test database's. */
  env?: Record<string, string>;
  /** Handed to the runner (absent: jobs request no broker sync). */
  requestBrokerSync?: RunnerDeps['requestBrokerSync'];
}

export async function createHarness(dialect: Dialect, label: string, opts: HarnessOptions = {}): Promise<Harness> {
  const db = await createTestDatabase(dialect, label);
  const config = db.config(opts.env);
  const orm = await connectOrm(config);
  await migrateUnderLock(orm, config);
  const uow = new UnitOfWork(orm, config.dialect);
  const serverKey = Buffer.from(config.secretKey, 'hex');
  const enqueued: Harness['enqueued'] = [];
  const deps = {
    uow,
    config,
    log: pino({ level: 'silent' }),
    serverKey,
    enqueue: async (type: JobType, payload: unknown) => {
      enqueued.push({ type, payload });
    },
    requestBrokerSync: opts.requestBrokerSync,
  };
  const run = <R>(type: JobType, payload: unknown, opts: { jobId?: string; actor?: string } = {}) =>
    runJob(deps, {
      jobId: opts.jobId ?? randomUUID(),
      type,
      envelope: { actor: opts.actor ?? 'admin', payload },
    }) as Promise<R>;
  const error = async (type: JobType, payload: unknown): Promise<Error> => {
    try {
      await run(type, payload);
    } catch (err) {
      return err as Error;
    }
    throw new Error(`${type} was expected to fail but succeeded`);
  };
  return {
    db,
    config,
    orm,
    uow,
    serverKey,
    enqueued,
    run,
    async fail(type, payload) {
      const err = await error(type, payload);
      if (err instanceof UnrecoverableError) return parseFailedReason(err.message)!;
      throw err;
    },
    error,
    read: (fn) => fn(createRepositories(uow.fork(), { serverKey })),
    async close() {
      await orm.close(true);
      await db.drop();
    },
  };
}
