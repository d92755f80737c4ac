import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidError } from '../../src/domain/errors.js';
import { isUuid, newId } from '../../src/domain/ids.js';
import { generateKeyPair, isWireguardKey, publicKeyFromPrivate } from '../../src/domain/keys.js';
import {
  decryptSecret,
  encryptSecret,
  generateSecret,
  hashAdminPassword,
  hashMqttPassword,
  hashToken,
  newSalt,
  verifyAdminPassword,
} from '../../src/domain/secrets.js';

const serverKey = randomBytes(32);
const cheap = { N: 2 ** 10, r: 8, p: 1 };

describe('WireGuard keys', () => {
  it('generates valid, distinct, clamped key pairs whose public half derives from the private', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    expect(isWireguardKey(a.privateKey)).toBe(true);
    expect(isWireguardKey(a.publicKey)).toBe(true);
    expect(a.privateKey).not.toBe(b.privateKey);
    expect(publicKeyFromPrivate(a.privateKey)).toBe(a.publicKey);
    const raw = Buffer.from(a.privateKey, 'base64');
    expect(raw[0]! & 7).toBe(0);
    expect(raw[31]! & 0xc0).toBe(0x40);
  });

  it('derives the RFC 7748 §6.1 public key from its private key', () => {
    // Alice's key pair from RFC 7748 §6.1, hex converted to base64 by hand.
    expect(publicKeyFromPrivate('dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=')).toBe(
      'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=',
    );
  });

  it('recognises only the base64 of exactly 32 bytes', () => {
    expect(isWireguardKey('hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=')).toBe(true);
    expect(isWireguardKey('hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=')).toBe(false); // padding bits set
    expect(isWireguardKey('hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo')).toBe(false);
    expect(isWireguardKey('hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=')).toBe(false); // base64url
    expect(isWireguardKey(42)).toBe(false);
  });

  it('refuses a malformed private key without echoing it', () => {
    expect(() => publicKeyFromPrivate('secret-but-wrong')).toThrow(InvalidError);
    expect(() => publicKeyFromPrivate('secret-but-wrong')).not.toThrow(/secret-but-wrong/);
  });
});

describe('encrypted secrets', () => {
  it('round-trip and use a fresh IV every time', () => {
    const { privateKey } = generateKeyPair();
    const a = encryptSecret(privateKey, serverKey);
    const b = encryptSecret(privateKey, serverKey);
    expect(a.startsWith('v1:')).toBe(true);
    expect(a).not.toBe(b);
    expect(a).not.toContain(privateKey);
    expect(decryptSecret(a, serverKey)).toBe(privateKey);
    expect(decryptSecret(encryptSecret('', serverKey), serverKey)).toBe('');
    expect(decryptSecret(encryptSecret('ünïcødé', serverKey), serverKey)).toBe('ünïcødé');
  });

  it('lay out iv | tag | ciphertext after the prefix', () => {
    const raw = Buffer.from(encryptSecret('12345', serverKey).slice(3), 'base64');
    expect(raw.length).toBe(12 + 16 + 5);
  });

  it('detect tampering with any byte', () => {
    const sealed = encryptSecret('private key', serverKey);
    const raw = Buffer.from(sealed.slice(3), 'base64');
    for (const index of [0, 12, 28, raw.length - 1]) {
      const copy = Buffer.from(raw);
      copy[index] = copy[index]! ^ 1;
      expect(() => decryptSecret(`v1:${copy.toString('base64')}`, serverKey)).toThrow(/was modified/);
    }
  });

  it('refuse another server key, truncated values and unknown formats', () => {
    const sealed = encryptSecret('private key', serverKey);
    expect(() => decryptSecret(sealed, randomBytes(32))).toThrow(/SECRET_KEY differs/);
    expect(() => decryptSecret('v1:AAAA', serverKey)).toThrow(/truncated/);
    expect(() => decryptSecret('v2:AAAA', serverKey)).toThrow(/not a "v1:" encrypted value/);
    expect(() => encryptSecret('x', randomBytes(16))).toThrow(/32 bytes/);
  });
});

describe('hashes', () => {
  it('hash MQTT passwords as EMQX does: hex sha256(salt + password)', () => {
    // echo -n '0123456789abcdef0123456789abcdefcorrect horse battery staple' | sha256sum
    expect(hashMqttPassword('correct horse battery staple', '0123456789abcdef0123456789abcdef')).toBe(
      '4cf619e6d4972413cd9be336e58fd0254c988b78b53254ac3b463c334d7ff533',
    );
    // echo -n 'saltpassword' | sha256sum
    expect(hashMqttPassword('password', 'salt')).toBe('13601bda4ea78e55a07b98866d2be6be0744e3866f13c00c811cab608a28f322');
  });

  it('hash tokens with hex sha256', () => {
    // FIPS 180-2 test vector for "abc".
    expect(hashToken('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('make salts of 16 random bytes in hex and url-safe secrets', () => {
    expect(newSalt()).toMatch(/^[0-9a-f]{32}$/);
    expect(newSalt()).not.toBe(newSalt());
    expect(generateSecret()).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(generateSecret(32)).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(() => generateSecret(8)).toThrow(/at least 16 bytes/);
  });
});

describe('administrator password', () => {
  it('verifies the right password only', async () => {
    const hash = await hashAdminPassword('correct horse', cheap);
    expect(hash).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(await verifyAdminPassword('correct horse', hash)).toBe(true);
    expect(await verifyAdminPassword('correct horsf', hash)).toBe(false);
    expect(await verifyAdminPassword('', hash)).toBe(false);
  });

  it('salts every hash', async () => {
    expect(await hashAdminPassword('same', cheap)).not.toBe(await hashAdminPassword('same', cheap));
  });

  it('treats NFC and NFD spellings of a password alike', async () => {
    const hash = await hashAdminPassword('caf\u00e9', cheap);
    expect(await verifyAdminPassword('cafe\u0301', hash)).toBe(true);
  });

  it('uses the default cost when none is given', async () => {
    const hash = await hashAdminPassword('default cost');
    expect(hash.startsWith('scrypt$32768$8$1$')).toBe(true);
    expect(await verifyAdminPassword('default cost', hash)).toBe(true);
  });

  it('refuses malformed stored hashes instead of saying "wrong password"', async () => {
    await expect(verifyAdminPassword('x', 'bcrypt$...')).rejects.toThrow(/malformed/);
    await expect(verifyAdminPassword('x', 'scrypt$3$8$1$c2FsdA==$aGFzaA==')).rejects.toThrow(/power of two/);
    // The same bounds as snapshot keys: a stored hash cannot ask for a costlier scrypt either.
    await expect(verifyAdminPassword('x', 'scrypt$1048576$8$1$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==')).rejects.toThrow(/malformed .*between 2 and 65536/);
    await expect(hashAdminPassword('x', { N: 2 ** 20, r: 8, p: 1 })).rejects.toThrow(/invalid KDF parameters/);
  });
});

describe('ids', () => {
  it('are time-ordered UUIDv7 strings', () => {
    const ids = Array.from({ length: 100 }, () => newId());
    for (const id of ids) {
      expect(isUuid(id)).toBe(true);
      expect(id[14]).toBe('7');
    }
    expect([...ids].sort()).toEqual(ids);
    expect(isUuid('not-a-uuid')).toBe(false);
    expect(isUuid(undefined)).toBe(false);
  });
});
