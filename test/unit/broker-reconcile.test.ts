/**
 * The reconcile plan (a pure function) case by case, the rule comparison against EMQX's
 * normalised form, the capped backoff, and the fallback when a bulk rule creation
 * conflicts.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { EmqxError, type EmqxClient, type EmqxRule } from '../../src/broker/emqx-client.js';
import {
  credentialFingerprint,
  desiredRules,
  isBrokerSyncPending,
  planReconcile,
  reconcileBroker,
  sameRules,
  type DesiredUser,
} from '../../src/broker/reconcile.js';
import { retryDelay } from '../../src/jobs/table.js';
import type { Repositories } from '../../src/repositories/index.js';
import type { AppliedCredential } from '../../src/repositories/broker-applied.js';
import type { BrokerSyncState } from '../../src/repositories/system-state.js';

const user = (n: number, hash = `h${n}`): DesiredUser => ({
  username: `node-${n}`,
  clientId: `node-${n}`,
  passwordHash: hash,
  salt: `s${n}`,
  configId: 'c',
  nodeId: String(n),
  fingerprint: credentialFingerprint(hash, `s${n}`),
});
const applied = (u: DesiredUser): [string, AppliedCredential] => [u.username, { username: u.username, clientId: u.clientId, fingerprint: u.fingerprint }];
const emqxRules = (u: DesiredUser) => desiredRules(u.configId, u.nodeId) as EmqxRule[];

describe('planReconcile', () => {
  it('creates users and rules that EMQX lacks, and records them', () => {
    const a = user(1);
    const plan = planReconcile({ desired: [a], applied: new Map(), emqxUsers: new Set(), emqxRules: new Map() });
    expect(plan).toMatchObject({ created: 1, updated: 0, importUsers: [a], kickChanged: [], deleteUsers: [], kickVanished: [] });
    expect(plan.createRules).toEqual([{ username: 'node-1', rules: desiredRules('c', '1') }]);
    expect(plan.record).toEqual([{ username: 'node-1', clientId: 'node-1', fingerprint: a.fingerprint }]);
  });

  it('plans nothing when EMQX and the applied record match', () => {
    const a = user(1);
    const plan = planReconcile({
      desired: [a],
      applied: new Map([applied(a)]),
      emqxUsers: new Set([a.username]),
      emqxRules: new Map([[a.username, emqxRules(a)]]),
    });
    expect(plan).toEqual({
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
    });
  });

  it('re-imports and kicks a changed credential, and re-imports without a kick when nothing was recorded', () => {
    const before = user(1);
    const after = user(1, 'rotated');
    const unknown = user(2);
    const plan = planReconcile({
      desired: [after, unknown],
      applied: new Map([applied(before)]),
      emqxUsers: new Set([after.username, unknown.username]),
      emqxRules: new Map([
        [after.username, emqxRules(after)],
        [unknown.username, emqxRules(unknown)],
      ]),
    });
    expect(plan.importUsers).toEqual([after, unknown]);
    expect(plan.updated).toBe(2);
    expect(plan.kickChanged).toEqual(['node-1']);
  });

  it('deletes, kicks and forgets what is no longer desired, and replaces rules that differ', () => {
    const kept = user(1);
    const gone = user(2);
    const orphanRules = 'node-3';
    const plan = planReconcile({
      desired: [kept],
      applied: new Map([applied(kept), applied(gone)]),
      emqxUsers: new Set([kept.username, gone.username]),
      emqxRules: new Map([
        [kept.username, [{ topic: '#', permission: 'allow', action: 'all' }]],
        [gone.username, emqxRules(gone)],
        [orphanRules, []],
      ]),
    });
    expect(plan.deleteUsers).toEqual(['node-2']);
    expect(plan.deleteRules).toEqual(['node-2', 'node-3']);
    // node-3 never had a user: no session to kick.
    expect(plan.kickVanished).toEqual(['node-2']);
    expect(plan.forget).toEqual(['node-2']);
    expect(plan.replaceRules).toEqual([{ username: 'node-1', rules: desiredRules('c', '1') }]);
  });
});

describe('desiredRules', () => {
  it('lets a node publish only its status and acknowledgement and subscribe only its config push, exactly, and denies the rest', () => {
    const rules = desiredRules('c1', 'n1');
    const allows = rules.filter((r) => r.permission === 'allow');
    expect(allows.map((r) => [r.action, r.topic])).toEqual([
      ['publish', 'eq meshq/c1/n1/status'],
      ['publish', 'eq meshq/c1/n1/config/applied'],
      ['subscribe', 'eq meshq/c1/n1/config/push'],
    ]);
    // No wildcard in anything allowed, no "all" action among the allows.
    expect(allows.every((r) => !/[#+]/.test(r.topic) && r.action !== 'all')).toBe(true);
    // Everything after the allows is denied, for every action, $-topics included.
    expect(rules.slice(allows.length)).toEqual([
      expect.objectContaining({ topic: '#', permission: 'deny', action: 'all' }),
      expect.objectContaining({ topic: '$SYS/#', permission: 'deny', action: 'all' }),
    ]);
    expect(rules.findIndex((r) => r.permission === 'deny')).toBe(allows.length);
  });

  it('replaces the broad rules of an existing user and then leaves them alone', () => {
    const a = user(1);
    const broad: EmqxRule[] = [
      { topic: 'meshq/c/1/#', permission: 'allow', action: 'publish', qos: [0, 1, 2], retain: 'all' },
      { topic: 'meshq/c/1/#', permission: 'allow', action: 'subscribe', qos: [0, 1, 2], retain: 'all' },
    ];
    const first = planReconcile({ desired: [a], applied: new Map([applied(a)]), emqxUsers: new Set([a.username]), emqxRules: new Map([[a.username, broad]]) });
    expect(first.replaceRules).toEqual([{ username: a.username, rules: desiredRules('c', '1') }]);
    expect(first.importUsers).toEqual([]);
    const second = planReconcile({ desired: [a], applied: new Map([applied(a)]), emqxUsers: new Set([a.username]), emqxRules: new Map([[a.username, emqxRules(a)]]) });
    expect(second.replaceRules).toEqual([]);
    expect(second.createRules).toEqual([]);
  });
});

describe('sameRules', () => {
  it('fills in EMQX defaults, and tells apart order, extra filters and other topics', () => {
    const want = desiredRules('c', 'n');
    expect(sameRules(want.map(({ qos: _q, retain: _r, ...rest }) => rest) as EmqxRule[], want)).toBe(true);
    expect(sameRules([...want].reverse() as EmqxRule[], want)).toBe(false);
    expect(sameRules(want.map((r) => ({ ...r, clientid_re: '.*' })) as EmqxRule[], want)).toBe(false);
    expect(sameRules(desiredRules('c', 'other') as EmqxRule[], want)).toBe(false);
  });
});

describe('broker sync bookkeeping', () => {
  it('is pending while a mark or a newer epoch is not applied', () => {
    const s: BrokerSyncState = { pendingSeq: 0, appliedSeq: 0, syncedEpoch: 0, lastError: null, lastSyncAt: null };
    expect(isBrokerSyncPending(s, 0)).toBe(false);
    expect(isBrokerSyncPending({ ...s, pendingSeq: 1 }, 0)).toBe(true);
    expect(isBrokerSyncPending(s, 1)).toBe(true);
  });

  it('backs off exponentially up to a minute', () => {
    const max = () => 0;
    expect([1, 2, 3, 4].map((n) => retryDelay('broker.sync', n, max))).toEqual([1000, 2000, 4000, 8000]);
    expect(retryDelay('broker.sync', 7, max)).toBe(60_000);
    expect(retryDelay('broker.sync', 40, max)).toBe(60_000);
    expect(retryDelay('broker.sync', 40, () => 1)).toBe(48_000);
  });
});

describe('reconcileBroker', () => {
  it('replaces rule sets one by one when a bulk creation answers 409', async () => {
    const calls: string[] = [];
    const client = {
      async *allUsers() {},
      async *allRules() {},
      async createRules() {
        calls.push('createRules');
        throw new EmqxError('ALREADY_EXISTS', 'exists', { status: 409, retryable: false });
      },
      async replaceRules(username: string) {
        calls.push(`replace ${username}`);
      },
      async importUsersHash(users: unknown[]) {
        calls.push(`import ${users.length}`);
        return { total: users.length, success: users.length, override: 0, skipped: 0, failed: 0 };
      },
      async kickClients() {},
      async deleteUser() {
        return true;
      },
      async deleteRules() {
        return true;
      },
    } as unknown as EmqxClient;
    const recorded: AppliedCredential[] = [];
    const repos = {
      credentials: {
        brokerCredentials: async () =>
          [1, 2].map((n) => ({ nodeId: String(n), configId: 'c', username: `node-${n}`, clientId: `node-${n}`, passwordHash: 'h', salt: 's', version: 1 })),
      },
      brokerApplied: {
        all: async () => new Map(),
        record: async (rows: AppliedCredential[]) => void recorded.push(...rows),
        forget: async () => undefined,
      },
    } as unknown as Repositories;

    expect(await reconcileBroker(client, repos, pino({ level: 'silent' }))).toEqual({ created: 2, updated: 0, deleted: 0, kicked: 0 });
    expect(calls).toEqual(['createRules', 'replace node-1', 'replace node-2', 'import 2']);
    expect(recorded.map((r) => r.username)).toEqual(['node-1', 'node-2']);
  });
});
