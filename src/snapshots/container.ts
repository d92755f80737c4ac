/**
 * The snapshot container: a small binary header, then AES-256-GCM over the compressed body.
 *
 *   offset  size  field
 *        0     8  magic "MESHQSNP"
 *        8     2  format version (u16 BE), currently 1
 *       10     1  KDF id (1 = scrypt)
 *       11     2  length of the KDF parameter block (u16 BE), so a reader can skip or
 *                 reject a KDF it does not know by name rather than misparse it
 *       13     n  KDF parameters (scrypt: N, r, p as u32 BE, n = 12)
 *     13+n    16  salt
 *     29+n    12  IV
 *     41+n     8  ciphertext length (u64 BE)
 *     49+n     …  ciphertext, then the 16-byte GCM tag
 *
 * The whole header is GCM additional data: a changed KDF parameter, salt or length is an
 * authentication failure, not a silently different key. The explicit ciphertext length
 * lets a cut-off file be reported as truncated (and appended bytes as such) before any
 * decryption, instead of as the vaguer "wrong password or modified". The KDF parameters
 * are checked against src/crypto.ts's bounds while the header is read, so a crafted
 * header is refused before any key derivation.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { checkKdfParams, deriveKey, KEY_LENGTH, SALT_LENGTH } from '../crypto.js';
import type { KdfParamsWithSalt } from '../crypto.js';
import { SnapshotInvalidError } from './errors.js';
import type { SnapshotInvalidReason } from './errors.js';

const SNAPSHOT_MAGIC = Buffer.from('MESHQSNP', 'ascii');
export const SNAPSHOT_FORMAT_VERSION = 1;

const KDF_SCRYPT = 1;
const SCRYPT_PARAMS_LENGTH = 12;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;
const LENGTH_FIELD = 8;
/** Bytes before the KDF parameter block: magic, version, KDF id, parameter length. */
const FIXED_PREFIX = SNAPSHOT_MAGIC.length + 2 + 1 + 2;

export interface SnapshotHeader {
  formatVersion: number;
  kdf: KdfParamsWithSalt & { readonly algorithm: 'scrypt' };
  iv: Buffer;
  /** Bytes of header (the GCM additional data). */
  headerLength: number;
  ciphertextLength: number;
  /** What the whole file must measure: header + ciphertext + tag. */
  totalLength: number;
}

export function invalid(reason: SnapshotInvalidReason, message: string): never {
  throw new SnapshotInvalidError(reason, message);
}

export function assertDataKey(key: Buffer): void {
  if (key.length !== KEY_LENGTH) throw new Error(`the snapshot key must be ${KEY_LENGTH} bytes (got ${key.length})`);
}

function truncated(have: number, need: number, what: string): never {
  if (have === 0) invalid('truncated', 'file is truncated: it is empty');
  return invalid('truncated', `file is truncated: ${what} needs ${need} bytes, the file has ${have}`);
}

/**
 * Parses and checks the header only (not the body's length): enough to learn the KDF
 * parameters before deriving the key from a password.
 */
export function readHeader(buf: Buffer): SnapshotHeader {
  const magicPart = buf.subarray(0, SNAPSHOT_MAGIC.length);
  if (!magicPart.equals(SNAPSHOT_MAGIC.subarray(0, magicPart.length))) {
    invalid('not_snapshot', 'not a meshq snapshot: the file does not start with "MESHQSNP"');
  }
  if (buf.length < SNAPSHOT_MAGIC.length + 2) truncated(buf.length, SNAPSHOT_MAGIC.length + 2, 'the header');

  const formatVersion = buf.readUInt16BE(SNAPSHOT_MAGIC.length);
  if (formatVersion > SNAPSHOT_FORMAT_VERSION) {
    invalid(
      'unsupported_version',
      `format version ${formatVersion} is newer than this meshq understands (${SNAPSHOT_FORMAT_VERSION}); ` +
        'restore it with a newer meshq',
    );
  }
  if (formatVersion !== SNAPSHOT_FORMAT_VERSION) {
    invalid('unsupported_version', `format version ${formatVersion} is not a valid snapshot format version`);
  }

  if (buf.length < FIXED_PREFIX) truncated(buf.length, FIXED_PREFIX, 'the header');
  const kdfId = buf.readUInt8(SNAPSHOT_MAGIC.length + 2);
  const kdfLength = buf.readUInt16BE(SNAPSHOT_MAGIC.length + 3);
  if (kdfId !== KDF_SCRYPT) {
    invalid('unsupported_kdf', `unknown key-derivation function id ${kdfId}: the file is damaged or from a newer meshq`);
  }
  if (kdfLength !== SCRYPT_PARAMS_LENGTH) {
    invalid('bad_header', `malformed header: scrypt parameters take ${SCRYPT_PARAMS_LENGTH} bytes, header says ${kdfLength}`);
  }

  const saltAt = FIXED_PREFIX + kdfLength;
  const ivAt = saltAt + SALT_LENGTH;
  const lengthAt = ivAt + IV_LENGTH;
  const headerLength = lengthAt + LENGTH_FIELD;
  if (buf.length < headerLength) truncated(buf.length, headerLength, 'the header');

  const N = buf.readUInt32BE(FIXED_PREFIX);
  const r = buf.readUInt32BE(FIXED_PREFIX + 4);
  const p = buf.readUInt32BE(FIXED_PREFIX + 8);
  const problem = checkKdfParams({ N, r, p });
  if (problem) invalid('bad_header', `malformed header: ${problem}; the file is damaged or was not made by meshq`);

  const ciphertextLength = buf.readBigUInt64BE(lengthAt);
  if (ciphertextLength > BigInt(Number.MAX_SAFE_INTEGER - headerLength - TAG_LENGTH)) {
    invalid('bad_header', 'malformed header: impossible ciphertext length');
  }
  const length = Number(ciphertextLength);
  return {
    formatVersion,
    kdf: { algorithm: 'scrypt', N, r, p, salt: Buffer.from(buf.subarray(saltAt, ivAt)) },
    iv: Buffer.from(buf.subarray(ivAt, lengthAt)),
    headerLength,
    ciphertextLength: length,
    totalLength: headerLength + length + TAG_LENGTH,
  };
}

