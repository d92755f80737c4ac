/**
 * Secrets at rest and the hashes that stand in for them.
 *
 * - Node private keys are stored encrypted under the server key (SECRET_KEY), because the
 *   control plane must hand them out again; everything else is stored only as a hash.
 * - MQTT passwords are hashed the way EMQX's built-in database authenticator checks them
 *   by default (sha256, salt as prefix, lowercase hex), so the stored hash can be pushed
 *   to EMQX as is and EMQX never needs the plaintext.
 * - API tokens are long random strings: one sha256 is enough (nothing to brute-force) and
 *   lets authentication look a token up by its hash.
 * - The administrator password is chosen by a person: it gets a slow, salted scrypt.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { checkKdfParams, DEFAULT_KDF_PARAMS, scryptAsync, type KdfParams } from '../crypto.js';

const KEY_LENGTH = 32;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;
const SECRET_PREFIX = 'v1:';
// The version is authenticated too, so a future v2 value cannot be relabelled as v1.
const SECRET_AAD = Buffer.from('meshq secret v1');

function assertServerKey(serverKey: Buffer): void {
  if (serverKey.length !== KEY_LENGTH) throw new Error(`the server key must be ${KEY_LENGTH} bytes`);
}

/** AES-256-GCM with a random 96-bit IV: `v1:` + base64(iv | tag | ciphertext). */
export function encryptSecret(plaintext: string, serverKey: Buffer): string {
  assertServerKey(serverKey);
  const iv = randomBytes(IV_LENGTH);
  const cipher = createCipheriv('aes-256-gcm', serverKey, iv, { authTagLength: TAG_LENGTH });
  cipher.setAAD(SECRET_AAD);
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return SECRET_PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
}

/**
 * The plaintext of an encryptSecret value. A plain Error (not a domain error) when it does
 * not open: that is a deployment fault (SECRET_KEY changed) or damaged data, nothing the
 * caller's input could fix. The message never contains the value.
 */
export function decryptSecret(ciphertext: string, serverKey: Buffer): string {
  assertServerKey(serverKey);
  if (typeof ciphertext !== 'string' || !ciphertext.startsWith(SECRET_PREFIX)) {
    throw new Error(`cannot decrypt secret: not a "${SECRET_PREFIX}" encrypted value`);
  }
  const raw = Buffer.from(ciphertext.slice(SECRET_PREFIX.length), 'base64');
  if (raw.length < IV_LENGTH + TAG_LENGTH) {
    throw new Error('cannot decrypt secret: the value is truncated');
  }
  const iv = raw.subarray(0, IV_LENGTH);
  const tag = raw.subarray(IV_LENGTH, IV_LENGTH + TAG_LENGTH);
  const body = raw.subarray(IV_LENGTH + TAG_LENGTH);
  const decipher = createDecipheriv('aes-256-gcm', serverKey, iv, { authTagLength: TAG_LENGTH });
  decipher.setAAD(SECRET_AAD);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
  } catch {
    throw new Error(
      'cannot decrypt secret: SECRET_KEY differs from the one that encrypted it, or the stored value was modified',
    );
  }
}

const sha256Hex = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

/** EMQX's default password hash: lowercase hex of sha256(salt + password). */
export const hashMqttPassword = (password: string, salt: string): string => sha256Hex(salt + password);

/** A salt for hashMqttPassword: 16 random bytes as hex. */
export const newSalt = (): string => randomBytes(16).toString('hex');

/** A random secret (token, MQTT password), base64url: 24 bytes give 32 characters and 192 bits. */
export function generateSecret(bytes = 24): string {
  if (!Number.isSafeInteger(bytes) || bytes < 16) throw new Error(`a secret needs at least 16 bytes (got ${bytes})`);
  return randomBytes(bytes).toString('base64url');
}

/** How an API token is stored and looked up: hex sha256. */
export const hashToken = (token: string): string => sha256Hex(token);

/*
 * Administrator password: scrypt$N$r$p$salt$hash, salt and hash in base64. The parameters
 * travel with the hash, so raising the cost later leaves old hashes verifiable. Independent
 * of the snapshot key derivation on purpose (its own salt): see src/crypto.ts. Parameters
 * and their bounds are src/crypto.ts's, the same as for snapshot keys.
 */
const ADMIN_HASH_LENGTH = 32;
const ADMIN_SALT_LENGTH = 16;

/** Async: scrypt runs on libuv's pool, so a login does not stall the API. Tests may pass a cheaper N. */
export async function hashAdminPassword(password: string, params: KdfParams = DEFAULT_KDF_PARAMS): Promise<string> {
  const salt = randomBytes(ADMIN_SALT_LENGTH);
  const hash = await scryptAsync(password, salt, ADMIN_HASH_LENGTH, params);
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

/**
 * Whether `password` matches a hashAdminPassword value, compared in constant time. A
 * malformed stored hash throws: it is damaged data, and "wrong password" would hide that.
 */
export async function verifyAdminPassword(password: string, encoded: string): Promise<boolean> {
  const parts = encoded.split('$');
  const [scheme, n, r, p, saltB64, hashB64] = parts;
  const params = { N: Number(n), r: Number(r), p: Number(p) };
  const problem = parts.length === 6 && scheme === 'scrypt' ? checkKdfParams(params) : 'not scrypt$N$r$p$salt$hash';
  const salt = Buffer.from(saltB64 ?? '', 'base64');
  const expected = Buffer.from(hashB64 ?? '', 'base64');
  if (problem || salt.length === 0 || expected.length < 16) {
    throw new Error(`stored administrator password hash is malformed (${problem ?? 'salt or hash missing'})`);
  }
  const actual = await scryptAsync(password, salt, expected.length, params);
  return timingSafeEqual(actual, expected);
}
