/**
 * REDIS_URL for a shared Redis: TLS (`rediss://`) and ACL users (`user:password@`) are
 * accepted by the configuration, reach the Redis client as such, and the password never
 * shows in what meshq logs. REDIS_SENTINELS and its companions: parsed once, bad values
 * named, and handed to every connection the factory opens (the failover itself is
 * test/integration/sentinel.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, describeRedis, loadConfig, redactUrl } from '../../src/config.js';
import { producerConnection, redisConnection } from '../../src/jobs/redis.js';

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

describe('REDIS_SENTINELS', () => {
  const sentinelEnv = { ...base, REDIS_SENTINELS: '127.0.0.1:26379, [::1]:26380,sentinel-3', REDIS_SENTINEL_NAME: 'mymaster' };

  it('reads host:port of each sentinel (26379 when left out), the master name, and defaults TLS to REDIS_URL\'s scheme', () => {
    const config = loadConfig(sentinelEnv);
    expect(config.redisSentinel).toEqual({
      sentinels: [
        { host: '127.0.0.1', port: 26379 },
        { host: '::1', port: 26380 },
        { host: 'sentinel-3', port: 26379 },
      ],
      name: 'mymaster',
      username: undefined,
      password: undefined,
      tls: false,
    });
    expect(Object.isFrozen(config.redisSentinel)).toBe(true);
    expect(loadConfig({ ...sentinelEnv, REDIS_URL: 'rediss://:pw@ignored' }).redisSentinel?.tls).toBe(true);
    expect(loadConfig({ ...sentinelEnv, REDIS_URL: 'rediss://:pw@ignored', REDIS_SENTINEL_TLS: 'false' }).redisSentinel?.tls).toBe(false);
    expect(loadConfig(base).redisSentinel).toBeUndefined();
    // An accepted job waits for one replica with Sentinel, none without, unless told.
    expect([loadConfig(sentinelEnv).redisWaitReplicas, loadConfig(base).redisWaitReplicas]).toEqual([1, 0]);
    expect(loadConfig({ ...sentinelEnv, REDIS_WAIT_REPLICAS: '0' }).redisWaitReplicas).toBe(0);
  });

  it('hands sentinels, master name, their credentials and TLS on both sides to every connection', () => {
    const config = loadConfig({
      ...sentinelEnv,
      REDIS_URL: 'rediss://meshq:data-pw@unused-host:6380/3',
      REDIS_SENTINEL_USERNAME: 'watcher',
      REDIS_SENTINEL_PASSWORD: 'sentinel-pw',
    });
    for (const client of [redisConnection(config), producerConnection(config, 1_000)]) {
      client.on('error', () => undefined);
      try {
        const o = client.options;
        expect(o.sentinels).toEqual(config.redisSentinel!.sentinels.map((s) => ({ ...s })));
        expect({ name: o.name, user: o.sentinelUsername, pw: o.sentinelPassword, sentinelTLS: Boolean(o.sentinelTLS) }).toEqual({
          name: 'mymaster',
          user: 'watcher',
          pw: 'sentinel-pw',
          sentinelTLS: true,
        });
        // The data nodes: the URL's user, password, database and TLS (ioredis needs enableTLSForSentinelMode for it).
        expect({ username: o.username, password: o.password, db: o.db, tls: Boolean(o.tls), tlsToPrimary: o.enableTLSForSentinelMode }).toEqual({
          username: 'meshq',
          password: 'data-pw',
          db: 3,
          tls: true,
          tlsToPrimary: true,
        });
      } finally {
        client.disconnect();
      }
    }
  });

  it('keeps passwords out of the description meshq logs', () => {
    const config = loadConfig({ ...sentinelEnv, REDIS_URL: 'redis://:data-pw@x', REDIS_SENTINEL_PASSWORD: 'sentinel-pw' });
    const text = describeRedis(config);
    expect(text).toBe('Redis primary "mymaster" of the sentinels 127.0.0.1:26379,[::1]:26380,sentinel-3:26379');
    expect(text).not.toMatch(/pw/);
    expect(describeRedis(loadConfig({ ...base, REDIS_URL: 'redis://u:data-pw@h:6379' }))).toBe('Redis at redis://u:***@h:6379');
  });

  it.each([
    ['a name without sentinels', { ...base, REDIS_SENTINEL_NAME: 'mymaster' }, /REDIS_SENTINEL_NAME: only used with REDIS_SENTINELS/],
    ['a sentinel password without sentinels', { ...base, REDIS_SENTINEL_PASSWORD: 'x' }, /REDIS_SENTINEL_PASSWORD: only used with REDIS_SENTINELS/],
    ['sentinels without a name', { ...base, REDIS_SENTINELS: 'a:26379' }, /REDIS_SENTINEL_NAME: required with REDIS_SENTINELS/],
    ['a URL instead of host:port', { ...sentinelEnv, REDIS_SENTINELS: 'redis://a:26379' }, /REDIS_SENTINELS: "redis:\/\/a:26379" is not host:port/],
    ['a port out of range', { ...sentinelEnv, REDIS_SENTINELS: 'a:26379,b:99999' }, /REDIS_SENTINELS: "b:99999" is not host:port/],
    ['an empty entry', { ...sentinelEnv, REDIS_SENTINELS: 'a:26379,,b:26379' }, /REDIS_SENTINELS: "" is not host:port/],
    ['a colon without a port', { ...sentinelEnv, REDIS_SENTINELS: 'a:' }, /REDIS_SENTINELS: "a:" is not host:port/],
    ['a bad master name', { ...sentinelEnv, REDIS_SENTINEL_NAME: 'my master' }, /REDIS_SENTINEL_NAME: must be the master name/],
    ['a negative replica count', { ...sentinelEnv, REDIS_WAIT_REPLICAS: '-1' }, /REDIS_WAIT_REPLICAS/],
    ['a bad TLS switch', { ...sentinelEnv, REDIS_SENTINEL_TLS: 'maybe' }, /REDIS_SENTINEL_TLS/],
  ])('refuses %s, naming the variable', (_, env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });
});
