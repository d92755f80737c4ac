/**
 * The full EMQX reconcile behind `broker.sync`: EMQX is a projection of the database.
 *
 * Desired: for every dynamic node with a credential, a built-in-database user
 * `node-<nodeId>` with the stored hash and salt, and least-privilege rules: publish its
 * own status and config acknowledgement, subscribe to its own config push, nothing else. Managed: users and rule sets whose
 * name starts with `node-`; anything else in EMQX belongs to someone else and is never
 * touched.
 *
 * EMQX never returns hashes, so "has this credential changed?" is answered against
 * `broker_applied`, meshq's record of what it last imported. Everything is read first
 * (EMQX's offset paging is only consistent while nothing is written), then a plan is made
 * by a pure function, then applied in bulk: imports and rule creation in chunks, so a
 * sync of n users costs about n/1000 requests, and a sync that finds nothing to do makes
 * no write request at all.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { BrokerCredential } from '../repositories/credentials.js';
import type { Repositories } from '../repositories/index.js';
import type { AppliedCredential } from '../repositories/broker-applied.js';
import type { BrokerSyncState } from '../repositories/system-state.js';
import { configAppliedTopic, configPushTopic, statusTopic } from './topics.js';
import { EmqxError, type EmqxClient, type EmqxHashedUser, type EmqxRule, type EmqxRuleInput } from './emqx-client.js';

/** Users and rule sets with this prefix are meshq's; nothing else in EMQX is. */
export const MANAGED_PREFIX = 'node-';
/** Users per import, rule sets per bulk create, client ids per bulk kick. */
export const WRITE_CHUNK = 1000;
/** Users or rule sets per listing page (EMQX allows up to 10,000). */
export const LIST_PAGE = 1000;
/** Parallel single-item requests (deletes, rule replaces): EMQX has no bulk form of them. */
const SINGLE_CONCURRENCY = 8;

export interface DesiredUser {
  username: string;
  clientId: string;
  passwordHash: string;
  salt: string;
  configId: string;
  nodeId: string;
  fingerprint: string;
}

export interface ReconcileCounts {
  /** Users that did not exist in EMQX and were imported. */
  created: number;
  /** Users that existed and were re-imported (credential changed, or unknown to meshq). */
  updated: number;
  /** Managed users deleted from EMQX. */
  deleted: number;
  /** Client ids sent to be kicked (EMQX does not say which of them were connected). */
  kicked: number;
}

/** Identifies a credential without keeping a second copy of its hash. */
export const credentialFingerprint = (passwordHash: string, salt: string): string =>
  createHash('sha256').update(passwordHash + salt).digest('hex');

/** `eq `: the topic is matched literally (no wildcards, no placeholders), filters included. */
const exact = (topic: string) => `eq ${topic}`;

/**
 * A node may publish only its status and its config acknowledgement and subscribe only to
 * its config push; the closing denies refuse everything else for this user whatever the
 * sources after this one or `no_match` say (`#` does not match `$`-topics, hence the
 * second). Rules are checked in order, so the allows come first.
 *
 * Written fully specified (qos and retain as EMQX fills them in) so that a rule set read
 * back from EMQX compares equal to the one we wrote and a second sync replaces nothing.
 */
export function desiredRules(configId: string, nodeId: string): EmqxRuleInput[] {
  const all = { qos: [0, 1, 2], retain: 'all' as const };
  return [
    { topic: exact(statusTopic(configId, nodeId)), permission: 'allow', action: 'publish', ...all },
    { topic: exact(configAppliedTopic(configId, nodeId)), permission: 'allow', action: 'publish', ...all },
    { topic: exact(configPushTopic(configId, nodeId)), permission: 'allow', action: 'subscribe', ...all },
    { topic: '#', permission: 'deny', action: 'all', ...all },
    { topic: '$SYS/#', permission: 'deny', action: 'all', ...all },
  ];
}

export const isManaged = (name: string): boolean => name.startsWith(MANAGED_PREFIX);

/** EMQX is behind the database: a credential change not yet applied, or a newer restore. */
export const isBrokerSyncPending = (state: BrokerSyncState, epoch: number): boolean =>
  state.pendingSeq > state.appliedSeq || state.syncedEpoch < epoch;

