/**
 * GET /api/v1/events: Server-Sent Events of job lifecycle and domain changes (what they
 * are and where they come from: src/jobs/events.ts). Each client reads the Redis streams
 * on a connection of its own (XREAD blocks), so the number of open streams is bounded.
 * A client that reconnects with `Last-Event-ID` gets every event after that one (within
 * the streams' retention). Shutdown ends every open stream first, so closing the server
 * never waits on a client that will not hang up.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { ApiError } from '../errors.js';
import { EventReader, typeFilter } from '../../jobs/events.js';
import { redisConnection } from '../../jobs/redis.js';
import { errorResponses, media } from '../schemas.js';

export const DEFAULT_KEEP_ALIVE_MS = 15_000;
export const MAX_EVENT_CLIENTS = 200;

const query = z.strictObject({
  types: z
    .string()
    .max(1_000)
    .optional()
    .describe('Comma-separated event types, each exact (`job.completed`, `node.update`) or a prefix (`job.*`, `node.*`); default every type'),
});

// Loose: Fastify replaces request.headers with the validated value, which must keep the rest.
const headers = z.looseObject({
  'last-event-id': z.string().optional().describe('The `id:` of the last event received: the stream resumes after it'),
});

export interface EventRouteOptions {
  app: AppContext;
  /** How long a quiet stream waits before a keep-alive comment. */
  keepAliveMs?: number;
}

export async function eventRoutes(api: FastifyInstance, opts: EventRouteOptions): Promise<void> {
  const { app } = opts;
  const keepAliveMs = opts.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS;
  const open = new Set<() => void>();
  // preClose runs before the server stops accepting: an open stream would hold close() forever.
  api.addHook('preClose', async () => {
    for (const stop of [...open]) stop();
  });

  api.get(
    '/events',
    {
      config: { scope: 'read' },
      // A HEAD of a stream would stay open with nothing to send.
      exposeHeadRoute: false,
      schema: {
        tags: ['events'],
        summary: 'Server-Sent Events: job lifecycle and committed changes',
        description:
          'A `text/event-stream`. Job lifecycle: `job.queued`, `job.active`, `job.progress`, `job.completed`, `job.failed` ' +
          '(data: `jobId`, `jobType`, `queue`, and `progress`, `result` or `error`). Committed changes: one event per committed ' +
          'job, named by its type (`config.create`, `node.update`, `mesh.generate`, `snapshot.restore`, `broker.sync`, ...; ' +
          'data: `jobId`, `actor`, `at` and the ids it touched). Reconnect with `Last-Event-ID` to resume without losing events. ' +
          'A comment line is sent when nothing happened for a while, to keep proxies from closing the stream.',
        querystring: query,
        headers,
        response: {
          200: media('The stream: `id:`, `event:` (the type) and `data:` (JSON) per event', 'text/event-stream'),
          ...errorResponses(),
        },
      },
    },
    async (request, reply) => {
      const { types } = request.query as z.infer<typeof query>;
      const filter = typeFilter(types);
      if (!filter) throw new ApiError(400, 'INVALID', 'types: expected comma-separated event types such as job.completed, job.* or node.*', { types });
      const lastId = request.headers['last-event-id'];
      let cursor: string[] | undefined;
      if (typeof lastId === 'string' && lastId !== '') {
        cursor = EventReader.parseCursor(lastId) ?? undefined;
        if (!cursor) throw new ApiError(400, 'INVALID', 'Last-Event-ID: not an id this stream sent (send back the `id:` of the last event received)');
      }
      if (open.size >= MAX_EVENT_CLIENTS) {
        throw new ApiError(503, 'UNAVAILABLE', `too many open event streams (at most ${MAX_EVENT_CLIENTS} per API process); retry later`);
      }

      // Not a copy of the API's submitting connection: that one fails fast (no offline
      // queue, a short command timeout), and XREAD blocks by design.
      const connection = redisConnection(app.config);
      connection.on('error', () => undefined); // a failed read ends the stream (below)
      const reader = new EventReader(connection, app.config.queuePrefix);
      try {
        await reader.start(cursor);
      } catch (err) {
        connection.disconnect();
        throw err;
      }

      reply.hijack();
      const res = reply.raw;
      let stopped = false;
      let wake: () => void = () => undefined;
      const stop = () => {
        if (stopped) return;
        stopped = true;
        open.delete(stop);
        connection.disconnect(); // rejects a pending XREAD: the loop ends
        wake();
        if (!res.writableEnded) res.end();
      };
      open.add(stop);
      request.raw.on('close', stop);
      res.on('close', stop);
      res.writeHead(200, {
        ...reply.getHeaders(), // the security headers set for every response
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        // Reverse proxies (nginx) must not buffer a stream.
        'x-accel-buffering': 'no',
      } as OutgoingHttpHeaders);
      res.write(`retry: 2000\n: cursor ${reader.cursor}\n\n`);

      // A slow client: wait for its buffer to drain (or for it to go away).
      const send = async (text: string) => {
        if (res.write(text) || stopped) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
          res.once('drain', resolve);
        });
      };

      void (async () => {
        while (!stopped) {
          const events = await reader.read(keepAliveMs).catch((err: unknown) => {
            if (!stopped) request.log.warn({ err }, 'event stream: reading Redis failed; closing the stream');
            return null;
          });
          if (events === null || stopped) break;
          if (events.length === 0) {
            await send(': keep-alive\n\n');
            continue;
          }
          for (const e of events) {
            if (filter(e.type)) await send(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`);
            if (stopped) break;
          }
        }
      })().finally(stop);
    },
  );
}
