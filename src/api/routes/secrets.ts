/**
 * The two writes that create a secret: an MQTT password for a node and an API token.
 * The API generates the secret, answers it once in this response, and puts only what the
 * database stores (a hash) into the job: the plaintext never reaches Redis, the logs or
 * the database. Because the secret exists only in this one response, these endpoints
 * take no Idempotency-Key: a replay could not show the secret the job stored.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { InvalidError, NotFoundError } from '../../domain/errors.js';
import { newId } from '../../domain/ids.js';
import { mqttUsername } from '../../repositories/credentials.js';
import { createRepositories } from '../../repositories/index.js';
import { generateSecret, hashMqttPassword, hashToken, newSalt } from '../../domain/secrets.js';
import { DEFAULT_TOKEN_SCOPES, SCOPES } from '../../domain/scopes.js';
import { replyWithJob, waitQuery } from './jobs.js';
import { credentialRotationSchema, jobAnswers, tokenCreatedSchema } from '../schemas.js';

const TOKEN_PREFIX = 'mq_';
const idParams = z.strictObject({ id: z.uuid({ error: 'must be a UUID' }) });
const tokenBody = z.strictObject({
  name: z.string().trim().min(1, { error: 'must not be empty' }).max(64, { error: 'is longer than 64 characters' }),
  scopes: z
    .array(z.enum(SCOPES, { error: (iss) => `unknown scope ${JSON.stringify(iss.input)}: one of ${SCOPES.join(', ')}` }))
    .min(1, { error: 'must name at least one scope' })
    .max(SCOPES.length)
    .refine((a) => new Set(a).size === a.length, { error: 'lists a scope twice' })
    .optional()
    .describe(`What the token may do; default ${JSON.stringify(DEFAULT_TOKEN_SCOPES)}. "admin" implies every scope.`),
  expiresAt: z.iso
    .datetime({ offset: true, error: 'must be an ISO 8601 date-time such as 2030-01-31T00:00:00Z' })
    .refine((t) => Date.parse(t) > Date.now(), { error: 'is in the past' })
    .optional()
    .describe('When the token stops working (absent: never)'),
});

function refuseIdempotencyKey(request: FastifyRequest): void {
  if (request.headers['idempotency-key'] !== undefined) {
    throw new InvalidError('Idempotency-Key is not accepted here: the new secret is shown only in the first response');
  }
}

export async function secretRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;
  const repos = () => createRepositories(app.uow.fork(), { serverKey: app.serverKey });

  api.post(
    '/nodes/:id/credentials',
    {
      config: { scope: 'credentials' },
      schema: {
        tags: ['secrets'],
        summary: "Rotate a dynamic node's MQTT password",
        description: 'Answers {job, username, clientId, password}; the password is shown only here.',
        params: idParams,
        querystring: waitQuery,
        response: jobAnswers(credentialRotationSchema),
      },
    },
    async (request, reply) => {
      refuseIdempotencyKey(request);
      const { id } = request.params as { id: string };
      const { wait } = request.query as z.infer<typeof waitQuery>;
      const node = await repos().nodes.get(id);
      if (!node) throw new NotFoundError('node', id);
      if (node.kind !== 'dynamic') throw new InvalidError(`node "${node.name}" is static: only dynamic nodes have MQTT credentials`);

      const password = generateSecret();
      const salt = newSalt();
      const job = await app.queues.submit('node.rotate-credentials', { nodeId: id, passwordHash: hashMqttPassword(password, salt), salt }, { actor: request.actor });
      request.log.info({ jobId: job.id, nodeId: id }, 'credential rotation submitted');
      // Username and client id are derived from the node id (the credential repository's rule).
      const username = mqttUsername(id);
      return replyWithJob(reply, app.queues, job, wait, (view) => ({ job: view, username, clientId: username, password }));
    },
  );

  api.post(
    '/tokens',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['secrets'],
        summary: 'Create an API token with scopes and an optional expiry',
        description: 'Answers {job, id, token}; the token is shown only here. Use it as `Authorization: Bearer <token>`.',
        body: tokenBody,
        querystring: waitQuery,
        response: jobAnswers(tokenCreatedSchema),
      },
    },
    async (request, reply) => {
      refuseIdempotencyKey(request);
      const { name, scopes = [...DEFAULT_TOKEN_SCOPES], expiresAt } = request.body as z.infer<typeof tokenBody>;
      const { wait } = request.query as z.infer<typeof waitQuery>;
      const id = newId();
      const token = TOKEN_PREFIX + generateSecret();
      const job = await app.queues.submit(
        'token.create',
        { id, name, tokenHash: hashToken(token), scopes, ...(expiresAt ? { expiresAt: new Date(expiresAt).toISOString() } : {}) },
        { actor: request.actor },
      );
      request.log.info({ jobId: job.id, tokenId: id }, 'token creation submitted');
      return replyWithJob(reply, app.queues, job, wait, (view) => ({ job: view, id, token }));
    },
  );
}