export function toDesired(c: BrokerCredential): DesiredUser {
  return {
    username: c.username,
    clientId: c.clientId,
    passwordHash: c.passwordHash,
    salt: c.salt,
    configId: c.configId,
    nodeId: c.nodeId,
    fingerprint: credentialFingerprint(c.passwordHash, c.salt),
  };
}

/** Order matters in an ACL; defaults are filled in the way EMQX fills them. */
export function sameRules(have: readonly EmqxRule[], want: readonly EmqxRuleInput[]): boolean {
  if (have.length !== want.length) return false;
  return have.every((h, i) => canonicalRule(h) === canonicalRule(want[i]!));
}

function canonicalRule(rule: EmqxRuleInput | EmqxRule): string {
  const full: Record<string, unknown> = { ...rule, qos: [...(rule.qos ?? [0, 1, 2])].sort(), retain: rule.retain ?? 'all' };
  return JSON.stringify(Object.fromEntries(Object.entries(full).sort(([a], [b]) => (a < b ? -1 : 1))));
}

// ---------------------------------------------------------------------------------------
// The plan: pure, so every case is a unit test.

export interface ReconcileInput {
  desired: readonly DesiredUser[];
  applied: ReadonlyMap<string, AppliedCredential>;
  /** Managed user names EMQX has. */
  emqxUsers: ReadonlySet<string>;
  /** Managed rule sets EMQX has. */
  emqxRules: ReadonlyMap<string, EmqxRule[]>;
}

export interface ReconcilePlan {
  createRules: { username: string; rules: EmqxRuleInput[] }[];
  replaceRules: { username: string; rules: EmqxRuleInput[] }[];
  importUsers: DesiredUser[];
  created: number;
  updated: number;
  /** Sessions that logged in with a credential that has since changed. */
  kickChanged: string[];
  deleteUsers: string[];
  deleteRules: string[];
  /** Sessions of users that no longer exist. */
  kickVanished: string[];
  /** Rows to upsert into broker_applied once EMQX has them. */
  record: AppliedCredential[];
  /** Rows to drop from broker_applied. */
  forget: string[];
}

export function planReconcile({ desired, applied, emqxUsers, emqxRules }: ReconcileInput): ReconcilePlan {
  const plan: ReconcilePlan = {
    createRules: [],
    replaceRules: [],
    importUsers: [],
    created: 0,
    updated: 0,
    kickChanged: [],
    deleteUsers: [],
    deleteRules: [],
    kickVanished: [],
    record: [],
    forget: [],
  };
  const wanted = new Set<string>();
  for (const d of desired) {
    wanted.add(d.username);
    const rules = desiredRules(d.configId, d.nodeId);
    const have = emqxRules.get(d.username);
    if (!have) plan.createRules.push({ username: d.username, rules });
    else if (!sameRules(have, rules)) plan.replaceRules.push({ username: d.username, rules });

    const last = applied.get(d.username);
    const exists = emqxUsers.has(d.username);
    // Without a record of what we applied, an existing user's hash is unknown: re-import.
    if (!exists || last?.fingerprint !== d.fingerprint) {
      plan.importUsers.push(d);
      if (exists) plan.updated++;
      else plan.created++;
    }
    if (last && last.fingerprint !== d.fingerprint) {
      // The live session authenticated with the old credential; kicking makes it log in
      // again with the new one (or fail to).
      plan.kickChanged.push(last.clientId);
      if (d.clientId !== last.clientId) plan.kickChanged.push(d.clientId);
    }
    if (!last || last.fingerprint !== d.fingerprint || last.clientId !== d.clientId) {
      plan.record.push({ username: d.username, clientId: d.clientId, fingerprint: d.fingerprint });
    }
  }

  const gone = new Set([...emqxUsers, ...emqxRules.keys(), ...applied.keys()].filter((u) => !wanted.has(u)));
  for (const username of [...gone].sort()) {
    const last = applied.get(username);
    if (emqxUsers.has(username)) plan.deleteUsers.push(username);
    if (emqxRules.has(username)) plan.deleteRules.push(username);
    // meshq's client id is the user name; the record knows better when there is one.
    if (emqxUsers.has(username) || last) plan.kickVanished.push(last?.clientId ?? username);
    if (last) plan.forget.push(username);
  }
  return plan;
}

// ---------------------------------------------------------------------------------------
// Reading and applying

export interface ObservedState {
  users: Set<string>;
  rules: Map<string, EmqxRule[]>;
}

