import { Redis } from 'ioredis';
import { REDIS_URL } from './db.js';

/** Every key under a test's queue prefix, with its whole content as text. */
export async function dumpPrefix(prefix: string): Promise<Map<string, string>> {
  const r = new Redis(REDIS_URL);
  const out = new Map<string, string>();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      for (const key of keys) out.set(key, await dumpKey(r, key));
      cursor = next;
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
  return out;
}

async function dumpKey(r: Redis, key: string): Promise<string> {
  switch (await r.type(key)) {
    case 'string':
      return (await r.get(key)) ?? '';
    case 'hash':
      return JSON.stringify(await r.hgetall(key));
    case 'list':
      return JSON.stringify(await r.lrange(key, 0, -1));
    case 'set':
      return JSON.stringify(await r.smembers(key));
    case 'zset':
      return JSON.stringify(await r.zrange(key, 0, -1));
    case 'stream':
      return JSON.stringify(await r.xrange(key, '-', '+'));
    default:
      return '';
  }
}

export async function deletePrefix(prefix: string): Promise<void> {
  const r = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      if (keys.length) await r.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}
