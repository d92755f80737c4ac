/**
 * WireGuard keys: Curve25519 (x25519) key pairs written as wg(8) writes them, base64 of
 * the raw 32 bytes. node:crypto does the curve maths; we only move raw bytes in and out
 * (JWK on the way out, a fixed PKCS#8 header on the way in, since a JWK import would also
 * demand the public half we are trying to compute).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { InvalidError } from './errors.js';

export interface WireguardKeyPair {
  /** base64, 44 characters. Secret: encrypt it before it is stored (secrets.encryptSecret). */
  privateKey: string;
  publicKey: string;
}

// 32 bytes are 43 base64 characters and one "=". The 43rd carries 2 padding bits that must
// be zero, which limits it to these 16 characters: anything else is not a 32-byte value.
const WIREGUARD_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** Whether `s` is a key as wg(8) prints it: the base64 of exactly 32 bytes. */
export function isWireguardKey(s: unknown): s is string {
  return typeof s === 'string' && WIREGUARD_KEY.test(s);
}

// PKCS#8 PrivateKeyInfo for X25519 (RFC 8410) up to the 32 key bytes.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

function rawPublicKey(privateKey: KeyObject): Buffer {
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
  return Buffer.from(jwk.x!, 'base64url');
}

/**
 * A new key pair. The private key is clamped as `wg genkey` clamps it (RFC 7748 §5); the
 * curve clamps anyway, so this changes no public key, only makes our keys byte-identical
 * in form to the ones users know.
 */
export function generateKeyPair(): WireguardKeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  const d = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
  d[0] = d[0]! & 248;
  d[31] = (d[31]! & 127) | 64;
  return { privateKey: d.toString('base64'), publicKey: rawPublicKey(privateKey).toString('base64') };
}

/** The public key of a base64 private key (`wg pubkey`). The key never appears in the error. */
export function publicKeyFromPrivate(privateKeyBase64: string): string {
  if (!isWireguardKey(privateKeyBase64)) {
    throw new InvalidError('private key is not a WireGuard key (44 characters of base64 encoding 32 bytes)');
  }
  const raw = Buffer.from(privateKeyBase64, 'base64');
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  return rawPublicKey(key).toString('base64');
}
