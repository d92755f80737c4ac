/**
 * Snapshots stream: a snapshot larger than a process's whole JS heap is exported (into a
 * spool file, encrypted as it is stored in pieces), downloaded into a file as the API
 * spools an upload, checked and staged from that file as the API does, read back from its
 * stored pieces and restored equal, on both databases, in a child process whose heap is
 * capped below the file's size (test/support/snapshot-memory-child.ts). Anything that held
 * the whole file, its compressed body, its inflated text or its rows as JS values would
 * end the child with an out-of-memory crash.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createTestDatabase, DIALECTS } from '../support/db.js';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');
/** Old generation and young generation caps of the child: its heap stays under ~70 MiB. */
const OLD_SPACE_MB = 64;
const SEMI_SPACE_MB = 2;

describe.each(DIALECTS)('a snapshot larger than the heap on %s', (dialect) => {
  it('is exported, downloaded, checked and staged from a spooled upload, and restored equal by a process whose heap is smaller than the file', async () => {
    const db = await createTestDatabase(dialect, 'snapshot-memory');
    try {
      const { stdout } = await run(
        process.execPath,
        [`--max-old-space-size=${OLD_SPACE_MB}`, `--max-semi-space-size=${SEMI_SPACE_MB}`, '--import', 'tsx', 'test/support/snapshot-memory-child.ts'],
        { cwd: root, env: { ...process.env, ...db.env, MEMORY_AUDIT_ROWS: '34000' }, maxBuffer: 1 << 20, timeout: 420_000 },
      );
      const out = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
        before: string;
        after: string;
        fileBytes: number;
        uploaded: number;
        stagedBytes: number;
        sameFile: boolean;
        heapLimit: number;
        restored: Record<string, number>;
      };
      // The point of the test: the file is larger than everything the child's heap may hold.
      expect(out.heapLimit).toBeLessThan(80 * 2 ** 20);
      expect(out.fileBytes).toBeGreaterThan(out.heapLimit);
      // The export as stored, downloaded and staged is the same file, byte for byte.
      expect(out.uploaded).toBe(out.fileBytes);
      expect(out.stagedBytes).toBe(out.fileBytes);
      expect(out.sameFile).toBe(true);
      expect(out.restored.audit_record).toBe(34_000);
      expect(out.after).toBe(out.before);
    } finally {
      await db.drop();
    }
  }, 450_000);
});
