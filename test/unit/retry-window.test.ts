/**
 * Infrastructure errors retry for a window of time, not a count: the attempts a job is
 * added with cover the whole window even when every wait is shortened by the jitter.
 */
import { describe, expect, it } from 'vitest';
import { attemptsFor, DEFAULT_RETRY, jobOptions, retryDelay } from '../../src/jobs/table.js';

/** The shortest total wait `attempts` runs can have: every delay shortened by the full jitter. */
function shortestWait(type: string, attempts: number, capMs?: number): number {
  let sum = 0;
  for (let n = 1; n < attempts; n++) sum += retryDelay(type, n, () => 1 - Number.EPSILON, capMs);
  return sum;
}

describe('retry window', () => {
  it('covers at least an hour by default, where 8 attempts covered about a minute', () => {
    const attempts = jobOptions('config.create').attempts!;
    expect(shortestWait('config.create', attempts)).toBeGreaterThanOrEqual(3_600_000);
    // One run fewer would not: the count is the smallest that covers the window.
    expect(shortestWait('config.create', attempts - 1)).toBeLessThan(3_600_000);
  });

  it('follows JOB_RETRY_WINDOW_MS and JOB_RETRY_MAX_DELAY_MS', () => {
    const limits = { windowMs: 10_000, capMs: 200 };
    const attempts = jobOptions('node.update', undefined, limits).attempts!;
    expect(shortestWait('node.update', attempts, 200)).toBeGreaterThanOrEqual(10_000);
    expect(retryDelay('node.update', 5, () => 0, 200)).toBe(200);
    expect(attemptsFor(DEFAULT_RETRY, { windowMs: 0 })).toBe(1);
  });

  it('keeps a row that names its own attempts', () => {
    expect(jobOptions('broker.sync', undefined, { windowMs: 10 }).attempts).toBe(50);
  });
});
