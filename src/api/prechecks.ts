/**
 * Semantic checks the API makes before enqueueing, so that the obvious mistakes get a
 * 404 or 409 at once instead of a job that fails a moment later: ids a payload refers
 * to must exist, a new config name must be free. They are a courtesy, not the
 * authority: the job checks again inside its transaction (a concurrent request can
 * still win), and subtler conflicts (a node name or address taken, address allocation)
 * are left to the job, whose failure carries the same code.
 */
import { ConflictError, NotFoundError } from '../domain/errors.js';
import type { Repositories } from '../domain/repositories.js';
import type { JobPayload, JobType } from '../workers/jobs.js';

type Checks = { [T in JobType]?: (data: JobPayload<T>, repos: Repositories) => Promise<void> };

async function nodeExists(repos: Repositories, id: string): Promise<void> {
  if (!(await repos.nodes.exists(id))) throw new NotFoundError('node', id);
}

async function configNameFree(repos: Repositories, name: string, exceptId?: string): Promise<void> {
  const existing = await repos.configs.findByName(name);
  if (existing && existing.id !== exceptId) {
    throw new ConflictError(`a config named "${name}" already exists`, { entity: 'config', id: existing.id, name });
  }
}

const CHECKS: Checks = {
  'config.create': async (d, repos) => configNameFree(repos, d.name),
  'config.update': async (d, repos) => {
    await repos.configs.require(d.id);
    if (d.name !== undefined) await configNameFree(repos, d.name, d.id);
  },
  'config.delete': async (d, repos) => void (await repos.configs.require(d.id)),
  'node.create': async (d, repos) => void (await repos.configs.require(d.configId)),
  'node.update': async (d, repos) => nodeExists(repos, d.id),
  'node.delete': async (d, repos) => nodeExists(repos, d.id),
  'mesh.generate': async (d, repos) => void (await repos.configs.require(d.configId)),
  'port-forward.create': async (d, repos) => {
    const config = await repos.configs.require(d.configId);
    await repos.nodes.requireInConfig(config, d.fromNodeId);
    await repos.nodes.requireInConfig(config, d.toNodeId);
  },
  'port-forward.delete': async (d, repos) => void (await repos.forwards.require(d.id)),
  'token.revoke': async (d, repos) => {
    if (!(await repos.tokens.exists(d.id))) throw new NotFoundError('API token', d.id);
  },
};

export async function precheck<T extends JobType>(type: T, data: JobPayload<T>, repos: Repositories): Promise<void> {
  const check = CHECKS[type] as ((d: JobPayload<T>, r: Repositories) => Promise<void>) | undefined;
  await check?.(data, repos);
}
