/**
 * Snapshot keys: "a password-derived key kept sealed under the server key".
 *
 * When the administrator password is set, K = scrypt(password, salt, N, r, p) is derived
 * once and stored as seal(K, SECRET_KEY) together with the salt and parameters. An export
 * worker unseals K and encrypts the file with it, writing the salt and parameters into the
 * file's header, so the password never passes through Redis or a job payload. A restore
 * derives K again from the uploaded password and the header, so a file opens with the
 * password that was current when it was exported and with nothing else: no meshq secret
 * is needed, and any scrypt + AES-256-GCM implementation can open it offline. A password
 * change draws a new salt; older files keep theirs in the header and still open with the
 * old password.
 *
 * Why not hybrid encryption (a key pair whose private half is sealed by the password):
 * its one gain is that someone holding the database AND SECRET_KEY could read old exports
 * only by cracking the password, whereas here they unseal K. But that attacker already
 * holds the live data the exports copy, and stored exports live in that same database.
 * Against it, hybrid needs a hand-built ECIES (ECDH + KDF + AEAD) in node:crypto, a second
 * key layer to version and a larger header; the design here is two well-known primitives.
 *
 * Trade-offs to keep in mind:
 * - K encrypts every export until the password changes, so each file draws a random 96-bit
 *   IV; GCM stays safe far below 2^32 encryptions under one key, which exports never reach.
 * - Rotating SECRET_KEY leaves the sealed K unreadable: exports fail until the password is
 *   set again (restores still work, they use the uploaded password; staged uploads sealed
 *   under the old key are lost, they are short-lived).
 * - The login verifier must be an independent hash (its own salt), never this derivation:
 *   a stored scrypt(password, this salt) would be K itself, and the seal would be moot.
 */
import { createCipheriv, createDecipheriv, randomBytes, scrypt } from 'node:crypto';

export const KEY_LENGTH = 32;
export const SALT_LENGTH = 16;

/** scrypt cost parameters. Only scrypt exists today; the file format reserves a KDF id. */
export interface KdfParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}
export type KdfParamsWithSalt = KdfParams & { readonly salt: Buffer };

/** ~100 ms and 32 MiB per derivation on a current server core (RFC 7914's interactive tier). */
export const DEFAULT_KDF_PARAMS: Readonly<KdfParams> = Object.freeze({ N: 2 ** 15, r: 8, p: 1 });

/** 128·N·r: the memory one scrypt derivation needs. */
const scryptMemory = ({ N, r }: KdfParams): number => 128 * N * r;

/**
 * The one set of bounds on scrypt parameters, for snapshot headers and stored password
 * hashes alike. Restore derives with parameters read from an uploaded file before the
 * password is known to be right, so what a file may ask for is held to at most twice
 * what meshq itself writes (DEFAULT_KDF_PARAMS): room to raise the default once without
 * refusing older files, and no way for a crafted header to make the API spend seconds of
 * CPU or hundreds of MiB per request.
 */
const SCRYPT_LIMITS = Object.freeze({
  maxN: 2 * DEFAULT_KDF_PARAMS.N,
  maxR: 2 * DEFAULT_KDF_PARAMS.r,
  maxP: 4,
  /** 128·N·r: the memory scrypt needs. */
  maxMemoryBytes: 2 * scryptMemory(DEFAULT_KDF_PARAMS),
  /** 128·N·r·p: proportional to the work. */
  maxWorkBytes: 2 * scryptMemory(DEFAULT_KDF_PARAMS) * DEFAULT_KDF_PARAMS.p,
});

const MiB = 1024 * 1024;

/** null when usable, else why not (a sentence fragment callers wrap in their own error). */
export function checkKdfParams(params: KdfParams): string | null {
  const { N, r, p } = params;
  if (!Number.isSafeInteger(N) || N < 2 || N > SCRYPT_LIMITS.maxN || (N & (N - 1)) !== 0) {
    return `scrypt N must be a power of two between 2 and ${SCRYPT_LIMITS.maxN} (got ${N})`;
  }
  if (!Number.isSafeInteger(r) || r < 1 || r > SCRYPT_LIMITS.maxR) {
    return `scrypt r must be between 1 and ${SCRYPT_LIMITS.maxR} (got ${r})`;
  }
  if (!Number.isSafeInteger(p) || p < 1 || p > SCRYPT_LIMITS.maxP) {
    return `scrypt p must be between 1 and ${SCRYPT_LIMITS.maxP} (got ${p})`;
  }
  if (scryptMemory(params) > SCRYPT_LIMITS.maxMemoryBytes) {
    return `scrypt N·r needs more than ${SCRYPT_LIMITS.maxMemoryBytes / MiB} MiB`;
  }
  if (scryptMemory(params) * p > SCRYPT_LIMITS.maxWorkBytes) {
    return `scrypt N·r·p costs more than ${SCRYPT_LIMITS.maxWorkBytes / MiB} MiB of work`;
  }
  return null;
}

/**
 * scrypt on libuv's pool (the event loop keeps serving), parameters checked first. Every
 * scrypt in meshq goes through here: the snapshot key and the administrator's password hash.
 */
