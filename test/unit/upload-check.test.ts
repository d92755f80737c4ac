/**
 * The API's upload check in worker threads: refusals cross the thread boundary with their
 * reason, inflation stops at the cap inside the thread, checks beyond the limit are
 * refused at once, and closing ends the threads.
 */
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { deriveKey, newKdfParams } from '../../src/crypto.js';
import { encryptSnapshotBody } from '../../src/snapshots/container.js';
import { SnapshotInvalidError } from '../../src/snapshots/errors.js';
import { UploadChecker, UploadChecksBusyError } from '../../src/snapshots/upload-check.js';
import { withTempFile } from '../support/snapshot-bytes.js';

const PASSWORD = 'check-password';
const serverKey = randomBytes(32);

async function refusal(p: Promise<unknown>): Promise<SnapshotInvalidError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SnapshotInvalidError);
  return err as SnapshotInvalidError;
}

describe('upload checks in worker threads', () => {
  const checker = new UploadChecker({
    maxConcurrent: 2,
    limits: { maxBytes: 4 * 1024 * 1024, maxRatio: 8, floorBytes: 1024 * 1024 },
  });
  afterAll(() => checker.close());

  it('answers a refusal with its reason and message, as a SnapshotInvalidError', async () => {
    const e = await withTempFile(Buffer.from('not a snapshot at all'), (path) => refusal(checker.check(path, PASSWORD, [], serverKey)));
    expect(e.reason).toBe('not_snapshot');
    expect(e.message).toMatch(/MESHQSNP/);
  });

  it('stops a bomb at the checker’s own inflation limits', async () => {
    const kdf = newKdfParams({ N: 2 ** 10 });
    const bomb = encryptSnapshotBody(gzipSync(Buffer.alloc(32 * 1024 * 1024, 0x20)), await deriveKey(PASSWORD, kdf), kdf);
    const e = await withTempFile(bomb, (path) => refusal(checker.check(path, PASSWORD, [], serverKey)));
    expect(e.reason).toBe('too_large');
    // The floor (1 MiB) applies: 8 times the ~32 KiB body is less.
    expect(e.message).toMatch(/inflate beyond 1048576 bytes/);
  });

  it('refuses a check beyond the concurrent limit at once, and takes new ones once those finish', async () => {
    await withTempFile(Buffer.from('MESHQSNP'), async (file) => {
      // Each check has a thread of its own: either may answer first.
      const first = refusal(checker.check(file, PASSWORD, [], serverKey));
      const second = refusal(checker.check(file, PASSWORD, [], serverKey));
      await expect(checker.check(file, PASSWORD, [], serverKey)).rejects.toBeInstanceOf(UploadChecksBusyError);
      expect((await first).reason).toBe('truncated');
      expect((await second).reason).toBe('truncated');
      expect((await refusal(checker.check(file, PASSWORD, [], serverKey))).reason).toBe('truncated');
    });
  });

  it('refuses checks once closed', async () => {
    const closing = new UploadChecker();
    await withTempFile(Buffer.alloc(0), async (empty) => {
      expect((await refusal(closing.check(empty, PASSWORD, [], serverKey))).reason).toBe('truncated');
      await closing.close();
      await expect(closing.check(empty, PASSWORD, [], serverKey)).rejects.toThrow(/closed/);
    });
  });
});
