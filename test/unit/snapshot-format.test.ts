import { beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  DEFAULT_KDF_PARAMS,
  deriveKey,
  generateServerKey,
  newKdfParams,
  parseServerKey,
  seal,
  unseal,
} from '../../src/crypto.js';
import type { KdfParamsWithSalt } from '../../src/crypto.js';
import { decryptSnapshotBody, deriveFileKey, encryptSnapshotBody, readHeader, SNAPSHOT_FORMAT_VERSION } from '../../src/snapshots/container.js';
import { decodeSnapshot, DEFAULT_INFLATION_LIMITS, inflationCap, type SnapshotPayload } from '../../src/snapshots/payload.js';
import { encodeSnapshot, SnapshotWriter } from '../../src/snapshots/writer.js';
import { finishToBuffer } from '../support/snapshot-bytes.js';

/** A payload written through SnapshotWriter, in slices of rows as an export writes them. */
async function encodeSnapshotAsync(payload: SnapshotPayload, key: Buffer, kdf: KdfParamsWithSalt): Promise<Buffer> {
  const { tables, ...envelope } = payload;
  const writer = new SnapshotWriter(envelope, key, kdf);
  for (const [name, rows] of Object.entries(tables)) {
    writer.table(name);
    for (let at = 0; at < rows.length; at += 2000) {
      const slice = rows.slice(at, at + 2000);
      await writer.rows(JSON.stringify(slice).slice(1, -1), slice.length);
    }
  }
  return finishToBuffer(writer);
}
import { SnapshotInvalidError } from '../../src/snapshots/errors.js';

const CHEAP = { N: 2 ** 10 };
const openSnapshot = async (file: Buffer, password: string) => decodeSnapshot(file, await deriveFileKey(file, file.length, password));
const PASSWORD = 'correct horse battery staple';

function payload(overrides: Partial<SnapshotPayload> = {}): SnapshotPayload {
  const created = new Date('2026-11-24T10:11:12.345Z');
  const tables = {
    network: [
      {
        id: '0b7d3c1e-7f40-4b9e-9a57-4c3f6f1f3a10',
        name: 'Zürich ↔ 東京 🛰️',
        cidr: '10.20.0.0/16',
        // Dates travel as ISO strings: that is what JSON carries and what restore parses.
        createdAt: created,
        settings: { mtu: 1420, tags: ['a', 'b'], nested: { on: true, off: false, none: null } },
      },
    ],
    peer: [
      { id: 'p1', networkId: '0b7d3c1e-7f40-4b9e-9a57-4c3f6f1f3a10', publicKey: 'x'.repeat(44), port: 51820 },
      { id: 'p2', networkId: '0b7d3c1e-7f40-4b9e-9a57-4c3f6f1f3a10', note: 'e\u0301 combining, "quotes", \\ and \n newline' },
    ],
    empty_table: [],
  } as unknown as SnapshotPayload['tables'];
  return {
    formatVersion: SNAPSHOT_FORMAT_VERSION,
    schemaVersion: 'Migration20261124000000_initial',
    appVersion: '0.1.0',
    createdAt: created.toISOString(),
    counts: { network: 1, peer: 2, empty_table: 0 },
    tables,
    ...overrides,
  };
}

/** Runs fn and returns the SnapshotInvalidError it must throw. */
function refusal(fn: () => unknown): SnapshotInvalidError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SnapshotInvalidError);
    const e = err as SnapshotInvalidError;
    expect(e.code).toBe('SNAPSHOT_INVALID');
    return e;
  }
  throw new Error('expected a SnapshotInvalidError, nothing was thrown');
}

function flip(buf: Buffer, at: number): Buffer {
  const copy = Buffer.from(buf);
  copy[at] = copy[at]! ^ 0x01;
  return copy;
}

