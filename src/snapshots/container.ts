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
/** The whole header this version writes (scrypt): the prefix, KDF parameters, salt, IV, body length. */
const HEADER_LENGTH = FIXED_PREFIX + SCRYPT_PARAMS_LENGTH + SALT_LENGTH + IV_LENGTH + LENGTH_FIELD;

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
  return checkFileLength(readHeader(buf), buf.length);
}

/** The length checks of a whole file of `size` bytes against its header (a file read as a stream). */
export function checkFileLength(header: SnapshotHeader, size: number): SnapshotHeader {
  if (size < header.totalLength) truncated(size, header.totalLength, 'the snapshot');
  if (size > header.totalLength) {
    const extra = size - header.totalLength;
    invalid(
      'trailing_data',
      `file has ${extra} unexpected byte${extra === 1 ? '' : 's'} after the end of the snapshot (modified or concatenated?)`,
    );
  }
  return header;
}

/** What a file with a compressed body of `bodyLength` bytes measures. */
export function snapshotFileLength(bodyLength: number): number {
  return HEADER_LENGTH + bodyLength + TAG_LENGTH;
}

function encodeHeader(kdf: KdfParamsWithSalt, iv: Buffer, ciphertextLength: number): Buffer {
  const header = Buffer.alloc(HEADER_LENGTH);
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

/** Plaintext encrypted between yields to the event loop. */
const ENCRYPT_SLICE_BYTES = 1024 * 1024;

/**
 * The same container from the compressed body as it is read (the export's spool file):
 * the header, then the ciphertext as it is produced, then the tag, with a yield to the
 * event loop after each megabyte. GCM itself streams; what it cannot do is take
 * additional data after the first byte, and the header, which is the additional data,
 * states the ciphertext length. So the body's length must be known before the first
 * byte is encrypted, which is why an export compresses into a file first (writer.ts); the
 * format stays version 1. A body that turns out longer or shorter than `bodyLength` is an
 * error, never a file whose header lies.
 */
export async function* encryptSnapshotStream(
  bodyLength: number,
  body: AsyncIterable<Buffer>,
  key: Buffer,
  kdf: KdfParamsWithSalt,
): AsyncGenerator<Buffer> {
  assertDataKey(key);
  const problem = checkKdfParams(kdf);
  if (problem) throw new Error(`invalid KDF parameters: ${problem}`);
  if (kdf.salt.length !== SALT_LENGTH) throw new Error(`the snapshot salt must be ${SALT_LENGTH} bytes`);
  const iv = randomBytes(IV_LENGTH);
  const header = encodeHeader(kdf, iv, bodyLength);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_LENGTH });
  cipher.setAAD(header);
  yield header;
  let read = 0;
  for await (const piece of body) {
    for (let at = 0; at < piece.length; at += ENCRYPT_SLICE_BYTES) {
      const slice = piece.subarray(at, at + ENCRYPT_SLICE_BYTES);
      read += slice.length;
      if (read > bodyLength) throw new Error(`snapshot body is longer than the ${bodyLength} bytes its header states`);
      yield cipher.update(slice);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  if (read !== bodyLength) throw new Error(`snapshot body is ${read} bytes, not the ${bodyLength} its header states`);
  const last = cipher.final();
  yield Buffer.concat([last, cipher.getAuthTag()]);
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
 * The data key of a file for a password, from the file's first bytes (`head`, its header
 * at least) and its whole `size`, after the structural checks (so a cut-off or foreign
 * upload, or one whose header asks for too costly a derivation, costs no key
 * derivation). Restore keeps this key, sealed with the server key, to decrypt the staged
 * upload later without the password.
 */
export async function deriveFileKey(head: Buffer, size: number, password: string): Promise<Buffer> {
  const header = checkFileLength(readHeader(head), size);
  return deriveKey(password, header.kdf);
}