export function scryptAsync(password: string, salt: Buffer, length: number, params: KdfParams): Promise<Buffer> {
  const problem = checkKdfParams(params);
  if (problem) return Promise.reject(new Error(`invalid KDF parameters: ${problem}`));
  // NFC: the same password typed on macOS (NFD input) and elsewhere must give the same key.
  const secret = Buffer.from(password.normalize('NFC'), 'utf8');
  // OpenSSL needs 128·r·(N + p + 2) bytes; Node's default cap (32 MiB) is just below what the
  // default parameters need, so the cap follows the parameters (already bounded above).
  const maxmem = 128 * params.r * (params.N + params.p + 2) + MiB;
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, length, { N: params.N, r: params.r, p: params.p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

/** Fresh parameters for a new password; tests pass a cheaper N. */
export function newKdfParams(overrides: Partial<KdfParams> = {}): KdfParamsWithSalt {
  const params = { ...DEFAULT_KDF_PARAMS, ...overrides };
  const problem = checkKdfParams(params);
  if (problem) throw new Error(`invalid KDF parameters: ${problem}`);
  return { salt: randomBytes(SALT_LENGTH), N: params.N, r: params.r, p: params.p };
}

/** The 32-byte snapshot key for a password. */
export async function deriveKey(password: string, params: KdfParamsWithSalt): Promise<Buffer> {
  if (params.salt.length < SALT_LENGTH) throw new Error(`KDF salt must be at least ${SALT_LENGTH} bytes`);
  return scryptAsync(password, params.salt, KEY_LENGTH, params);
}

/*
 * Sealed value layout: version (u8 = 1) | IV (12) | ciphertext | GCM tag (16).
 * The version byte is authenticated (additional data) so it cannot be swapped undetected.
 */
const SEAL_VERSION = 1;
const SEAL_IV_LENGTH = 12;
const SEAL_TAG_LENGTH = 16;
const SEAL_OVERHEAD = 1 + SEAL_IV_LENGTH + SEAL_TAG_LENGTH;

function assertServerKey(serverKey: Buffer): void {
  if (serverKey.length !== KEY_LENGTH) throw new Error(`the server key must be ${KEY_LENGTH} bytes`);
}

/** Encrypts a small secret (a snapshot key) for storage in the database. */
export function seal(plaintext: Buffer, serverKey: Buffer): Buffer {
  assertServerKey(serverKey);
  const version = Buffer.of(SEAL_VERSION);
  const iv = randomBytes(SEAL_IV_LENGTH);
  const cipher = createCipheriv('aes-256-gcm', serverKey, iv, { authTagLength: SEAL_TAG_LENGTH });
  cipher.setAAD(version);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([version, iv, body, cipher.getAuthTag()]);
}

export function unseal(sealed: Buffer, serverKey: Buffer): Buffer {
  assertServerKey(serverKey);
  if (sealed.length < SEAL_OVERHEAD) {
    throw new Error(`cannot unseal: the sealed value is ${sealed.length} bytes, shorter than any sealed value`);
  }
  const version = sealed.subarray(0, 1);
  if (version[0] !== SEAL_VERSION) {
    throw new Error(`cannot unseal: unknown sealed-value version ${version[0]} (this meshq understands ${SEAL_VERSION})`);
  }
  const iv = sealed.subarray(1, 1 + SEAL_IV_LENGTH);
  const body = sealed.subarray(1 + SEAL_IV_LENGTH, sealed.length - SEAL_TAG_LENGTH);
  const tag = sealed.subarray(sealed.length - SEAL_TAG_LENGTH);
  const decipher = createDecipheriv('aes-256-gcm', serverKey, iv, { authTagLength: SEAL_TAG_LENGTH });
  decipher.setAAD(version);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    throw new Error(
      'cannot unseal: SECRET_KEY differs from the one that sealed this value, or the value was modified ' +
        '(if SECRET_KEY changed, set the administrator password again)',
    );
  }
}

const HEX_KEY = /^[0-9a-fA-F]{64}$/;
// 32 bytes are 43 base64 characters plus one '=' of padding (optional); url-safe accepted too.
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=?$/;
const BASE64URL_KEY = /^[A-Za-z0-9_-]{43}=?$/;

/**
 * SECRET_KEY as 32 bytes: 64 hex characters or base64 (standard or url-safe) of 32 bytes.
 * The error never contains the value: it ends up in start-up logs.
 */
export function parseServerKey(secretKey: string): Buffer {
  const s = secretKey.trim();
  let key: Buffer | undefined;
  if (HEX_KEY.test(s)) key = Buffer.from(s, 'hex');
  else if (BASE64_KEY.test(s)) key = Buffer.from(s, 'base64');
  else if (BASE64URL_KEY.test(s)) key = Buffer.from(s, 'base64url');
  if (key?.length !== KEY_LENGTH) {
    throw new Error(
      `SECRET_KEY must be ${KEY_LENGTH} random bytes written as 64 hex characters or as base64 ` +
        `(got a value of ${s.length} characters that is neither); generate one with ` +
        `\`node -e "console.log(require('node:crypto').randomBytes(32).toString('hex'))"\``,
    );
  }
  return key;
}

/** A new SECRET_KEY value (hex), e.g. for `.env` on first install. */
export function generateServerKey(): string {
  return randomBytes(KEY_LENGTH).toString('hex');
}