describe('snapshot file format', () => {
  let kdf: KdfParamsWithSalt;
  let key: Buffer;
  let file: Buffer;
  let headerLength: number;

  beforeAll(async () => {
    kdf = newKdfParams(CHEAP);
    key = await deriveKey(PASSWORD, kdf);
    file = encodeSnapshot(payload(), key, kdf);
    headerLength = readHeader(file).headerLength;
  });

  it('round-trips tables with JSON values, ISO dates and unicode', () => {
    const decoded = decodeSnapshot(file, key);
    expect(decoded).toEqual(JSON.parse(JSON.stringify(payload())));
    expect(decoded.tables.network![0]!.createdAt).toBe('2026-11-24T10:11:12.345Z');
    expect(decoded.tables.network![0]!.name).toBe('Zürich ↔ 東京 🛰️');
    expect(decoded.tables.peer![1]!.note).toBe('e\u0301 combining, "quotes", \\ and \n newline');
    expect(decoded.tables.empty_table).toEqual([]);
  });

  it('opens with the password alone, reading the KDF parameters from the header', async () => {
    const header = readHeader(file);
    expect(header).toMatchObject({ formatVersion: 1, kdf: { algorithm: 'scrypt', N: CHEAP.N, r: 8, p: 1 } });
    expect(header.kdf.salt.equals(kdf.salt)).toBe(true);
    expect(header.totalLength).toBe(file.length);
    expect(await openSnapshot(file, PASSWORD)).toEqual(decodeSnapshot(file, key));
  });

  it('draws a fresh IV for every file encrypted under the same key', () => {
    const again = encodeSnapshot(payload(), key, kdf);
    expect(readHeader(again).iv.equals(readHeader(file).iv)).toBe(false);
    expect(again.equals(file)).toBe(false);
  });

  it('refuses a wrong password, saying it cannot tell that from a modified file', async () => {
    const wrong = await openSnapshot(file, 'Correct horse battery staple').catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(SnapshotInvalidError);
    expect((wrong as SnapshotInvalidError).reason).toBe('auth_failed');
    expect((wrong as Error).message).toMatch(/wrong password or the file was modified/);
    expect((wrong as Error).message).toMatch(/cannot tell/);
  });

  it('keeps a file openable with the old password after a password change', async () => {
    const newKdf = newKdfParams(CHEAP);
    const newKey = await deriveKey('a brand new password', newKdf);
    expect(newKey.equals(key)).toBe(false);
    const newFile = encodeSnapshot(payload(), newKey, newKdf);
    await expect(openSnapshot(file, PASSWORD)).resolves.toBeTruthy();
    await expect(openSnapshot(file, 'a brand new password')).rejects.toThrow(/wrong password/);
    await expect(openSnapshot(newFile, 'a brand new password')).resolves.toBeTruthy();
  });

  it('refuses a change to any single header byte', () => {
    for (let at = 0; at < headerLength; at++) {
      const e = refusal(() => decodeSnapshot(flip(file, at), key));
      expect(e.message.length).toBeGreaterThan(10);
    }
  });

  it('refuses a changed salt, IV or KDF parameter as an authentication failure (header is GCM additional data)', () => {
    const header = readHeader(file);
    const saltAt = headerLength - 8 - 12 - 16;
    const ivAt = headerLength - 8 - 12;
    const rAt = saltAt - 8;
    expect(file.subarray(saltAt, saltAt + 16).equals(header.kdf.salt)).toBe(true);
    expect(file.subarray(ivAt, ivAt + 12).equals(header.iv)).toBe(true);
    for (const at of [saltAt, saltAt + 15, ivAt, ivAt + 11]) {
      expect(refusal(() => decodeSnapshot(flip(file, at), key)).reason).toBe('auth_failed');
    }
    const r9 = Buffer.from(file);
    r9.writeUInt32BE(9, rAt);
    expect(refusal(() => decodeSnapshot(r9, key)).reason).toBe('auth_failed');
  });

  it('refuses one changed byte in the ciphertext and in the tag', () => {
    const cases: Array<[string, number]> = [
      ['first ciphertext byte', headerLength],
      ['middle ciphertext byte', headerLength + Math.floor((file.length - 16 - headerLength) / 2)],
      ['last ciphertext byte', file.length - 17],
      ['first tag byte', file.length - 16],
      ['last tag byte', file.length - 1],
    ];
    for (const [, at] of cases) {
      const e = refusal(() => decodeSnapshot(flip(file, at), key));
      expect(e.reason).toBe('auth_failed');
      expect(e.message).toMatch(/wrong password or the file was modified/);
    }
  });

  it('refuses every truncation as truncated', () => {
    const lengths = [0, 1, 7, 8, 9, 10, 12, 13, 24, headerLength - 1, headerLength, headerLength + 1,
      Math.floor(file.length / 2), file.length - 16, file.length - 1];
    for (const length of lengths) {
      const e = refusal(() => decodeSnapshot(file.subarray(0, length), key));
      expect(e.reason, `length ${length}`).toBe('truncated');
      expect(e.message).toMatch(/truncated/);
    }
    expect(refusal(() => decodeSnapshot(Buffer.alloc(0), key)).message).toMatch(/empty/);
  });

  it('refuses every truncation before deriving a key from the password', async () => {
    for (const length of [0, 5, headerLength - 1, file.length - 1]) {
      const err = await openSnapshot(file.subarray(0, length), PASSWORD).catch((e: unknown) => e);
      expect((err as SnapshotInvalidError).reason).toBe('truncated');
    }
  });

  it('refuses bytes appended after the end', () => {
    const e = refusal(() => decodeSnapshot(Buffer.concat([file, Buffer.from('extra')]), key));
    expect(e.reason).toBe('trailing_data');
    expect(e.message).toMatch(/5 unexpected bytes/);
  });

  it('refuses garbage as not a meshq snapshot', () => {
    const samples = [
      randomBytes(200),
      Buffer.from('{"formatVersion":1}'),
      Buffer.from([0x1f, 0x8b, 0x08, 0x00]),
      Buffer.from('MESHQSN!'),
      Buffer.from('X'),
    ];
    for (const sample of samples) {
      const e = refusal(() => decodeSnapshot(sample, key));
      expect(e.reason).toBe('not_snapshot');
      expect(e.message).toMatch(/not a meshq snapshot/);
    }
  });

  it('refuses a newer format version, naming both versions', () => {
    const v7 = Buffer.from(file);
    v7.writeUInt16BE(7, 8);
    const e = refusal(() => decodeSnapshot(v7, key));
    expect(e.reason).toBe('unsupported_version');
    expect(e.message).toMatch(/format version 7 is newer than this meshq understands \(1\)/);
    const v0 = Buffer.from(file);
    v0.writeUInt16BE(0, 8);
    expect(refusal(() => readHeader(v0)).reason).toBe('unsupported_version');
  });

  it('refuses an unknown KDF and out-of-range KDF parameters without deriving anything', async () => {
    const kdf9 = Buffer.from(file);
    kdf9[10] = 9;
    expect(refusal(() => readHeader(kdf9)).reason).toBe('unsupported_kdf');

    // A crafted header must not make the API allocate gigabytes for scrypt.
    const hugeN = Buffer.from(file);
    hugeN.writeUInt32BE(2 ** 30, 13);
    expect(refusal(() => readHeader(hugeN)).reason).toBe('bad_header');
    const err = await openSnapshot(hugeN, PASSWORD).catch((e: unknown) => e);
    expect((err as SnapshotInvalidError).reason).toBe('bad_header');

    // Within what scrypt allows but far above what meshq writes: refused from the header too.
    const costly = Buffer.from(file);
    costly.writeUInt32BE(2 ** 18, 13);
    expect(refusal(() => readHeader(costly)).message).toMatch(/scrypt N must be a power of two between 2 and 65536 \(got 262144\)/);
    const manyLanes = Buffer.from(file);
    manyLanes.writeUInt32BE(2 ** 15, 13);
    manyLanes.writeUInt32BE(3, 21);
    expect(refusal(() => readHeader(manyLanes)).message).toMatch(/costs more than 64 MiB of work/);

    const notPow2 = Buffer.from(file);
    notPow2.writeUInt32BE(1000, 13);
    expect(refusal(() => readHeader(notPow2)).message).toMatch(/power of two/);
  });

  describe('contents that authenticate but are not a valid payload', () => {
    const wrap = (body: Buffer) => encryptSnapshotBody(body, key, kdf);

    it('refuses a body that is not gzip', () => {
      const e = refusal(() => decodeSnapshot(wrap(Buffer.from('plain text, not gzip')), key));
      expect(e.reason).toBe('bad_compression');
      const cut = gzipSync(Buffer.from(JSON.stringify(payload())));
      expect(refusal(() => decodeSnapshot(wrap(cut.subarray(0, cut.length - 10)), key)).reason).toBe('bad_compression');
    });

    it('refuses gzip that is not JSON', () => {
      expect(refusal(() => decodeSnapshot(wrap(gzipSync(Buffer.from('{"tables": [1, 2'))), key)).reason).toBe('bad_json');
    });

    it('refuses JSON not matching the payload schema, saying where', () => {
      const bad = (value: unknown) => wrap(gzipSync(Buffer.from(JSON.stringify(value))));
      const good = JSON.parse(JSON.stringify(payload())) as Record<string, unknown>;
      const cases: Array<[unknown, RegExp]> = [
        [[1, 2, 3], /payload/],
        [{ ...good, createdAt: 'yesterday' }, /createdAt/],
        [{ ...good, schemaVersion: undefined }, /schemaVersion/],
        [{ ...good, tables: { peer: [['not', 'an', 'object']] }, counts: { peer: 1 } }, /tables\.peer\.0/],
        [{ ...good, tables: { peer: 'rows' }, counts: { peer: 0 } }, /tables\.peer/],
        [{ ...good, counts: { ...(good.counts as object), peer: -1 } }, /counts\.peer/],
        [{ ...good, counts: { network: 1, peer: 3, empty_table: 0 } }, /count 3 does not match 2 rows/],
        [{ ...good, counts: { network: 1, empty_table: 0 } }, /counts\.peer/],
        [{ ...good, formatVersion: 2 }, /format version 2, header says 1/],
        // A message names the first few problems, not every bad row of a large file.
        [{ ...good, tables: { peer: Array.from({ length: 1000 }, () => 1) }, counts: { peer: 1000 } }, /; and 995 more$/],
      ];
      for (const [value, message] of cases) {
        const e = refusal(() => decodeSnapshot(bad(value), key));
        expect(e.reason).toBe('bad_payload');
        expect(e.message).toMatch(message);
      }
    });

    it('stops inflating at the absolute cap and at the ratio cap (zip bomb guard)', () => {
      // 64 MiB of zeros gzip to ~64 KiB.
      const bomb = wrap(gzipSync(Buffer.alloc(64 * 1024 * 1024)));
      expect(bomb.length).toBeLessThan(200 * 1024);
      const absolute = { ...DEFAULT_INFLATION_LIMITS, maxBytes: 1024 * 1024, floorBytes: 1024 * 1024 };
      const e = refusal(() => decodeSnapshot(bomb, key, absolute));
      expect(e.reason).toBe('too_large');
      expect(e.message).toMatch(/inflate beyond 1048576 bytes .*zip bomb/);
      // The default limits: the ratio stops it far below its 64 MiB.
      const byRatio = refusal(() => decodeSnapshot(bomb, key));
      expect(byRatio.reason).toBe('too_large');
      expect(byRatio.message).toMatch(new RegExp(`beyond ${DEFAULT_INFLATION_LIMITS.floorBytes} bytes`));

      const big = encodeSnapshot(
        payload({ tables: { blob: [{ data: 'a'.repeat(2 * 1024 * 1024) }] }, counts: { blob: 1 } }),
        key,
        kdf,
      );
      expect(refusal(() => decodeSnapshot(big, key, absolute)).reason).toBe('too_large');
      expect(decodeSnapshot(big, key).counts).toEqual({ blob: 1 });
    });

    it('caps inflation at the larger of the floor and ratio times the compressed size, never above the absolute cap', () => {
      const limits = { maxBytes: 1000, maxRatio: 10, floorBytes: 100 };
      expect(inflationCap(5, limits)).toBe(100);
      expect(inflationCap(50, limits)).toBe(500);
      expect(inflationCap(500, limits)).toBe(1000);
      // A file of random rows compresses far less than the ratio allows.
      const rows = Array.from({ length: 2000 }, (_, i) => ({ id: i, key: randomBytes(32).toString('base64'), name: `node-${i}` }));
      const text = JSON.stringify(rows);
      expect(Buffer.byteLength(text) / gzipSync(text).length).toBeLessThan(DEFAULT_INFLATION_LIMITS.maxRatio / 8);
    });
  });

  it('writes exports as parallel gzip members: the same JSON text, read back like any file', async () => {
    const rows = Array.from({ length: 30_000 }, (_, i) => ({ id: i, text: randomBytes(100).toString('hex'), at: new Date(i * 1000) }));
    const big = payload({ tables: { big: rows, empty_table: [] } as unknown as SnapshotPayload['tables'], counts: { big: rows.length, empty_table: 0 } });
    const written = await encodeSnapshotAsync(big, key, kdf);
    const body = decryptSnapshotBody(written, key);
    // Several members (~7 MiB of text in 4 MiB pieces), decompressing to exactly the text of one JSON.stringify.
    expect(body.indexOf(Buffer.from([0x1f, 0x8b, 0x08]), 10)).toBeGreaterThan(0);
    expect(gunzipSync(body).toString('utf8')).toBe(JSON.stringify(big));
    expect(decodeSnapshot(written, key)).toEqual(JSON.parse(JSON.stringify(big)));
    // Small files too, and through the password like any upload.
    expect(await openSnapshot(await encodeSnapshotAsync(payload(), key, kdf), PASSWORD)).toEqual(decodeSnapshot(file, key));
    await expect(encodeSnapshotAsync(payload({ counts: { network: 5 } }), key, kdf)).rejects.toThrow(/count/);
  });

  it('refuses to write a payload it would refuse to read', () => {
    expect(() => encodeSnapshot(payload({ counts: { network: 5 } }), key, kdf)).toThrow(/count/);
    expect(() => encodeSnapshot(payload({ formatVersion: 2 }), key, kdf)).toThrow(/formatVersion/);
    expect(() => encodeSnapshot(payload(), key.subarray(0, 16), kdf)).toThrow(/32 bytes/);
  });

  it('exposes the authenticated body to callers that only need decryption', () => {
    const body = decryptSnapshotBody(file, key);
    expect(body[0]).toBe(0x1f);
    expect(body[1]).toBe(0x8b);
  });

  it('works end to end with the default scrypt parameters', async () => {
    const params = newKdfParams();
    expect(params).toMatchObject(DEFAULT_KDF_PARAMS);
    expect(params.N).toBe(2 ** 15);
    const k = await deriveKey(PASSWORD, params);
    expect(k.length).toBe(32);
    const f = encodeSnapshot(payload(), k, params);
    expect(readHeader(f).kdf).toMatchObject({ N: 2 ** 15, r: 8, p: 1 });
    expect((await openSnapshot(f, PASSWORD)).counts).toEqual(payload().counts);
    await expect(openSnapshot(f, 'not the password')).rejects.toThrow(/wrong password/);
  });
});