/**
 * Every managed user and rule set. `like_*` is a substring match in EMQX, so the prefix
 * is checked again here: `my-node-1` is not ours.
 */
export async function observeEmqx(client: EmqxClient): Promise<ObservedState> {
  const users = new Set<string>();
  for await (const u of client.allUsers(LIST_PAGE, { likeUserId: MANAGED_PREFIX })) {
    if (isManaged(u.user_id)) users.add(u.user_id);
  }
  const rules = new Map<string, EmqxRule[]>();
  for await (const r of client.allRules(LIST_PAGE, { likeUsername: MANAGED_PREFIX })) {
    if (isManaged(r.username)) rules.set(r.username, r.rules);
  }
  return { users, rules };
}

/**
 * Reads the desired state and meshq's applied record through the repositories (the
 * caller's transaction), observes EMQX, applies the difference and records what it
 * applied in the same transaction. A failure part-way leaves EMQX partly updated and the
 * record rolled back; every step is idempotent, so the next run simply redoes it.
 */
export async function reconcileBroker(client: EmqxClient, repos: Repositories, log: Logger): Promise<ReconcileCounts> {
  const desired = (await repos.credentials.brokerCredentials()).map(toDesired);
  const applied = await repos.brokerApplied.all();
  const observed = await observeEmqx(client);
  const plan = planReconcile({ desired, applied, emqxUsers: observed.users, emqxRules: observed.rules });

  // Rules before users: a user that exists without rules falls through to EMQX's
  // no_match default, which may allow everything.
  for (const chunk of chunks(plan.createRules, WRITE_CHUNK)) {
    try {
      await client.createRules(chunk);
    } catch (err) {
      // All or nothing: one user in the chunk already had rules (written since we
      // looked, or by a retried request that had landed). Replace is an upsert.
      if (!(err instanceof EmqxError && err.code === 'ALREADY_EXISTS')) throw err;
      log.warn({ users: chunk.length }, 'bulk rule creation conflicted; replacing rule sets one by one');
      await eachLimited(chunk, SINGLE_CONCURRENCY, (e) => client.replaceRules(e.username, e.rules));
    }
  }
  await eachLimited(plan.replaceRules, SINGLE_CONCURRENCY, (e) => client.replaceRules(e.username, e.rules));

  for (const chunk of chunks(plan.importUsers, WRITE_CHUNK)) {
    const result = await client.importUsersHash(chunk.map(hashedUser));
    if (result.failed > 0) {
      throw new EmqxError('IMPORT_FAILED', `EMQX rejected ${result.failed} of ${result.total} imported users`, { retryable: true });
    }
  }
  for (const chunk of chunks(unique(plan.kickChanged), WRITE_CHUNK)) await client.kickClients(chunk);

  // Delete the user, then kick (it cannot log in again), then drop its rules (never a
  // moment where the user exists without them).
  await eachLimited(plan.deleteUsers, SINGLE_CONCURRENCY, (u) => client.deleteUser(u));
  for (const chunk of chunks(unique(plan.kickVanished), WRITE_CHUNK)) await client.kickClients(chunk);
  await eachLimited(plan.deleteRules, SINGLE_CONCURRENCY, (u) => client.deleteRules(u));

  await repos.brokerApplied.record(plan.record, new Date());
  await repos.brokerApplied.forget(plan.forget);

  const counts: ReconcileCounts = {
    created: plan.created,
    updated: plan.updated,
    deleted: plan.deleteUsers.length,
    kicked: unique(plan.kickChanged).length + unique(plan.kickVanished).length,
  };
  log.info(
    {
      ...counts,
      desired: desired.length,
      rulesCreated: plan.createRules.length,
      rulesReplaced: plan.replaceRules.length,
      rulesDeleted: plan.deleteRules.length,
    },
    'EMQX reconciled',
  );
  return counts;
}

const hashedUser = (d: DesiredUser): EmqxHashedUser => ({
  user_id: d.username,
  password_hash: d.passwordHash,
  salt: d.salt,
  is_superuser: false,
});

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

const unique = (items: readonly string[]): string[] => [...new Set(items)];

/** Runs fn over items with at most `limit` in flight; the first failure rejects. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  let failed = false;
  // After a failure the other lanes stop taking items: the job is failing anyway.
  const lane = async () => {
    while (!failed && next < items.length) {
      try {
        await fn(items[next++]!);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}
