/**
 * The two shortcuts on every API request keep what they replace: a shared credential read
 * never answers a caller with a read that began before it asked (a changed password must
 * stop the old one at once), and the security headers computed once are the ones helmet
 * sets.
 */
import { describe, expect, it } from 'vitest';
import { FreshRead } from '../../src/api/auth.js';
import { securityHeaders } from '../../src/api/browsers.js';

/** A read whose answers the test releases by hand, recording when each read started. */
function manualReads() {
  const started: { value: number; resolve: (v: number) => void; reject: (e: Error) => void }[] = [];
  let version = 0;
  const read = () =>
    new Promise<number>((resolve, reject) => {
      started.push({ value: version, resolve, reject });
    });
  return {
    started,
    read,
    change: () => version++,
    /** Answers the i-th read with the version current when it started. */
    finish: async (i: number) => {
      started[i]!.resolve(started[i]!.value);
      await new Promise((r) => setImmediate(r));
    },
  };
}

const round = () => new Promise((r) => setImmediate(r));

describe('FreshRead', () => {
  it('shares one read among the callers of one event-loop round, started after they asked', async () => {
    const m = manualReads();
    const fresh = new FreshRead(m.read);
    const a = fresh.get();
    const b = fresh.get();
    expect(m.started).toHaveLength(0); // not before the round's callers have all asked
    await round();
    expect(m.started).toHaveLength(1);
    await m.finish(0);
    expect(await a).toBe(0);
    expect(await b).toBe(0);
  });

  it('never answers a caller with a read that was under way when it asked', async () => {
    const m = manualReads();
    const fresh = new FreshRead(m.read);
    const first = fresh.get();
    await round();
    expect(m.started).toHaveLength(1);
    m.change(); // the row changes while the first read is under way
    const second = fresh.get();
    await round();
    expect(m.started).toHaveLength(2); // a read of its own, started after it asked
    await m.finish(0);
    await m.finish(1);
    expect(await first).toBe(0);
    expect(await second).toBe(1);
  });

  it('passes a failed read to its own callers only', async () => {
    const m = manualReads();
    const fresh = new FreshRead(m.read);
    const failing = fresh.get();
    await round();
    const later = fresh.get();
    m.started[0]!.reject(new Error('database down'));
    await expect(failing).rejects.toThrow('database down');
    await round();
    await m.finish(1);
    expect(await later).toBe(0);
  });
});

describe('security headers', () => {
  it('are computed once with the CSP, no framing, nosniff and no referrer', () => {
    const headers = securityHeaders();
    expect(Object.isFrozen(headers)).toBe(true);
    expect(headers['x-content-type-options']).toBe('nosniff');
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['referrer-policy']).toBe('no-referrer');
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(headers['content-security-policy']).toContain("default-src 'self'");
    expect(headers['strict-transport-security']).toMatch(/max-age=\d+/);
  });
});