describe('snapshot keys', () => {
  it('derives the same 32-byte key for the same password and salt, another for another salt', async () => {
    const kdf = newKdfParams(CHEAP);
    const a = await deriveKey(PASSWORD, kdf);
    const b = await deriveKey(PASSWORD, { ...kdf, salt: Buffer.from(kdf.salt) });
    const c = await deriveKey(PASSWORD, newKdfParams(CHEAP));
    expect(a.length).toBe(32);
    expect(a.equals(b)).toBe(true);
    expect(a.equals(c)).toBe(false);
  });

  it('derives one key for canonically equal unicode passwords (NFC and NFD)', async () => {
    const kdf = newKdfParams(CHEAP);
    const nfc = await deriveKey('caf\u00e9-p\u00e4ss', kdf);
    const nfd = await deriveKey('cafe\u0301-pa\u0308ss', kdf);
    expect(nfc.equals(nfd)).toBe(true);
  });

  it('refuses unsafe KDF parameters', async () => {
    expect(() => newKdfParams({ N: 1000 })).toThrow(/power of two/);
    await expect(deriveKey(PASSWORD, { ...newKdfParams(CHEAP), N: 2 ** 24 })).rejects.toThrow(/scrypt N/);
    await expect(deriveKey(PASSWORD, { ...newKdfParams(CHEAP), salt: Buffer.alloc(4) })).rejects.toThrow(/salt/);
  });

  it('seals and unseals with the server key, with a fresh IV each time', () => {
    const serverKey = randomBytes(32);
    const secret = randomBytes(32);
    const sealed = seal(secret, serverKey);
    expect(sealed.length).toBe(1 + 12 + 32 + 16);
    expect(unseal(sealed, serverKey).equals(secret)).toBe(true);
    expect(seal(secret, serverKey).equals(sealed)).toBe(false);
  });

  it('refuses to unseal with another server key or after a change', () => {
    const serverKey = randomBytes(32);
    const sealed = seal(randomBytes(32), serverKey);
    expect(() => unseal(sealed, randomBytes(32))).toThrow(/SECRET_KEY differs/);
    for (const at of [0, 1, 20, sealed.length - 1]) {
      expect(() => unseal(flip(sealed, at), serverKey)).toThrow(/cannot unseal/);
    }
    expect(() => unseal(sealed.subarray(0, 20), serverKey)).toThrow(/shorter/);
    expect(() => seal(Buffer.from('x'), randomBytes(16))).toThrow(/32 bytes/);
  });

  it('parses SECRET_KEY as hex or base64 of 32 bytes', () => {
    const raw = randomBytes(32);
    expect(parseServerKey(raw.toString('hex')).equals(raw)).toBe(true);
    expect(parseServerKey(raw.toString('hex').toUpperCase()).equals(raw)).toBe(true);
    expect(parseServerKey(raw.toString('base64')).equals(raw)).toBe(true);
    expect(parseServerKey(raw.toString('base64').replace(/=$/, '')).equals(raw)).toBe(true);
    expect(parseServerKey(raw.toString('base64url')).equals(raw)).toBe(true);
    expect(parseServerKey(`  ${raw.toString('hex')}\n`).equals(raw)).toBe(true);
  });

  it('rejects any other SECRET_KEY without echoing it', () => {
    const rejected = [
      '',
      'hunter2-is-my-secret-key',
      randomBytes(31).toString('hex'),
      randomBytes(33).toString('hex'),
      randomBytes(16).toString('base64'),
      randomBytes(48).toString('base64'),
      `${randomBytes(32).toString('hex').slice(0, 63)}g`,
    ];
    for (const value of rejected) {
      let message = '';
      try {
        parseServerKey(value);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, JSON.stringify(value)).toMatch(/SECRET_KEY must be 32 random bytes/);
      if (value.length >= 6) {
        for (let i = 0; i + 6 <= value.length; i++) expect(message).not.toContain(value.slice(i, i + 6));
      }
    }
  });

  it('generates server keys that parse and differ', () => {
    const a = generateServerKey();
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(parseServerKey(a).length).toBe(32);
    expect(generateServerKey()).not.toBe(a);
  });
});
