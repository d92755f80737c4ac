/**
 * The unit-of-work runner: the one place where a job becomes a transaction.
 *
 *   validate payload -> [transaction: ledger check -> processor -> ledger record] -> commit
 *   -> after-commit work (follow-up jobs)
 *
 * Recording the ledger row in the same transaction as the effects is what makes a re-run
 * after a crash between commit and acknowledgement harmless: it finds the row and
 * returns the recorded result.
 */
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { UnitOfWork } from '../db/unit-of-work.js';
import { InvalidError } from '../domain/errors.js';
import { createRepositories } from '../domain/repositories.js';
import type { JobContext } from './context.js';
import { permanentFailure, toDomainError } from './errors.js';
import { jobDefinition, type JobType } from './jobs.js';
import { describeZodError } from './payload-errors.js';

/** What a job's data holds in Redis: who asked, and the validated payload. No secrets. */
export interface JobEnvelope {
  actor: string;
  payload: unknown;
}

export interface RunnerDeps {
  uow: UnitOfWork;
  config: Config;
  log: Logger;
  serverKey: Buffer;
  /** Enqueues a follow-up job (after commit). */
  enqueue(type: JobType, payload: unknown, opts?: { jobId?: string; actor?: string }): Promise<unknown>;
  /** Test seam: called right after commit, before acknowledgement. */
  onCommitted?(jobId: string, type: JobType): void;
}

export interface RunInput {
  jobId: string;
  type: JobType;
  envelope: JobEnvelope;
  job?: Job;
  /** Exclusive data lock (snapshot.restore). */
  exclusive?: boolean;
}

export async function runJob(deps: RunnerDeps, input: RunInput): Promise<unknown> {
  const def = jobDefinition(input.type);
  const parsed = def.schema.safeParse(input.envelope.payload);
  if (!parsed.success) {
    throw permanentFailure(new InvalidError(describeZodError(parsed.error, input.type), parsed.error.issues));
  }
  const log = deps.log.child({ jobId: input.jobId, type: input.type });
  const afterCommit: (() => Promise<unknown>)[] = [];
  let replayed = false;

  let result: unknown;
  try {
    result = await deps.uow.write(
      async (em) => {
        const repos = createRepositories(em, { serverKey: deps.serverKey });
        const recorded = await repos.ledger.recordedResult(input.jobId);
        if (recorded) {
          replayed = true;
          return recorded.result;
        }
        afterCommit.length = 0; // a retried transaction starts over
        const ctx: JobContext = {
          em,
          repos,
          log,
          config: deps.config,
          actor: input.envelope.actor,
          jobId: input.jobId,
          job: input.job,
          afterCommit: (fn) => afterCommit.push(fn),
          progress: async (p) => {
            await input.job?.updateProgress(p);
          },
        };
        const value = await def.processor(parsed.data, ctx);
        repos.ledger.record(input.jobId, input.type, value);
        return value;
      },
      { exclusive: input.exclusive },
    );
  } catch (err) {
    const domain = toDomainError(err);
    if (domain) {
      log.info({ code: domain.code, err: domain.message }, 'job failed permanently');
      throw permanentFailure(domain);
    }
    log.warn({ err }, 'job failed; will retry');
    throw err;
  }

  if (replayed) {
    log.info('job already applied; returning the recorded result');
    return result;
  }
  deps.onCommitted?.(input.jobId, input.type);
  for (const fn of afterCommit) {
    // The commit stands whatever happens here; a lost follow-up is picked up by the
    // scheduled reconcile (broker sync), so a failure is logged, not thrown.
    await fn().catch((err: unknown) => log.error({ err }, 'after-commit step failed'));
  }
  return result;
}
