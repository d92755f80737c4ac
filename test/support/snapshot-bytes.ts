/**
 * Tests' side of streamed snapshot files: a written file or a stored file's bytes
 * gathered into one Buffer (small files only), a Buffer handed over in pieces as a stream
 * would, and a Buffer in a temporary file as the API spools an upload.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UploadSource } from '../../src/snapshots/restore.js';
import type { SnapshotWriter } from '../../src/snapshots/writer.js';

export async function gather(bytes: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of bytes) parts.push(b);
  return Buffer.concat(parts);
}

/** The whole file of a writer that has been given every row. */
export async function finishToBuffer(writer: SnapshotWriter): Promise<Buffer> {
  try {
    const file = await writer.finish();
    const bytes = await gather(file.bytes);
    if (bytes.length !== file.size) throw new Error(`written ${bytes.length} bytes, announced ${file.size}`);
    return bytes;
  } finally {
    await writer.discard();
  }
}

/** A Buffer in pieces of `step` bytes. */
export async function* piecesOf(buf: Buffer, step = 100_000): AsyncGenerator<Buffer> {
  for (let at = 0; at < buf.length; at += step) yield buf.subarray(at, at + step);
}

/** A Buffer as the source of an upload check (openUpload), read in pieces. */
export function uploadSource(buf: Buffer): UploadSource {
  return { size: buf.length, read: () => piecesOf(buf) };
}

/** Runs `fn` with `buf` in a temporary file, removed afterwards. */
export async function withTempFile<T>(buf: Buffer, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'meshq-test-file-'));
  try {
    const path = join(dir, 'file');
    await writeFile(path, buf);
    return await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
