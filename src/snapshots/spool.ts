/**
 * A temporary file for bytes too large to hold: an export's compressed body until its
 * length is known (writer.ts), an upload until it has been checked and staged
 * (src/api/routes/snapshots.ts). Each lives in a directory of its own under the system's
 * temporary directory, readable by this user only, and remove() takes the directory away;
 * callers call it on every path, errors included.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Bytes read back at a time. */
const READ_BYTES = 1024 * 1024;

export class SpoolFile {
  private handle: FileHandle | undefined;
  private bytes = 0;
  private removed = false;

  private constructor(
    private readonly dir: string,
    /** The file's path (for a writer other than append(), such as a stream). */
    readonly path: string,
  ) {}

  /** A new empty file; `prefix` names its directory (meshq-export-…, meshq-upload-…). */
  static async create(prefix: string): Promise<SpoolFile> {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    const spool = new SpoolFile(dir, join(dir, 'spool'));
    try {
      spool.handle = await open(spool.path, 'wx', 0o600);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return spool;
  }

  /** Bytes appended so far. */
  get size(): number {
    return this.bytes;
  }

  async append(bytes: Buffer): Promise<void> {
    if (!this.handle) throw new Error('spool file: closed');
    let at = 0;
    while (at < bytes.length) {
      const { bytesWritten } = await this.handle.write(bytes, at, bytes.length - at);
      at += bytesWritten;
    }
    this.bytes += bytes.length;
  }

  /** Ends writing through append() (a stream writing to `path` closes its own descriptor). */
  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }

  /** The file's bytes, from the start, a megabyte at a time. */
  async *read(): AsyncGenerator<Buffer> {
    await this.close();
    if (this.removed) throw new Error('spool file: removed');
    yield* createReadStream(this.path, { highWaterMark: READ_BYTES }) as AsyncIterable<Buffer>;
  }

  /** Removes the file and its directory; safe to call more than once. */
  async remove(): Promise<void> {
    this.removed = true;
    await this.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}
