/**
 * Bull Board at /admin/queues. It sits inside the API's root scope, so the same
 * authentication, authorization and header hooks guard its page, its static files and
 * its JSON API.
 *
 * What it may do is decided per route (`boardScope`): reading is `read`; of the writes,
 * only retrying failed jobs and cleaning finished ones remain, for `admin`. Everything
 * else the board offers (adding jobs with any actor, editing job data, pausing, emptying
 * or obliterating queues, changing concurrency or rate limits, touching job schedulers,
 * promoting or re-prioritizing jobs) would bypass what the API guards (payload checks,
 * scopes, the single-runner queues, the reconcile scheduler), so it is refused for every
 * caller, the administrator included. Redis details (server version, memory, clients) are
 * hidden too: they help an attacker more than an operator of meshq.
 *
 * Job data never holds a secret by design (the API puts only hashes into jobs), but a
 * hash is still not for display: the formatter masks every key that looks like a
 * credential, wherever it is nested, in data, return values and progress.
 */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { JobQueues } from '../jobs/queue-client.js';
import { hasScope } from '../domain/scopes.js';
import { assignScopes, type RouteScope } from './auth.js';

export const BULL_BOARD_PATH = '/admin/queues';
// `sig` is the job envelope's HMAC: no secret, but nothing a reader of the board needs.
const SECRET_KEY = /password|token|secret|privateKey|hash|salt|^sig$/i;
export const REDACTED = '[redacted]';

/** The board's writes the administrator keeps: retry failed jobs, clean finished ones. */
const ADMIN_WRITES = [
  /^\/api\/queues\/[^/]+\/retry\/[^/]+$/, // retry every job in a state
  /^\/api\/queues\/[^/]+\/clean\/[^/]+$/, // clean every job in a state
  /^\/api\/queues\/[^/]+\/[^/]+\/retry$/, // retry one job
  /^\/api\/queues\/[^/]+\/[^/]+\/clean$/, // remove one job
];
const HIDDEN_READS = new Set(['/api/redis/stats']);

/** The scope of a board route, from its method and its path below BULL_BOARD_PATH. */
export function boardScope(method: string, path: string): RouteScope {
  if (method === 'GET' || method === 'HEAD') return HIDDEN_READS.has(path) ? 'never' : 'read';
  return method === 'PUT' && ADMIN_WRITES.some((re) => re.test(path)) ? 'admin' : 'never';
}

export function redactSecrets(value: unknown, depth = 0): unknown {
  if (depth > 32 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1));
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, SECRET_KEY.test(k) ? REDACTED : redactSecrets(v, depth + 1)]),
  );
}

export async function registerBullBoard(api: FastifyInstance, queues: JobQueues): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(BULL_BOARD_PATH);
  const adapters = queues.allQueues().map((queue) => {
    // Not read-only at the adapter: that would take retry and clean from the
    // administrator too. The routes' scopes decide; non-admins see a read-only board.
    const adapter = new BullMQAdapter(queue, { readOnlyMode: false });
    adapter.setFormatter('data', (data) => redactSecrets(data));
    adapter.setFormatter('returnValue', (value) => redactSecrets(value));
    adapter.setFormatter('progress', (value) => redactSecrets(value));
    return adapter;
  });
  createBullBoard({ queues: adapters, serverAdapter, options: { uiConfig: { boardTitle: 'meshq', hideRedisDetails: true } } });
  await api.register(
    async (board) => {
      assignScopes(board, (method, url) => boardScope(method, url.slice(BULL_BOARD_PATH.length)));
      board.addHook('onSend', showReadOnlyToNonAdmins);
      await board.register(serverAdapter.registerPlugin());
    },
    { prefix: BULL_BOARD_PATH },
  );
}

/**
 * The queue list tells the page which buttons to draw; a caller without `admin` is told
 * every queue is read-only, so the page offers nothing it would be refused.
 */
async function showReadOnlyToNonAdmins(request: FastifyRequest, _reply: FastifyReply, payload: unknown): Promise<unknown> {
  if (request.routeOptions.url !== `${BULL_BOARD_PATH}/api/queues` || typeof payload !== 'string') return payload;
  if (request.principal && hasScope(request.principal.scopes, 'admin')) return payload;
  try {
    const body = JSON.parse(payload) as { queues?: { readOnlyMode?: boolean; allowRetries?: boolean }[] };
    for (const q of body.queues ?? []) {
      q.readOnlyMode = true;
      q.allowRetries = false;
    }
    return JSON.stringify(body);
  } catch {
    return payload;
  }
}
