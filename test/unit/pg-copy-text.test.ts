/**
 * PostgreSQL COPY text to snapshot JSON, byte for byte: whatever chunks the stream cuts
 * the text into, the JSON is JSON.stringify's of the rows the JS reader would make (the
 * integration test snapshots-export-json holds the whole export to that on a real
 * database; this covers the cuts and the forms a database rarely produces).
 */
import { describe, expect, it } from 'vitest';
import { CopyTextToJson, JsonRowsToCopy, rowsToCopyText } from '../../src/snapshots/pg-copy-text.js';
import type { ColumnKind, SnapshotRow, TableSpec } from '../../src/snapshots/tables.js';

const column = (name: string, kind: ColumnKind) => ({ name, property: name, kind, nullable: true });
const SPEC: TableSpec = {
  table: 'thing',
  entity: class {},
  columns: [column('id', 'uuid'), column('at', 'datetime'), column('n', 'integer'), column('ok', 'boolean'), column('name', 'string'), column('doc', 'json')],
  primaryKey: ['id'],
  uniques: [],
};

const ID = '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b';
/** COPY lines as PostgreSQL writes them (TimeZone UTC, DateStyle ISO), and the rows they stand for. */
const CASES: [string, Record<string, unknown>][] = [
  [`${ID}\t2026-01-02 03:04:05.678+00\t-12\tt\tplain\t{"a": [1, 2.5, null]}`, { id: ID, at: '2026-01-02T03:04:05.678Z', n: -12, ok: true, name: 'plain', doc: { a: [1, 2.5, null] } }],
  [`${ID}\t0999-12-31 23:59:59+00\t0\tf\t\t"text"`, { id: ID, at: '0999-12-31T23:59:59.000Z', n: 0, ok: false, name: '', doc: 'text' }],
  [`${ID}\t2026-01-02 03:04:05.5+00\t\\N\t\\N\t\\N\t\\N`, { id: ID, at: '2026-01-02T03:04:05.500Z', n: null, ok: null, name: null, doc: null }],
  [`${ID}\t2026-01-02 03:04:05.07+00\t7\tt\tq " b \\\\ t \\t n \\n r \\r b \\b f \\f v \\v c \u0001 d \u007f 🛰️ \\\\N\t{"s": "x\\\\"y\\\\\\\\z\\\\n"}`, {
    id: ID,
    at: '2026-01-02T03:04:05.070Z',
    n: 7,
    ok: true,
    name: 'q " b \\ t \t n \n r \r b \b f \f v \v c \u0001 d \u007f 🛰️ \\N',
    doc: { s: 'x"y\\z\n' },
  }],
];

function convert(text: Buffer, cuts: number[]): { json: string; rows: number } {
  const json = new CopyTextToJson(SPEC);
  const parts: Buffer[] = [];
  let rows = 0;
  let at = 0;
  for (const cut of [...cuts, text.length]) {
    for (const piece of json.push(text.subarray(at, cut))) {
      parts.push(piece.bytes);
      rows += piece.rows;
    }
    at = cut;
  }
  const last = json.end();
  if (last) {
    parts.push(last.bytes);
    rows += last.rows;
  }
  return { json: Buffer.concat(parts).toString('utf8'), rows };
}

describe('COPY text to snapshot JSON', () => {
  const text = Buffer.from(CASES.map(([line]) => `${line}\n`).join(''), 'utf8');
  const rows = CASES.map(([, row]) => row);
  // JSON columns keep jsonb's own text (`{"a": [1, 2.5, null]}`), the same value as
  // JSON.stringify's; every other column is written exactly as JSON.stringify writes it.
  const expected = JSON.stringify(rows).slice(1, -1).replace('{"a":[1,2.5,null]}', '{"a": [1, 2.5, null]}').replace('{"s":', '{"s": ');

  it('writes what JSON.stringify writes for the same rows, in one chunk', () => {
    const out = convert(text, []);
    expect(out).toEqual({ json: expected, rows: CASES.length });
    expect(JSON.parse(`[${out.json}]`)).toStrictEqual(rows);
  });

  it('writes the same wherever the stream cuts the text, inside characters and escapes too', () => {
    for (let cut = 1; cut < text.length; cut++) expect(convert(text, [cut]).json).toBe(expected);
    const everyByte = Array.from({ length: text.length - 1 }, (_, i) => i + 1);
    expect(convert(text, everyByte)).toEqual({ json: expected, rows: CASES.length });
  });

  it('refuses rows whose columns do not match and date-times it cannot carry', () => {
    expect(() => convert(Buffer.from(`${ID}\t2026-01-02 03:04:05+00\t1\tt\tx\n`), [])).toThrow(/does not have the 6 columns/);
    expect(() => convert(Buffer.from(`${ID}\t2026-01-02 03:04:05+00\t1\tt\tx\t1\t2\n`), [])).toThrow(/does not have the 6 columns/);
    for (const at of ['12026-01-02 03:04:05+00', '0044-03-15 12:00:00+00 BC', '2026-01-02 03:04:05.1234+00', '2026-01-02 03:04:05+02', '2026-01-02T03:04:05.000Z']) {
      expect(() => convert(Buffer.from(`${ID}\t${at}\t1\tt\tx\t1\n`), [])).toThrow(/date-time the snapshot cannot carry/);
    }
    expect(() => convert(Buffer.from(`${ID}\t2026-01-02 03:04:05+00\t1\tt`), [])).toThrow(/ends inside a row/);
  });
});

