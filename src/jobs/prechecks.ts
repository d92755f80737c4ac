/**
 * What the API's prechecks run with. The checks themselves are rows of the job table
 * (`precheck`): semantic checks the API makes before enqueueing, so that the obvious
 * mistakes get a 404 or 409 at once instead of a job that fails a moment later. They are
 * a courtesy, not the authority: the job checks again inside its transaction (a
 * concurrent request can still win), and subtler conflicts (a node name or address
 * taken, address allocation) are left to the job, whose failure carries the same code.
 */
import DataLoader from 'dataloader';
import type { UnitOfWork } from '../db/unit-of-work.js';
import { ConflictError, NotFoundError } from '../domain/errors.js';
import { createRepositories, type Repositories } from '../repositories/index.js';

/** What a check (a job table row's `precheck`) may use: fresh repositories, and the batched node-id probe. */
export interface CheckContext {
  repos(): Repositories;
  nodeExists(id: string): Promise<boolean>;
}

export async function requireNode(ctx: CheckContext, id: string): Promise<void> {
  if (!(await ctx.nodeExists(id))) throw new NotFoundError('node', id);
}

export async function requireConfigNameFree(repos: Repositories, name: string, exceptId?: string): Promise<void> {
  const existing = await repos.configs.findByName(name);
  if (existing && existing.id !== exceptId) {
    throw new ConflictError(`a config named "${name}" already exists`, { entity: 'config', id: existing.id, name });
  }
}

/** The config exists and both nodes belong to it (a link or a port-forward between them). */
export async function requireNodePairInConfig(repos: Repositories, configId: string, fromNodeId: string, toNodeId: string): Promise<void> {
  const config = await repos.configs.require(configId);
  await repos.nodes.requireInConfig(config, fromNodeId);
  await repos.nodes.requireInConfig(config, toNodeId);
}

/** Ids per batched probe: far below every driver's bound-parameter limit. */
const MAX_PROBE_BATCH = 200;

/**
 * The checks of one API process. Node-id probes, the check of the most frequent
 * submissions (node.update, node.delete), are batched: every probe asked for while the
 * event loop handles one round of ready sockets goes to the database as one query, in the
 * same loop iteration (DataLoader, scheduled with setImmediate). Each request still sees
 * the database as it is when its probe runs; nothing is cached between batches. Under
 * load this takes most of the submission path's database round trips away (a probe per
 * request was the largest cost of a submission).
 */
export class Prechecks {
  private readonly nodeProbe: DataLoader<string, boolean>;

  constructor(private readonly app: { uow: UnitOfWork; serverKey: Buffer }) {
    this.nodeProbe = new DataLoader(
      async (ids) => {
        // PostgreSQL answers uuids in lower case, whatever case was asked for.
        const found = await this.repos().nodes.existing(ids);
        return ids.map((id) => found.has(id.toLowerCase()));
      },
      { cache: false, maxBatchSize: MAX_PROBE_BATCH, batchScheduleFn: (run) => setImmediate(run) },
    );
  }

  /** The context one request's check runs with. */
  context(): CheckContext {
    return { repos: () => this.repos(), nodeExists: (id) => this.nodeProbe.load(id) };
  }

  private repos(): Repositories {
    return createRepositories(this.app.uow.fork(), { serverKey: this.app.serverKey });
  }
}
