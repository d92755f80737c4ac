/**
 * The export's COPY reader (src/db/pg-copy-out.ts) takes the connection's socket over
 * from node-postgres: its text must be exactly what the server sent whatever the socket
 * cut (rows longer than a socket read, messages cut inside their header), a notice in
 * the middle of the data must not end up in it, a failure half-way must reject with the
 * server's error, and then the client must be usable for the next query; a reader that
 * stops early ends the connection instead of leaving it stuck.
 * PostgreSQL only: SQLite has no COPY.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { copyOutRaw } from '../../src/db/pg-copy-out.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';

async function text(client: pg.PoolClient | pg.Client, sql: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of copyOutRaw(client as pg.PoolClient, sql)) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks).toString('utf8');
}

describe('COPY TO read off the socket (PostgreSQL)', () => {
  let db: TestDatabase;
  let client: pg.Client;
  beforeAll(async () => {
    db = await createTestDatabase('postgresql', 'copy_out');
    client = new pg.Client({ connectionString: db.url });
    await client.connect();
    await client.query("set client_encoding to 'UTF8'");
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  it('gives the server text exactly, for short rows, rows longer than a socket read and escapes', async () => {
    const sql =
      "select i, case when i % 7 = 0 then repeat('x', 200000 + i) else 'r' || i end, E'tab\\there \\\\ ü 😀' " +
      'from generate_series(1, 3000) i order by i';
    const expected = (await client.query<{ i: number; t: string }>(sql)).rows
      .map((r) => Object.values(r).map((v) => String(v).replace(/\\/g, '\\\\').replace(/\t/g, '\\t')).join('\t'))
      .join('\n');
    expect(await text(client, `copy (${sql}) to stdout`)).toBe(`${expected}\n`);
    expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
  });

  it('leaves notices sent during the COPY out of its text', async () => {
    await client.query(`create or replace function noisy(i int) returns int language plpgsql as $$
      begin if i % 500 = 0 then raise notice 'row %', i; end if; return i; end $$`);
    const notices: string[] = [];
    const onNotice = (n: { message?: string }) => notices.push(n.message ?? '');
    client.on('notice', onNotice);
    try {
      const got = await text(client, 'copy (select noisy(i) from generate_series(1, 2000) i) to stdout');
      expect(got).toBe(`${Array.from({ length: 2000 }, (_, k) => k + 1).join('\n')}\n`);
    } finally {
      client.off('notice', onNotice);
    }
  });

  it('rejects with the server error when the COPY fails half-way, and the client goes on', async () => {
    const rows: string[] = [];
    const failing = (async () => {
      for await (const chunk of copyOutRaw(client as unknown as pg.PoolClient, 'copy (select 100000 / (50000 - i) from generate_series(1, 60000) i) to stdout')) {
        rows.push(chunk.toString('latin1'));
      }
    })();
    await expect(failing).rejects.toMatchObject({ code: '22012' });
    expect((await client.query('select 2 as two')).rows).toEqual([{ two: 2 }]);
    expect(await text(client, 'copy (select 3) to stdout')).toBe('3\n');
  });

  it('ends the connection of a reader that stops half-way, rather than leaving it stuck', async () => {
    const other = new pg.Client({ connectionString: db.url });
    await other.connect();
    const errors: Error[] = [];
    other.on('error', (err) => errors.push(err));
    let seen = 0;
    for await (const chunk of copyOutRaw(other as unknown as pg.PoolClient, 'copy (select i from generate_series(1, 500000) i) to stdout')) {
      seen += chunk.length;
      break;
    }
    expect(seen).toBeGreaterThan(0);
    await expect(other.query('select 1')).rejects.toThrow();
    await other.end().catch(() => undefined);
  });

  it('rejects a statement the server refuses before any data', async () => {
    await expect(text(client, 'copy (select * from no_such_table) to stdout')).rejects.toMatchObject({ code: '42P01' });
    expect(await text(client, 'copy (select 4) to stdout')).toBe('4\n');
  });
});
