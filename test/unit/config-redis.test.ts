/**
 * REDIS_URL for a shared Redis: TLS (`rediss://`) and ACL users (`user:password@`) are
 * accepted by the configuration, reach the Redis client as such, and the password never
 * shows in what meshq logs.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, redactUrl } from '../../src/config.js';
import { redisConnection } from '../../src/jobs/queue-client.js';

const base = { DATABASE_URL: 'postgres://meshq@127.0.0.1:5432/meshq', SECRET_KEY: 'c'.repeat(64) };

describe('REDIS_URL', () => {
  it.each([
    ['TLS with an ACL user', 'rediss://meshq:s3cret-pw@redis.example.net:6380/2', { username: 'meshq', password: 's3cret-pw', tls: true, port: 6380, db: 2 }],
    ['plain with an ACL user', 'redis://meshq:s3cret-pw@10.0.0.5:6379', { username: 'meshq', password: 's3cret-pw', tls: false, port: 6379, db: 0 }],
    ['TLS without a user', 'rediss://redis.example.net', { username: '', tls: true, port: 6379 }],
  ])('accepts %s and hands user, password and TLS to the client', (_, url, expected) => {
    const config = loadConfig({ ...base, REDIS_URL: url });
    expect(config.redisUrl).toBe(url);
    const client = redisConnection(config.redisUrl);
    try {
      const { username, password, tls, port, db } = client.options;
      expect({ username: username ?? '', password, tls: Boolean(tls), port, db }).toMatchObject(expected);
    } finally {
      client.disconnect();
    }
  });

  it('keeps the password out of the redacted form meshq logs', () => {
    expect(redactUrl('rediss://meshq:s3cret-pw@redis.example.net:6380/2')).toBe('rediss://meshq:***@redis.example.net:6380/2');
  });

  it('refuses another scheme, naming the variable', () => {
    expect(() => loadConfig({ ...base, REDIS_URL: 'http://redis.example.net' })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, REDIS_URL: 'http://redis.example.net' })).toThrow(/REDIS_URL/);
  });
});
