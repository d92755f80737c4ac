/**
 * The API's check of a restore upload, off its event loop. Decrypting, inflating, parsing
 * and checking a file are synchronous and, for a hostile file, as costly as the file
 * makes them; on the API's thread one upload would stall every request and could exhaust
 * the process's heap. So each upload is checked in a worker thread of its own:
 *
 * - its heap is bounded (resourceLimits), sized from the most this file may inflate to;
 *   a file that needs more ends that thread, not the API, and is refused as too large;
 * - inflation is capped absolutely and by ratio to the compressed size while it happens
 *   (payload.ts), so a small gzip bomb stops at a few MiB;
 * - the KDF parameters are bounded before any key derivation (container.ts, src/crypto.ts);
 * - at most `maxConcurrent` checks run at once. Another upload meanwhile is refused at once
 *   (UploadChecksBusyError, answered 429 with Retry-After) rather than queued: the upload
 *   is already in memory, and queueing would let many large uploads pile up there.
 *
 * Only the outcome comes back (the file's meta data and its sealed data key), never the
 * rows. The thread ends after each check, returning its whole heap.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DomainError, type DomainErrorCode } from '../domain/errors.js';
import { SnapshotInvalidError, type SnapshotInvalidReason } from './errors.js';
import { DEFAULT_INFLATION_LIMITS, inflationCap, type InflationLimits, type SnapshotEnvelope } from './payload.js';
import type { TableSpec } from './tables.js';

/** What the worker thread is given (structured-cloned: no classes, no functions). */
export interface CheckRequest {
  file: Uint8Array;
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

const MiB = 1024 * 1024;

/**
 * The check's heap: parsed rows take a few times their JSON text, which itself is bounded
 * by the inflation cap; the constant covers the modules the thread loads.
 */
const heapLimitMb = (inflatedCap: number): number => Math.ceil((6 * inflatedCap) / MiB) + 128;

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
  private readonly maxConcurrent: number;
  private readonly limits: InflationLimits;

  constructor(options: UploadCheckOptions = {}) {
    this.maxConcurrent = options.maxConcurrent ?? 2;
    this.limits = options.limits ?? DEFAULT_INFLATION_LIMITS;
  }

  /** Checks an upload in a worker thread; every refusal of the file is a SnapshotInvalidError. */
  async check(file: Buffer, password: string, specs: readonly TableSpec[], serverKey: Buffer): Promise<CheckedUpload> {
    if (this.running >= this.maxConcurrent) throw new UploadChecksBusyError(this.running);
    this.running++;
    try {
      return await this.run(file, password, specs, serverKey);
    } finally {
      this.running--;
    }
  }

  private run(file: Buffer, password: string, specs: readonly TableSpec[], serverKey: Buffer): Promise<CheckedUpload> {
    const request: CheckRequest = {
      file,
      password,
      specs: specs.map(({ entity: _entity, ...portable }) => portable),
      serverKey,
      limits: this.limits,
    };
    const { url, execArgv } = workerEntry();
    const cap = inflationCap(file.length, this.limits);
    return new Promise<CheckedUpload>((resolve, reject) => {
      let answer: CheckAnswer | undefined;
      const worker = new Worker(url, {
        workerData: request,
        execArgv,
        resourceLimits: { maxOldGenerationSizeMb: heapLimitMb(cap), maxYoungGenerationSizeMb: 32 },
        stdout: false,
        stderr: false,
      });
      worker.once('message', (message: CheckAnswer) => (answer = message));
      worker.once('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
          reject(new SnapshotInvalidError('too_large', `checking the snapshot needs more memory than its size allows (${heapLimitMb(cap)} MiB); refused`));
        } else {
          reject(new Error(`the snapshot check failed: ${err.message}`));
        }
      });
      worker.once('exit', (code) => {
        if (!answer) return reject(new Error(`the snapshot check ended without an answer (exit code ${code})`));
        if (answer.ok) return resolve({ meta: answer.meta, upgradedThrough: answer.upgradedThrough, sealedKey: answer.sealedKey });
        if ('invalid' in answer) return reject(new SnapshotInvalidError(answer.invalid.reason, answer.invalid.message));
        if ('domain' in answer) return reject(new DomainError(answer.domain.code, answer.domain.message, answer.domain.details));
        return reject(new Error(`the snapshot check failed: ${answer.error.message}`));
      });
    });
  }
}
