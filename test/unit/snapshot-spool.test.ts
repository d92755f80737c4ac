/**
 * Spool files (src/snapshots/spool.ts): bytes read back as appended; a sealed one (an
 * export's compressed body) never holds them in the clear on disk and refuses a file
 * changed behind its back; remove() leaves nothing behind, whenever it is called; an
 * export's spool file is gone once its bytes were read, and when the writer was given up
 * on; the start-up sweep removes what killed processes left and nothing a live one owns. This test process has a temporary directory of its own (TMPDIR).
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { deriveKey, newKdfParams } from '../../src/crypto.js';
import { exportEnvelope } from '../../src/snapshots/export.js';
import { SpoolFile, sweepStaleSpools } from '../../src/snapshots/spool.js';
import { SnapshotWriter } from '../../src/snapshots/writer.js';
import { decodeSnapshot } from '../../src/snapshots/payload.js';
import { finishToBuffer, gather } from '../support/snapshot-bytes.js';
import { ownTmpdir } from '../support/tmpdir.js';

describe('spool files', () => {
  it('reads back what was appended, as many times as asked, and removes its directory', async () => {
    const spool = await SpoolFile.create('meshq-spool-unit-');
    const parts = [randomBytes(10), randomBytes(3 * 1024 * 1024 + 5), Buffer.alloc(0), randomBytes(1)];
    for (const p of parts) await spool.append(p);
    expect(spool.size).toBe(parts.reduce((n, p) => n + p.length, 0));
    expect((await gather(spool.read())).equals(Buffer.concat(parts))).toBe(true);
    expect((await gather(spool.read())).equals(Buffer.concat(parts))).toBe(true);
    expect(readFileSync(spool.path).equals(Buffer.concat(parts))).toBe(true);
    await spool.remove();
    expect(existsSync(dirname(spool.path))).toBe(false);
    await spool.remove();
  });

  it('keeps a sealed spool encrypted on disk and refuses one changed there', async () => {
    const spool = await SpoolFile.create('meshq-spool-unit-', { sealed: true });
    const plain = Buffer.from('{"tables":{"node":[{"name":"visible?"}]}}'.repeat(50_000));
    await spool.append(plain.subarray(0, 1000));
    await spool.append(plain.subarray(1000));
    await spool.close();
    const onDisk = readFileSync(spool.path);
    expect(onDisk.length).toBe(plain.length);
    expect(onDisk.includes(Buffer.from('visible?'))).toBe(false);
    expect((await gather(spool.read())).equals(plain)).toBe(true);
    onDisk[12345] = onDisk[12345]! ^ 1;
    writeFileSync(spool.path, onDisk);
    await expect(gather(spool.read())).rejects.toThrow(/changed on disk/);
    await spool.remove();
    expect(existsSync(dirname(spool.path))).toBe(false);
  });
});

describe("an export's spool file", () => {
  const ownTmp = ownTmpdir('meshq-spool-unit-tmp-');
  const spools = () => readdirSync(ownTmp).filter((n) => n.startsWith('meshq-export-'));

  const writer = async (rows: number) => {
    const kdf = newKdfParams({ N: 2 ** 10 });
    const key = await deriveKey('pw', kdf);
    const w = new SnapshotWriter(exportEnvelope('x'), key, kdf);
    w.table('audit_record');
    // Text enough for several gzip members.
    // Blobs that do not repeat within deflate's window: the file must not look like a zip bomb.
    const blobs = Array.from({ length: 64 }, () => randomBytes(3000).toString('base64'));
    for (let i = 0; i < rows; i++) await w.rows(JSON.stringify({ id: i, blob: blobs[i % blobs.length] }), 1);
    return { w, key };
  };

  it('is gone once the file was read, and the file reads back', async () => {
    const { w, key } = await writer(8000);
    expect(spools()).toHaveLength(1);
    const file = await finishToBuffer(w);
    expect(spools()).toEqual([]);
    expect(decodeSnapshot(file, key).counts).toEqual({ audit_record: 8000 });
  });

  it('is gone when the writer is given up on, before or after finish', async () => {
    const early = await writer(8000);
    await early.w.discard();
    expect(spools()).toEqual([]);
    const late = await writer(8000);
    const file = await late.w.finish();
    const it = file.bytes[Symbol.asyncIterator]();
    await it.next();
    await late.w.discard();
    expect(spools()).toEqual([]);
  });
});

describe('the start-up sweep of spool directories', () => {
  const ownTmp = ownTmpdir('meshq-spool-sweep-tmp-');
  it('removes the directories of processes that are gone, and of this pid from before this process, and keeps the rest', async () => {
    const root = tmpdir();
    expect(root).toBe(ownTmp);
    // A pid that was just used and has ended.
    const gonePid = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    const dirs = {
      gone: join(root, `meshq-upload-${gonePid}-aB3dE9`),
      goneExport: join(root, `meshq-export-${gonePid}-Zz0123`),
      oursBefore: join(root, `meshq-export-${process.pid}-old000`),
      oursNow: join(root, `meshq-upload-${process.pid}-new000`),
      parentAlive: join(root, `meshq-upload-${process.ppid}-live00`),
      notOurs: join(root, `meshq-upload-nopid`),
    };
    for (const dir of Object.values(dirs)) {
      mkdirSync(dir);
      writeFileSync(join(dir, 'spool'), 'bytes');
    }
    const beforeStart = (Date.now() - process.uptime() * 1000 - 60_000) / 1000;
    utimesSync(dirs.oursBefore, beforeStart, beforeStart);
    const live = await SpoolFile.create('meshq-upload-');

    const removed = await sweepStaleSpools();

    expect(removed.sort()).toEqual([dirs.gone, dirs.goneExport, dirs.oursBefore].sort());
    for (const dir of [dirs.gone, dirs.goneExport, dirs.oursBefore]) expect(existsSync(dir)).toBe(false);
    for (const dir of [dirs.oursNow, dirs.parentAlive, dirs.notOurs, dirname(live.path)]) expect(existsSync(dir)).toBe(true);
    expect(dirname(live.path).startsWith(join(root, `meshq-upload-${process.pid}-`))).toBe(true);
    await live.remove();
  });
});
