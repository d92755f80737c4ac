/**
 * Snapshots: export (a job), list, metadata and download of stored exports, and restore.
 *
 * Restore is the one write the API checks all the way down before enqueueing: the upload
 * is decrypted with the given password, brought to the current schema and validated row
 * by row here, so a wrong password, a damaged file, a newer schema or a row the database
 * would refuse is a 400 with the reason and nothing changes. Only a file that passed is
 * staged (still encrypted, its data key sealed under the server key) and the job gets
 * nothing but the staged id: the password never leaves this request.
 */
import { Readable } from 'node:stream';
import multipart from '@fastify/multipart';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { ADMIN_NAME } from '../../repositories/admin-account.js';
import { ConflictError, InvalidError, NotFoundError } from '../../domain/errors.js';
import { createRepositories, type Repositories } from '../../repositories/index.js';
import { stageUpload } from '../../jobs/processors/snapshots.js';
import { DEFAULT_INFLATION_LIMITS } from '../../snapshots/payload.js';
import { SpoolFile } from '../../snapshots/spool.js';
import { UploadChecker, UploadChecksBusyError } from '../../snapshots/upload-check.js';
import { ApiError } from '../errors.js';
import { pageQuery } from '../validation.js';
import { replyWithJob, waitQuery } from './jobs.js';
import { documentedAs, errorResponses, jobAnswers, json, media, pageOf, snapshotSchema } from '../schemas.js';

/**
 * Largest accepted upload: a limit, not a memory requirement. The file is spooled to a
 * temporary file as it arrives, checked from there in a worker thread as a stream (whose
 * heap and inflation are capped: src/snapshots/upload-check.ts) and staged from there a
 * piece at a time; the temporary file is removed on every path.
 */
export const MAX_SNAPSHOT_UPLOAD_BYTES = 512 * 1024 * 1024;
const MAX_PASSWORD_BYTES = 4096;
const MiB = 1024 * 1024;

const idParams = z.strictObject({ id: z.uuid({ error: 'must be a UUID' }) });
const page = pageQuery(50);
// The upload is read part by part in the handler (readUpload), which says what is wrong
// with it; this only documents it, so it accepts anything.
const restoreBody = documentedAs(z.unknown(), {
  content: {
    'multipart/form-data': {
      schema: {
        type: 'object',
        properties: {
          file: { type: 'string', format: 'binary', description: 'The .meshq file' },
          password: { type: 'string', description: 'The administrator password at the time of export' },
        },
        required: ['file', 'password'],
      },
    },
  },
});

/** `meshq-20261124T101112Z-0192abcd.meshq`: sortable, and says what it is. */
export const snapshotFileName = (view: { id: string; createdAt: string }): string =>
  `meshq-${view.createdAt.replace(/[-:]/g, '').replace(/\.\d+/, '')}-${view.id.slice(0, 8)}.meshq`;

