/**
 * A worker thread that checks restore uploads (upload-check.ts runs a few): key
 * derivation, decryption, inflation, JSON parsing and every row check run here, so a
 * hostile file costs this thread's bounded heap and never the API's event loop. One
 * request at a time: a request message in, one answer message out.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import { DomainError } from '../domain/errors.js';
import { SnapshotInvalidError } from './errors.js';
import { openUpload } from './restore.js';
import type { CheckAnswer, CheckRequest } from './upload-check.js';
import type { TableSpec } from './tables.js';

async function check(request: CheckRequest): Promise<CheckAnswer> {
  // Entity classes cannot cross a thread boundary and the checks never use them.
  const specs = request.specs.map((spec) => ({ ...spec, entity: undefined }) as unknown as TableSpec);
  const serverKey = Buffer.from(request.serverKey);
  try {
    const { size } = await stat(request.path);
    // A megabyte at a time from the spool file: the upload is never in this thread's heap.
    const file = { size, read: () => createReadStream(request.path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer> };
    const opened = await openUpload(file, request.password, specs, serverKey, request.limits);
    return { ok: true, meta: opened.meta, upgradedThrough: opened.upgradedThrough, sealedKey: opened.sealedKey };
  } catch (err) {
    if (err instanceof SnapshotInvalidError) return { ok: false, invalid: { reason: err.reason, message: err.message } };
    if (err instanceof DomainError) return { ok: false, domain: { code: err.code, message: err.message, details: err.details } };
    return { ok: false, error: { message: (err as Error).message ?? String(err) } };
  } finally {
    serverKey.fill(0);
  }
}

parentPort!.on('message', (request: CheckRequest) => {
  void check(request).then((answer) => parentPort!.postMessage(answer));
});
