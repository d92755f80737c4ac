/**
 * The API's check of a restore upload, off its event loop. Decrypting, inflating, parsing
 * and checking a file are synchronous and, for a hostile file, as costly as the file
 * makes them; on the API's thread one upload would stall every request and could exhaust
 * the process's heap. So each upload is checked in a worker thread of its own:
 *
 * - the file streams through the checks, so its heap is small and bounded (resourceLimits);
 *   a file that needs more ends that thread, not the API, and is refused as too large;
 * - inflation is capped absolutely and by ratio to the compressed size while it happens
 *   (payload.ts), so a small gzip bomb stops at a few MiB;
 * - the KDF parameters are bounded before any key derivation (container.ts, src/crypto.ts);
 * - at most `maxConcurrent` checks run at once. Another upload meanwhile is refused at once
 *   (UploadChecksBusyError, answered 429 with Retry-After) rather than queued: the upload
 *   is already spooled to a temporary file, and queueing would let many large uploads pile
 *   up on disk with their requests open.
 *
 * Only the outcome comes back (the file's meta data and its sealed data key), never the
 * rows. Each check has a thread of its own, ended as soon as it answered: a thread keeps
 * its isolate, heap and the inflater's and checks' buffers until it ends, and a kept
 * thread held all of it through the staging and the restore that follow an upload.
 * Starting one costs little next to checking a file large enough for its memory to matter.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DomainError, type DomainErrorCode } from '../domain/errors.js';
import { SnapshotInvalidError, type SnapshotInvalidReason } from './errors.js';
import { DEFAULT_INFLATION_LIMITS, type InflationLimits, type SnapshotEnvelope } from './payload.js';
import type { TableSpec } from './tables.js';

/** What the worker thread is given (structured-cloned: no classes, no functions). */
export interface CheckRequest {
  /** The upload's spool file, read by the thread as a stream (never sent over as bytes). */
  path: string;
  password: string;
  specs: readonly Omit<TableSpec, 'entity'>[];
  serverKey: Uint8Array;
  limits: InflationLimits;
}

export type CheckAnswer =
  | { ok: true; meta: SnapshotEnvelope; upgradedThrough: string[]; sealedKey: string }
  | { ok: false; invalid: { reason: SnapshotInvalidReason; message: string } }
  | { ok: false; domain: { code: DomainErrorCode; message: string; details?: unknown } }
  | { ok: false; error: { message: string } };

/** A checked upload: what staging and the API's log need, without the rows. */
export interface CheckedUpload {
  meta: SnapshotEnvelope;
  upgradedThrough: string[];
  /** The file's data key sealed under the server key, with what the check covered. */
  sealedKey: string;
}

export class UploadChecksBusyError extends Error {
  constructor(readonly running: number) {
    super(`${running} snapshot uploads are being checked already; try again in a few seconds`);
    this.name = 'UploadChecksBusyError';
  }
}

export interface UploadCheckOptions {
  /** Checks at once; default 2. */
  maxConcurrent?: number;
  limits?: InflationLimits;
}


/**
 * A check's heap. The file streams through the checks (src/snapshots/reader.ts): a chunk
 * of text and its rows at a time, and the keys the checks remember live outside the JS
 * heap, so the heap does not grow with the file; this covers the modules the thread
 * loads, the per-config and per-node facts of the domain rules, and headroom.
 */
const HEAP_LIMIT_MB = 192;

/**
 * Where the worker's code is: next to this module, compiled (.js, run by node) or as
 * source (.ts, under tsx or the test runner, where the thread needs tsx's loader too).
 */
function workerEntry(): { url: URL; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(fromSource ? './check-worker.ts' : './check-worker.js', import.meta.url);
  if (!existsSync(fileURLToPath(url))) throw new Error(`the snapshot check worker is missing: ${fileURLToPath(url)}`);
  return { url, execArgv: fromSource ? ['--import', 'tsx'] : [] };
}

export class UploadChecker {
  private running = 0;
  private readonly busy = new Set<Worker>();
  private readonly maxConcurrent: number;
  private readonly limits: InflationLimits;
  private closed = false;

  constructor(options: UploadCheckOptions = {}) {
    this.maxConcurrent = options.maxConcurrent ?? 2;
    this.limits = options.limits ?? DEFAULT_INFLATION_LIMITS;
  }

  /**
   * Checks an upload, spooled to the file at `path`, in a worker thread; every refusal of
   * the file is a SnapshotInvalidError. The file must not change until this resolves.
   */
  async check(path: string, password: string, specs: readonly TableSpec[], serverKey: Buffer): Promise<CheckedUpload> {
    if (this.closed) throw new Error('the snapshot upload checker is closed');
    if (this.running >= this.maxConcurrent) throw new UploadChecksBusyError(this.running);
    this.running++;
    try {
      const request: CheckRequest = {
        path,
        password,
        specs: specs.map(({ entity: _entity, ...portable }) => portable),
        serverKey,
        limits: this.limits,
      };
      return await this.run(this.start(), request);
    } finally {
      this.running--;
    }
  }

  /** Ends every thread (the API is closing); a check under way fails. */
  async close(): Promise<void> {
    this.closed = true;
    const workers = [...this.busy];
    this.busy.clear();
    await Promise.all(workers.map((w) => w.terminate()));
  }

  private start(): Worker {
    const { url, execArgv } = workerEntry();
    const worker = new Worker(url, {
      execArgv,
      resourceLimits: { maxOldGenerationSizeMb: HEAP_LIMIT_MB, maxYoungGenerationSizeMb: 32 },
    });
    // An 'error' without a listener would throw in the API; run() answers those of a check.
    worker.on('error', () => undefined);
    this.busy.add(worker);
    return worker;
  }

  /** The thread's work is done, whatever its answer: it ends, returning its memory. */
  private end(worker: Worker): void {
    this.busy.delete(worker);
    void worker.terminate();
  }

  private run(worker: Worker, request: CheckRequest): Promise<CheckedUpload> {
    return new Promise<CheckedUpload>((resolve, reject) => {
      const done = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const onMessage = (answer: CheckAnswer) => {
        done();
        this.end(worker);
        if (answer.ok) {
          return resolve({ meta: answer.meta, upgradedThrough: answer.upgradedThrough, sealedKey: answer.sealedKey });
        }
        if ('invalid' in answer) {
          return reject(new SnapshotInvalidError(answer.invalid.reason, answer.invalid.message));
        }
        if ('domain' in answer) {
          return reject(new DomainError(answer.domain.code, answer.domain.message, answer.domain.details));
        }
        return reject(new Error(`the snapshot check failed: ${answer.error.message}`));
      };
      const onError = (err: NodeJS.ErrnoException) => {
        done();
        this.end(worker);
        if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
          return reject(new SnapshotInvalidError('too_large', 'checking the snapshot needs more memory than a check may use; refused'));
        }
        return reject(new Error(`the snapshot check failed: ${err.message}`));
      };
      const onExit = (code: number) => {
        done();
        this.busy.delete(worker);
        reject(new Error(`the snapshot check ended without an answer (exit code ${code})`));
      };
      worker.on('message', onMessage);
      worker.once('error', onError);
      worker.once('exit', onExit);
      worker.postMessage(request);
    });
  }
}
