/**
 * The administrator: created at first start from ADMIN_PASSWORD (or by
 * `npm run admin -- set-password`). Setting the password also derives the snapshot export
 * key from it and keeps that key sealed under the server key, so workers can encrypt
 * exports that the password opens without the password ever passing through Redis.
 */
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { Logger } from 'pino';
import type { UnitOfWork } from '../db/unit-of-work.js';
import { deriveKey, newKdfParams, seal } from '../crypto.js';
import { createRepositories } from './index.js';
import { hashAdminPassword, verifyAdminPassword } from '../domain/secrets.js';
import { InvalidError } from '../domain/errors.js';

export const ADMIN_NAME = 'admin';
export const MIN_PASSWORD_LENGTH = 8;
/** What start-up logs and every authenticated request answers until an administrator exists. */
export const NO_ADMIN_MESSAGE = 'no administrator yet: set ADMIN_PASSWORD and restart meshq, or run `npm run admin -- set-password`';

interface Deps {
  uow: UnitOfWork;
  serverKey: Buffer;
  log?: Logger;
}

/** First start: creates the administrator when ADMIN_PASSWORD is given and none exists. */
export async function ensureAdmin(deps: Deps, password: string | undefined): Promise<void> {
  const existing = await createRepositories(deps.uow.fork(), { serverKey: deps.serverKey }).admin.findByName(ADMIN_NAME);
  if (existing) return;
  if (!password) {
    deps.log?.warn(NO_ADMIN_MESSAGE);
    return;
  }
  // Processes started together on a fresh database (compose's api and worker) all get
  // here: the first to commit creates the administrator, the others find it.
  if (await setAdminPassword(deps, password, { onlyIfAbsent: true })) deps.log?.info({ admin: ADMIN_NAME }, 'administrator created');
}

/** Sets the password; with onlyIfAbsent, only when no administrator exists yet. Returns whether it wrote. */
export async function setAdminPassword(deps: Deps, password: string, opts: { onlyIfAbsent?: boolean } = {}): Promise<boolean> {
  if (password.length < MIN_PASSWORD_LENGTH) {
    throw new InvalidError(`the administrator password must be at least ${MIN_PASSWORD_LENGTH} characters`);
  }
  const kdf = newKdfParams();
  const exportKey = await deriveKey(password, kdf);
  const passwordHash = await hashAdminPassword(password);
  try {
    return await deps.uow.write(async (em) => {
      const admin = createRepositories(em, { serverKey: deps.serverKey }).admin;
      if (opts.onlyIfAbsent && (await admin.findByName(ADMIN_NAME))) return false;
      await admin.save({
        name: ADMIN_NAME,
        passwordHash,
        exportKeySealed: seal(exportKey, deps.serverKey).toString('base64'),
        exportKdf: { salt: kdf.salt.toString('base64'), N: kdf.N, r: kdf.r, p: kdf.p },
      });
      return true;
    });
  } catch (err) {
    // PostgreSQL: another process's insert committed after this transaction's read.
    if (opts.onlyIfAbsent && err instanceof UniqueConstraintViolationException) return false;
    throw err;
  }
}

export async function verifyAdmin(deps: Deps, name: string, password: string): Promise<boolean> {
  const admin = await createRepositories(deps.uow.fork(), { serverKey: deps.serverKey }).admin.findByName(name);
  if (!admin) return false;
  return verifyAdminPassword(password, admin.passwordHash);
}
