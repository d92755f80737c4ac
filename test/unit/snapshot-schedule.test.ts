/**
 * SNAPSHOT_SCHEDULE is checked at start (a bad pattern is a clear error naming the
 * variable), and readiness warns when the newest export is older than two periods.
 * LOG_FORMAT takes json or pretty.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { overdueExport } from '../../src/jobs/snapshot-schedule.js';

const KEY = 'c'.repeat(64);
const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');
const load = (env: Record<string, string>) => loadConfig({ SECRET_KEY: KEY, ...env }, { generateSecretKey: false });

describe('SNAPSHOT_SCHEDULE', () => {
  it('accepts cron patterns with five fields, or six with seconds', () => {
    expect(load({ SNAPSHOT_SCHEDULE: '0 3 * * *' }).snapshotSchedule).toBe('0 3 * * *');
    expect(load({ SNAPSHOT_SCHEDULE: '*/10 * * * * *' }).snapshotSchedule).toBe('*/10 * * * * *');
    expect(load({ SNAPSHOT_SCHEDULE: '' }).snapshotSchedule).toBeUndefined();
  });

  it.each(['every day', '61 * * * *', '* * *', '0 3 * * * * *'])('refuses %j naming the variable', (pattern) => {
    expect(() => load({ SNAPSHOT_SCHEDULE: pattern })).toThrow(ConfigError);
    expect(() => load({ SNAPSHOT_SCHEDULE: pattern })).toThrow(/SNAPSHOT_SCHEDULE: must be a cron pattern/);
  });
});

describe('overdue scheduled exports', () => {
  const hourly = '0 * * * *';
  const now = Date.parse('2026-12-01T12:30:00Z');
  const hour = 3600_000;

  it('is quiet while the newest export is within two periods', () => {
    expect(overdueExport(hourly, now - 1.5 * hour, now, now - 10 * hour)).toBeNull();
  });

  it('warns when the newest export is older than two periods', () => {
    expect(overdueExport(hourly, now - 2.5 * hour, now, now - 10 * hour)).toMatch(/older than two periods of SNAPSHOT_SCHEDULE "0 \* \* \* \*"/);
  });

  it('warns about no export at all only once two periods have passed since start', () => {
    expect(overdueExport(hourly, null, now, now - hour)).toBeNull();
    expect(overdueExport(hourly, null, now, now - 3 * hour)).toMatch(/no successful snapshot export/);
  });
});

describe('LOG_FORMAT', () => {
  it('pretty writes readable lines, still redacted', async () => {
    const code = "const { createLogger } = await import('./src/logger.ts'); createLogger('info', 'meshq', undefined, 'pretty').info({ password: 'hunter2' }, 'hello pretty');";
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: root, timeout: 30_000 });
    expect(stdout).toMatch(/INFO \(meshq\/\d+\): hello pretty/);
    expect(stdout).toContain('[redacted]');
    expect(stdout).not.toContain('hunter2');
    expect(stdout).not.toContain('{"level"');
  });

  it('is json by default and takes pretty; anything else is refused', () => {
    expect(load({}).logFormat).toBe('json');
    expect(load({ LOG_FORMAT: 'pretty' }).logFormat).toBe('pretty');
    expect(() => load({ LOG_FORMAT: 'xml' })).toThrow(/LOG_FORMAT/);
  });
});