describe('snapshot JSON rows to COPY text (the restore of rows the API checked)', () => {
  const toCopy = (rows: string[]) => new JsonRowsToCopy(SPEC).convert(rows.map((r) => Buffer.from(r, 'utf8'))).toString('utf8');
  const viaObjects = (rows: string[]) => rowsToCopyText(SPEC, rows.map((r) => JSON.parse(r) as SnapshotRow), 0, rows.length);
  /** A COPY text field back to its text (the escapes undone). */
  const field = (f: string) => f.replace(/\\(.)/g, (_m, c: string) => ({ t: '\t', n: '\n', r: '\r', b: '\b', f: '\f', v: '\v' })[c] ?? c);
  /** Lines with each JSON column's value parsed: what a jsonb column holds of it. */
  const values = (text: string) =>
    text.split('\n').map((line) => line.split('\t').map((f, i) => (SPEC.columns[i]?.kind === 'json' && f !== '\\N' ? (JSON.parse(field(f)) as unknown) : f)));

  const canonical = CASES.map(([, row]) => JSON.stringify(row));
  const other = [
    // keys in another order, whitespace everywhere, a key that is no column, one missing
    ` {\n\t"doc" : {"k": [1, -2, 0, true, null, "\\u00e9\\n\\"\\\\"]} ,\r\n "name":"x", "unknown": {"a": [1, {"b": "}"}]}, "id": "${ID}", "n": 5, "ok": false } `,
    // escaped keys and values, duplicates (the last counts)
    `{"i\\u0064":"${ID}","n":1,"n":2,"name":"tab\\there \\\\ \\"q\\" \\u00e9 \\ud83d\\ude80 \\/","at":"2026-01-02T03:04:05.678Z","doc":null,"ok":true,"ok":null}`,
    // values JSON.parse rewrites: a date-time with a zone, integers written 1.0 / 1e1 / -0,
    // jsonb numbers with fractions, exponents, -0 and more digits than a double keeps
    `{"id":"${ID}","at":"2026-01-02T05:04:05+02:00","n":1.0,"ok":true,"name":"","doc":{"a":1.50,"b":1e2,"c":-0,"d":12345678901234567890}}`,
    `{"id":"${ID}","at":"2026-01-02T03:04:05.6Z","n":1e1,"name":"🛰️","doc":[-0.0]}`,
    `{"id":"${ID}","n":-0,"doc":"just \\\\ text\\t"}`,
    '{}',
  ];

  it('writes what rowsToCopyText writes for the parsed rows, jsonb values as the same values', () => {
    expect(toCopy(canonical)).toBe(viaObjects(canonical));
    for (const row of other) expect(values(toCopy([row]))).toStrictEqual(values(viaObjects([row])));
    expect(values(toCopy(other))).toStrictEqual(values(viaObjects(other)));
  });

  it('keeps a jsonb value as its text only where JSON.parse would not change a number in it', () => {
    const [kept] = toCopy([other[0]!]).split('\n');
    expect(kept!.split('\t')[5]).toBe('{"k": [1, -2, 0, true, null, "\\\\u00e9\\\\n\\\\"\\\\\\\\"]}');
    const [parsed] = toCopy([other[2]!]).split('\n');
    expect(parsed!.split('\t')[5]).toBe('{"a":1.5,"b":100,"c":0,"d":12345678901234567000}');
  });

  it('refuses bytes that are not a JSON object', () => {
    for (const bad of ['[1]', `{"id":"${ID}`, `{"id" "${ID}"}`, `{"name":"a\tb"}`, `{"id":"${ID}" "n":1}`, `{"n":}`]) {
      expect(() => toCopy([bad]), bad).toThrow(/is not the JSON it should be/);
    }
  });
});
