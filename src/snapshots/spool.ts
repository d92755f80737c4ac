/**
 * A temporary file for bytes too large to hold: an export's compressed body until its
 * length is known (writer.ts), an upload until it has been checked and staged
 * (src/api/routes/snapshots.ts). Each lives in a directory of its own under the system's
 * temporary directory, readable by this user only, and remove() takes the directory away;
 * callers call it on every path, errors included.
 *
 * An export's body is the business data in the clear (compressed), which otherwise never
 * rests anywhere unencrypted: a `sealed` spool encrypts what it is given under a key of
 * its own, made for it and held only in memory (AES-256-GCM), and checks the tag when it
 * is read back, so the file on disk is worthless once the process forgets the key, and a
 * change to it is an error rather than a different export. An upload is already
 * encrypted and is spooled as it is.
 *
 * A process killed outright (SIGKILL, the OOM killer, a power cut) removes nothing, so a
 * directory's name carries the pid of the process that made it, and sweepStaleSpools()
 * at start-up removes those whose process is gone.
 */
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCM } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Bytes read back at a time. */
const READ_BYTES = 1024 * 1024;

interface Seal {
  key: Buffer;
  iv: Buffer;
  cipher: CipherGCM | undefined;
  tag: Buffer | undefined;
}

export class SpoolFile {
  private handle: FileHandle | undefined;
  private bytes = 0;
  private removed = false;

  private constructor(
    private readonly dir: string,
    /** The file's path (what the API's check thread reads). */
    readonly path: string,
    private readonly seal: Seal | undefined,
  ) {}

  /** A new empty file; `prefix` names its directory (meshq-export-…, meshq-upload-…). */
  static async create(prefix: string, opts: { sealed?: boolean } = {}): Promise<SpoolFile> {
    const dir = await mkdtemp(join(tmpdir(), `${prefix}${process.pid}-`));
    let seal: Seal | undefined;
    if (opts.sealed) {
      const key = randomBytes(32);
      const iv = randomBytes(12);
      seal = { key, iv, cipher: createCipheriv('aes-256-gcm', key, iv), tag: undefined };
    }
    const spool = new SpoolFile(dir, join(dir, 'spool'), seal);
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

  async append(plain: Buffer): Promise<void> {
    if (!this.handle) throw new Error('spool file: closed');
    const bytes = this.seal ? this.seal.cipher!.update(plain) : plain;
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
    if (handle && this.seal?.cipher) {
      const last = this.seal.cipher.final();
      this.seal.tag = this.seal.cipher.getAuthTag();
      this.seal.cipher = undefined;
      if (last.length > 0) await handle.write(last);
    }
    await handle?.close();
  }

  /** The file's bytes (as appended), from the start, a megabyte at a time. */
  async *read(): AsyncGenerator<Buffer> {
    await this.close();
    if (this.removed) throw new Error('spool file: removed');
    const stream = createReadStream(this.path, { highWaterMark: READ_BYTES }) as AsyncIterable<Buffer>;
    const seal = this.seal;
    if (!seal) return yield* stream;
    const decipher = createDecipheriv('aes-256-gcm', seal.key, seal.iv);
    decipher.setAuthTag(seal.tag!);
    for await (const chunk of stream) yield decipher.update(chunk);
    try {
      decipher.final();
    } catch {
      throw new Error('spool file: changed on disk while it was in use');
    }
  }

  /** Removes the file and its directory; safe to call more than once. */
  async remove(): Promise<void> {
    this.removed = true;
    this.seal?.key.fill(0);
    await this.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** meshq-export-<pid>-XXXXXX, meshq-upload-<pid>-XXXXXX (mkdtemp's suffix has no '-'). */
const SPOOL_DIR = /^meshq-(?:export|upload)-(\d+)-[^-]+$/;

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Removes the spool directories under the temporary directory that no running process
 * owns: their pid is gone, or is this process's own and the directory is older than this
 * process (a container restarts its main process under the same pid). Another live
 * process's spools are never touched; a pid reused by an unrelated process keeps its
 * directory until that process is gone too. Returns the directories removed.
 */
export async function sweepStaleSpools(): Promise<string[]> {
  const root = tmpdir();
  const started = Date.now() - process.uptime() * 1000;
  const removed: string[] = [];
  for (const name of await readdir(root)) {
    const pid = Number(SPOOL_DIR.exec(name)?.[1] ?? 0);
    if (pid <= 0) continue;
    const dir = join(root, name);
    const stale = pid === process.pid ? ((await stat(dir).catch(() => undefined))?.mtimeMs ?? Infinity) < started : processGone(pid);
    if (!stale) continue;
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}
