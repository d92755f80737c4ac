/**
 * A temporary directory of the suite's own as TMPDIR (where meshq spools uploads and
 * exports), so a test can see every file meshq leaves there; removed after the suite.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';

export function ownTmpdir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const previous = process.env.TMPDIR;
  beforeAll(() => {
    process.env.TMPDIR = dir;
  });
  afterAll(() => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}