/** Header plus the length checks of the whole file: everything short of decrypting. */
export function readContainer(buf: Buffer): SnapshotHeader {
  const header = readHeader(buf);
  if (buf.length < header.totalLength) truncated(buf.length, header.totalLength, 'the snapshot');
  if (buf.length > header.totalLength) {
    const extra = buf.length - header.totalLength;
    invalid(
      'trailing_data',
      `file has ${extra} unexpected byte${extra === 1 ? '' : 's'} after the end of the snapshot (modified or concatenated?)`,
    );
  }
  return header;
}

function encodeHeader(kdf: KdfParamsWithSalt, iv: Buffer, ciphertextLength: number): Buffer {
  const header = Buffer.alloc(FIXED_PREFIX + SCRYPT_PARAMS_LENGTH + SALT_LENGTH + IV_LENGTH + LENGTH_FIELD);
  let at = SNAPSHOT_MAGIC.copy(header, 0);
  at = header.writeUInt16BE(SNAPSHOT_FORMAT_VERSION, at);
  at = header.writeUInt8(KDF_SCRYPT, at);
  at = header.writeUInt16BE(SCRYPT_PARAMS_LENGTH, at);
  at = header.writeUInt32BE(kdf.N, at);
  at = header.writeUInt32BE(kdf.r, at);
  at = header.writeUInt32BE(kdf.p, at);
  at += kdf.salt.copy(header, at);
  at += iv.copy(header, at);
  header.writeBigUInt64BE(BigInt(ciphertextLength), at);
  return header;
}

/** Encrypts an already-compressed body into a snapshot container. */
export function encryptSnapshotBody(body: Buffer, key: Buffer, kdf: KdfParamsWithSalt): Buffer {
  assertDataKey(key);
  const problem = checkKdfParams(kdf);
  if (problem) throw new Error(`invalid KDF parameters: ${problem}`);
  if (kdf.salt.length !== SALT_LENGTH) throw new Error(`the snapshot salt must be ${SALT_LENGTH} bytes`);
  // Random, never caller-chosen: the same key encrypts every export until the password
  // changes, and a repeated IV under GCM leaks plaintext and the authentication key.
  const iv = randomBytes(IV_LENGTH);
  const header = encodeHeader(kdf, iv, body.length);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_LENGTH });
  cipher.setAAD(header);
  const ciphertext = Buffer.concat([cipher.update(body), cipher.final()]);
  return Buffer.concat([header, ciphertext, cipher.getAuthTag()]);
}

/**
 * The same container from the compressed body in pieces, encrypted piece by piece into
 * one buffer with a yield to the event loop between pieces. Each piece is released (its
 * slot in `pieces` emptied) once encrypted, so the body and the file are held together
 * only piece by piece, never twice over.
 */
export async function encryptSnapshotPieces(pieces: (Buffer | undefined)[], key: Buffer, kdf: KdfParamsWithSalt): Promise<Buffer> {
  assertDataKey(key);
  const problem = checkKdfParams(kdf);
  if (problem) throw new Error(`invalid KDF parameters: ${problem}`);
  if (kdf.salt.length !== SALT_LENGTH) throw new Error(`the snapshot salt must be ${SALT_LENGTH} bytes`);
  const bodyLength = pieces.reduce((n, p) => n + (p?.length ?? 0), 0);
  const iv = randomBytes(IV_LENGTH);
  const header = encodeHeader(kdf, iv, bodyLength);
  const out = Buffer.allocUnsafe(header.length + bodyLength + TAG_LENGTH);
  let at = header.copy(out, 0);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_LENGTH });
  cipher.setAAD(header);
  for (let i = 0; i < pieces.length; i++) {
    at += cipher.update(pieces[i]!).copy(out, at);
    pieces[i] = undefined;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  at += cipher.final().copy(out, at);
  cipher.getAuthTag().copy(out, at);
  return out;
}

/** Checks structure and authenticity and returns the (still compressed) body. */
export function decryptSnapshotBody(buf: Buffer, key: Buffer, header: SnapshotHeader = readContainer(buf)): Buffer {
  assertDataKey(key);
  const ciphertext = buf.subarray(header.headerLength, header.headerLength + header.ciphertextLength);
  const tag = buf.subarray(header.headerLength + header.ciphertextLength);
  const decipher = createDecipheriv('aes-256-gcm', key, header.iv, { authTagLength: TAG_LENGTH });
  decipher.setAAD(buf.subarray(0, header.headerLength));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    // GCM gives one bit: a wrong key and a changed byte fail identically. Say both.
    return invalid(
      'auth_failed',
      'cannot decrypt the snapshot: wrong password or the file was modified ' +
        '(AES-GCM cannot tell these apart; check the password that was set when the snapshot was exported)',
    );
  }
}

/**
 * The data key of a file for a password, after the structural checks (so a cut-off or
 * foreign upload, or one whose header asks for too costly a derivation, costs no key
 * derivation). Restore keeps this key, sealed with the server key, to decrypt the staged
 * upload later without the password.
 */
export async function deriveFileKey(buf: Buffer, password: string): Promise<Buffer> {
  const header = readContainer(buf);
  return deriveKey(password, header.kdf);
}
