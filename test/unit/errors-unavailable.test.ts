/**
 * Outages are 503 with Retry-After, never 500: the error mapping recognises the errors
 * the drivers raise when PostgreSQL, SQLite or Redis cannot serve (as they raise them,
 * wrapped or not), and leaves programming errors a 500.
 */
import { describe, expect, it } from 'vitest';
import { isUnavailable, mapError, UnavailableError, withDeadline } from '../../src/api/errors.js';

const pgError = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('infrastructure errors', () => {
  it.each([
    ['PostgreSQL shutting down (57P01)', pgError('57P01', 'terminating connection due to administrator command')],
    ['PostgreSQL starting up (57P03)', pgError('57P03', 'the database system is starting up')],
    ['too many connections (53300)', pgError('53300')],
    ['connection failure (08006)', pgError('08006')],
    ['statement timeout (57014)', pgError('57014', 'canceling statement due to statement timeout')],
    ['serialization failure (40001)', pgError('40001')],
    ['refused connection', pgError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432')],
    ['pg pool timeout', new Error('timeout exceeded when trying to connect')],
    ['pg connection lost', new Error('Connection terminated unexpectedly')],
    ['ioredis without offline queue', new Error("Stream isn't writeable and enableOfflineQueue options is false")],
    ['ioredis command timeout', new Error('Command timed out')],
    ['Redis loading its AOF', Object.assign(new Error('LOADING Redis is loading the dataset in memory'), { name: 'ReplyError' })],
    ['a demoted Redis primary (failover)', Object.assign(new Error("READONLY You can't write against a read only replica."), { name: 'ReplyError' })],
    ['a Redis primary cut off from its replicas', Object.assign(new Error('NOREPLICAS Not enough good replicas to write.'), { name: 'ReplyError' })],
    ['SQLite busy', pgError('SQLITE_BUSY', 'database is locked')],
    ['a wrapped cause', Object.assign(new Error('query failed'), { cause: pgError('57P01') })],
  ])('%s is a 503', (_name, err) => {
    expect(isUnavailable(err)).toBe(true);
    const mapped = mapError(err);
    expect(mapped.status).toBe(503);
    expect(mapped.body.error.code).toBe('UNAVAILABLE');
  });

  it.each([
    ['a TypeError', new TypeError('x is undefined')],
    ['a unique violation (23505)', pgError('23505')],
    ['a syntax error (42601)', pgError('42601')],
  ])('%s stays a 500', (_name, err) => {
    expect(mapError(err).status).toBe(500);
  });

  it('a deadline that passes is a 503 naming what did not answer', async () => {
    const never = new Promise<never>(() => undefined);
    const err = await withDeadline(never, 20, 'the database').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(mapError(err).status).toBe(503);
    expect((err as Error).message).toBe('the database did not answer within 20 ms; nothing was submitted: retry later');
    await expect(withDeadline(Promise.resolve(7), 20, 'x')).resolves.toBe(7);
  });
});