export async function snapshotRoutes(api: FastifyInstance, opts: { app: AppContext }): Promise<void> {
  const { app } = opts;
  const repos = (): Repositories => createRepositories(app.uow.fork(), { serverKey: app.serverKey });
  const tags = ['snapshots'];
  // At most two uploads are checked at once; another one meanwhile gets 429.
  const checker = new UploadChecker({ maxConcurrent: 2 });
  api.addHook('onClose', () => checker.close());

  // Registered here, not globally: only this plugin's routes accept multipart bodies.
  await api.register(multipart, {
    limits: { fileSize: MAX_SNAPSHOT_UPLOAD_BYTES, files: 1, fields: 4, fieldSize: MAX_PASSWORD_BYTES, parts: 6 },
  });

  api.post(
    '/snapshots/export',
    {
      config: { scope: 'snapshots' },
      schema: {
        tags,
        summary: 'Export every business row into an encrypted snapshot',
        description:
          'Answers 202 with the job (200 when it finished within `wait`); its result `{snapshotId, size, sha256}` names the ' +
          'stored file. The file opens with the administrator password current at export time.',
        querystring: waitQuery,
        response: jobAnswers(),
      },
    },
    async (request, reply) => {
      const { wait } = request.query as z.infer<typeof waitQuery>;
      if (!(await repos().admin.findByName(ADMIN_NAME))) {
        throw new ConflictError('no administrator yet: snapshots are encrypted with a key derived from the administrator password; set it first');
      }
      const job = await app.queues.submit('snapshot.export', {}, { actor: request.actor });
      request.log.info({ jobId: job.id }, 'snapshot export submitted');
      return replyWithJob(reply, app.queues, job, wait);
    },
  );

  api.get('/snapshots', { config: { scope: 'snapshots' }, schema: { tags, summary: 'Stored exports, newest first', querystring: page, response: { 200: json('A page of stored exports', pageOf(snapshotSchema)), ...errorResponses() } } }, async (request) => {
    return repos().snapshots.listExports(request.query as z.infer<typeof page>);
  });

  api.get('/snapshots/:id', { config: { scope: 'snapshots' }, schema: { tags, summary: "A stored export's metadata", params: idParams, response: { 200: json('The stored export', snapshotSchema), ...errorResponses() } } }, async (request) => {
    const { id } = request.params as { id: string };
    const found = await repos().snapshots.getExport(id);
    if (!found) throw new NotFoundError('snapshot', id);
    return found;
  });

  api.get(
    '/snapshots/:id/download',
    {
      config: { scope: 'snapshots' },
      schema: {
        tags,
        summary: 'The encrypted snapshot file',
        params: idParams,
        response: {
          200: media('The file (`.meshq`), as an attachment; header x-content-sha256 holds its sha256', 'application/octet-stream', z.string().meta({ format: 'binary' })),
          ...errorResponses(),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const snapshots = repos().snapshots;
      const found = await snapshots.getExport(id);
      if (!found) throw new NotFoundError('snapshot', id);
      // Streamed from the database as it is sent (slices on PostgreSQL): a download holds
      // a slice at a time, not the file.
      return reply
        .type('application/octet-stream')
        .header('content-disposition', `attachment; filename="${snapshotFileName(found)}"`)
        .header('content-length', String(found.size))
        .header('x-content-sha256', found.sha256)
        .send(Readable.from(snapshots.archiveBytes(found)));
    },
  );

  api.post(
    '/snapshots/restore',
    {
      config: { scope: 'snapshots' },
      schema: {
        tags,
        summary: 'Restore a snapshot file (replaces every business row)',
        description:
          'multipart/form-data with a `file` part (the .meshq file) and a `password` field (the administrator password ' +
          'at the time of export). The file is decrypted and validated before anything changes: 400 with ' +
          '`details.reason` if it cannot be restored, else 202 with the restore job. The administrator, API access ' +
          'and system tables are not part of a snapshot and stay as they are. The check runs in a worker thread: ' +
          `contents that inflate beyond ${DEFAULT_INFLATION_LIMITS.maxRatio} times the file (at least ${DEFAULT_INFLATION_LIMITS.floorBytes / MiB} MiB, ` +
          `at most ${Math.floor(DEFAULT_INFLATION_LIMITS.maxBytes / MiB)} MiB) are refused with ` +
          '`too_large`, KDF parameters above twice what meshq writes with `bad_header` before any key is derived, ' +
          'and while two uploads are being checked another one gets 429 with `Retry-After`.',
        body: restoreBody,
        querystring: waitQuery,
        response: jobAnswers(),
      },
    },
    async (request, reply) => {
      const { wait } = request.query as z.infer<typeof waitQuery>;
      const { file, password } = await readUpload(request);
      let prepared;
      let staged;
      try {
        try {
          prepared = await checker.check(file.path, password, repos().snapshots.tableSpecs(), app.serverKey);
        } catch (err) {
          if (!(err instanceof UploadChecksBusyError)) throw err;
          void reply.header('retry-after', '5');
          throw new ApiError(429, 'TOO_MANY_REQUESTS', err.message);
        }
        staged = await stageUpload(app, file.read(), prepared);
      } finally {
        await file.remove();
      }
      const job = await app.queues.submit('snapshot.restore', { stagedId: staged.id }, { actor: request.actor });
      request.log.info(
        { jobId: job.id, stagedId: staged.id, size: staged.size, schemaVersion: prepared.meta.schemaVersion, upgradedThrough: prepared.upgradedThrough },
        'snapshot restore submitted',
      );
      return replyWithJob(reply, app.queues, job, wait);
    },
  );
}

/**
 * Reads the whole multipart body (leaving parts unread would stall the request), the file
 * part into a spool file as it arrives, then says everything that is wrong with it at
 * once. The spool file is the caller's to remove once this returns; on any failure here
 * (a refusal, a file over the limit, a client that went away) it is removed before the
 * error goes up.
 */
async function readUpload(request: import('fastify').FastifyRequest): Promise<{ file: SpoolFile; password: string }> {
  if (!request.isMultipart()) {
    throw new InvalidError('send multipart/form-data with a "file" part (the snapshot) and a "password" field');
  }
  let file: SpoolFile | undefined;
  try {
    let password: string | undefined;
    const unexpected: string[] = [];
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        if (part.fieldname === 'file' && !file) {
          file = await SpoolFile.create('meshq-upload-');
          for await (const chunk of part.file as AsyncIterable<Buffer>) await file.append(chunk);
          await file.close();
          if (part.file.truncated) {
            throw new ApiError(413, 'PAYLOAD_TOO_LARGE', `the snapshot file is larger than the upload limit (${MAX_SNAPSHOT_UPLOAD_BYTES} bytes)`);
          }
        } else {
          // Read to its end and dropped: never held.
          for await (const _chunk of part.file as AsyncIterable<Buffer>) void _chunk;
          unexpected.push(`file part "${part.fieldname}"`);
        }
      } else if (part.fieldname === 'password' && typeof part.value === 'string') {
        password = part.value;
      } else {
        unexpected.push(`field "${part.fieldname}"`);
      }
    }
    const problems = [
      // An empty file is the file's problem, reported by the snapshot reader like any other.
      ...(file === undefined ? ['the "file" part is missing'] : []),
      ...(password === undefined || password === '' ? ['the "password" field is missing'] : []),
      ...(unexpected.length > 0 ? [`unexpected ${unexpected.join(', ')} (send only "file" and "password")`] : []),
    ];
    if (problems.length > 0) throw new InvalidError(`body: ${problems.join('; ')}`);
    return { file: file!, password: password! };
  } catch (err) {
    await file?.remove();
    throw err;
  }
}
