/**
 * The stored-value rules for JSON: one module behind settings.update and the snapshot's
 * JSON columns, so what one accepts the other accepts too.
 */
import { describe, expect, it } from 'vitest';
import { describeJsonProblem, jsonValueProblem, MAX_JSON_DEPTH, MAX_SETTING_VALUE_BYTES } from '../../src/domain/json-values.js';
import { settingsUpdate } from '../../src/jobs/payloads.js';
import { parseOrInvalid } from '../../src/domain/validation.js';

const nested = (levels: number, leaf: unknown = 1): unknown => {
  let v = leaf;
  for (let i = 0; i < levels; i++) v = i % 2 === 0 ? [v] : { k: v };
  return v;
};

const settingsRefusal = (values: Record<string, unknown>): string => {
  try {
    parseOrInvalid(settingsUpdate, { values }, 'settings');
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
};

describe('JSON value rules', () => {
  it('accepts plain JSON: unicode, numbers, null, nesting up to the bound', () => {
    for (const v of ['Zürich ↔ 東京 🛰️', 0, -1.5, true, null, [], {}, { a: [1, 'two', null, { b: false }] }, nested(MAX_JSON_DEPTH)]) {
      expect(jsonValueProblem(v), JSON.stringify(v).slice(0, 40)).toBeNull();
    }
  });

  it('refuses a NUL in a string or a key, naming where it is', () => {
    expect(describeJsonProblem(jsonValueProblem({ a: { b: ['x', 'y\u0000z'] } })!)).toBe(
      'a.b[1] contains a NUL character (\\u0000), which PostgreSQL cannot store',
    );
    expect(describeJsonProblem(jsonValueProblem({ a: { 'k\u0000': 1 } })!)).toMatch(/^a key "k\\u0000" contains a NUL character/);
  });

  it('refuses a lone surrogate, which jsonb cannot hold', () => {
    expect(jsonValueProblem(['ok', '\ud800'])!.message).toMatch(/lone UTF-16 surrogate/);
    expect(jsonValueProblem('🛰️')).toBeNull();
  });

  it('refuses nesting one level past the bound, and a thousand levels without deep recursion', () => {
    expect(jsonValueProblem(nested(MAX_JSON_DEPTH + 1))).toEqual({ path: [], message: `is nested more than ${MAX_JSON_DEPTH} levels deep` });
    // Deeper than any stack would allow a recursive walk to go.
    expect(jsonValueProblem(nested(1_000_000))!.message).toMatch(/nested more than/);
  });

  it('refuses what JSON cannot carry', () => {
    expect(jsonValueProblem(Number.NaN)!.message).toMatch(/not a JSON number/);
    expect(jsonValueProblem({ a: new Date(0) })!.message).toBe('is not a plain JSON object');
    expect(jsonValueProblem({ a: undefined })!.message).toMatch(/undefined is not a JSON value/);
  });

  it('bounds the size in UTF-8 bytes only when asked', () => {
    const big = 'é'.repeat(MAX_SETTING_VALUE_BYTES / 2); // two bytes each, plus quotes
    expect(jsonValueProblem(big)).toBeNull();
    expect(jsonValueProblem(big, { maxBytes: MAX_SETTING_VALUE_BYTES })!.message).toBe(
      `is ${MAX_SETTING_VALUE_BYTES + 2} bytes of JSON, more than ${MAX_SETTING_VALUE_BYTES}`,
    );
    expect(jsonValueProblem('é'.repeat(MAX_SETTING_VALUE_BYTES / 2 - 1), { maxBytes: MAX_SETTING_VALUE_BYTES })).toBeNull();
  });
});

describe('settings.update values', () => {
  it('refuses NUL, depth 1000, a lone surrogate and an oversized value, saying which key and where', () => {
    expect(settingsRefusal({ 'ui.theme': { name: 'da\u0000rk' } })).toBe(
      'settings: values.ui.theme.name: contains a NUL character (\\u0000), which PostgreSQL cannot store',
    );
    expect(settingsRefusal({ deep: nested(1000) })).toBe(`settings: values.deep: is nested more than ${MAX_JSON_DEPTH} levels deep`);
    expect(settingsRefusal({ s: ['\udc00'] })).toMatch(/values\.s\[0\]: contains a lone UTF-16 surrogate/);
    expect(settingsRefusal({ big: 'x'.repeat(MAX_SETTING_VALUE_BYTES) })).toMatch(/values\.big: is \d+ bytes of JSON, more than 65536/);
    expect(settingsRefusal({ 'bad\u0000key': 1 })).toMatch(/setting key "bad\\u0000key" must be 1-128 letters/);
  });

  it('accepts unicode, the deepest allowed value, the largest allowed value and null (removal)', () => {
    const values = {
      'ui.name': 'Zürich ↔ 東京 🛰️',
      'ui.deep': nested(MAX_JSON_DEPTH),
      'ui.big': 'x'.repeat(MAX_SETTING_VALUE_BYTES - 2),
      'ui.gone': null,
    };
    expect(parseOrInvalid(settingsUpdate, { values }, 'settings')).toEqual({ values });
  });
});
