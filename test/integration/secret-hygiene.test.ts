/**
 * Secrets never reach Redis or the logs: after credential rotations and token creations
 * (and their jobs completing), every key under the test's queue prefix (job data,
 * results, logs, event streams, metadata) and every log line is scanned for the
 * plaintext secrets the API handed out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPrefix } from '../support/redis.js';
import { memorySink, startStack, type Stack } from '../support/stack.js';

const ADMIN_PASSWORD = 'hygiene-admin-pw';
const authorization = 'Basic ' + Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64');

describe('secret hygiene', () => {
  let s: Stack;
  let logs = '';

  beforeAll(async () => {
    const sink = memorySink((text) => (logs += text));
    s = await startStack('sqlite', 'hygiene', { adminPassword: ADMIN_PASSWORD, env: { LOG_LEVEL: 'trace' }, logDestination: sink });
  });

  afterAll(async () => {
    await s?.stop();
  });

  const post = async (url: string, payload?: unknown) => {
    const res = await s.api.inject({ method: 'POST', url, headers: { authorization }, payload: payload as object });
    expect(res.statusCode, res.body).toBe(200);
    return res.json();
  };

  it('no plaintext MQTT password or API token is in any Redis key or log line', async () => {
    const config = await post('/api/v1/jobs?wait=10000', { type: 'config.create', data: { name: 'hyg', subnet: '10.77.0.0/24' } });
    const secrets: string[] = [ADMIN_PASSWORD];
    for (let i = 0; i < 3; i++) {
      const node = await post('/api/v1/jobs?wait=10000', { type: 'node.create', data: { configId: config.result.id, name: `d${i}`, kind: 'dynamic' } });
      for (let r = 0; r < 2; r++) {
        const rotated = await post(`/api/v1/nodes/${node.result.id}/credentials?wait=10000`);
        expect(rotated.job.state).toBe('completed');
        secrets.push(rotated.password);
      }
      const token = await post('/api/v1/tokens?wait=10000', { name: `t${i}` });
      expect(token.job.state).toBe('completed');
      secrets.push(token.token);
      // Use the token, so an authenticated request is logged too.
      const res = await s.api.inject({ method: 'GET', url: '/api/v1/configs', headers: { authorization: `Bearer ${token.token}` } });
      expect(res.statusCode).toBe(200);
    }

    const keys = await dumpPrefix(s.app.config.queuePrefix);
    expect(keys.size).toBeGreaterThan(0);
    const redis = [...keys].map(([k, v]) => `${k} ${v}`).join('\n');
    expect(redis).toContain('node.rotate-credentials'); // the scan does see the jobs
    expect(logs).toContain('"role":"test"'); // and the log capture works
    for (const secret of secrets) {
      expect(redis, 'a secret reached Redis').not.toContain(secret);
      expect(logs, 'a secret reached the logs').not.toContain(secret);
    }
    // The Basic credentials as sent (base64) must not be logged either.
    expect(logs).not.toContain(authorization.slice('Basic '.length));
  });
});
