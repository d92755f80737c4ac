/**
 * Bull Board at /admin/queues. It sits inside the API's root scope, so the same
 * authentication hook guards its page, its static files and its JSON API.
 *
 * Job data never holds a secret by design (the API puts only hashes into jobs), but a
 * hash is still not for display: the formatter masks every key that looks like a
 * credential, wherever it is nested, in data, return values and progress.
 */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';
import type { JobQueues } from '../jobs/queue-client.js';

export const BULL_BOARD_PATH = '/admin/queues';
const SECRET_KEY = /password|token|secret|privateKey|hash|salt/i;
export const REDACTED = '[redacted]';

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
    const adapter = new BullMQAdapter(queue, { readOnlyMode: false });
    adapter.setFormatter('data', (data) => redactSecrets(data));
    adapter.setFormatter('returnValue', (value) => redactSecrets(value));
    adapter.setFormatter('progress', (value) => redactSecrets(value));
    return adapter;
  });
  createBullBoard({ queues: adapters, serverAdapter, options: { uiConfig: { boardTitle: 'meshq' } } });
  await api.register(serverAdapter.registerPlugin(), { prefix: BULL_BOARD_PATH });
}
