/**
 * The Node.js version guard: its message for a faked version, and that every entry point
 * runs it before loading anything else (static imports are linked and evaluated before
 * the entry's first line, so the entry may import nothing else statically).
 * test/integration/sigterm.test.ts runs the compiled entries on a real older Node.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NEEDED_NODE_MAJOR, unsupportedNodeMessage } from '../../src/bin/node-guard.js';

const root = resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(resolve(root, file), 'utf8');

describe('unsupportedNodeMessage', () => {
  it.each(['20.20.2', 'v20.20.2', '22.12.0', '23.11.1', '18.0.0'])('refuses Node %s in one line naming the version found, the one needed and how to get it', (version) => {
    const message = unsupportedNodeMessage(version)!;
    expect(message).toBeDefined();
    expect(message).not.toContain('\n');
    expect(message).toContain(`found Node.js ${version.replace(/^v/, '')}`);
    expect(message).toContain('needs Node.js 24');
    expect(message).toContain('nvm install');
    expect(message).toContain('.nvmrc');
  });

  it.each(['24.0.0', '24.21.0', 'v24.11.1', '25.2.0'])('accepts Node %s', (version) => {
    expect(unsupportedNodeMessage(version)).toBeUndefined();
  });

  it('refuses a version it cannot read, rather than guessing', () => {
    expect(unsupportedNodeMessage('')).toMatch(/found Node\.js unknown, needs Node\.js 24/);
    expect(unsupportedNodeMessage('twenty-four')).toMatch(/found Node\.js twenty-four, needs/);
  });

  it('needs the version .nvmrc and package.json engines name', () => {
    expect(read('.nvmrc').trim()).toBe(String(NEEDED_NODE_MAJOR));
    const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
    expect(engines).toMatch(new RegExp(`^>=${NEEDED_NODE_MAJOR}(\\.0(\\.0)?)?(\\s|$)`));
    expect(read('.npmrc')).toMatch(/^engine-strict\s*=\s*true$/m);
  });
});

describe('entry points', () => {
  // Modules of src/bin that the entry points load, not entry points themselves.
  const shared = new Set(['bootstrap.ts', 'node-guard.ts', 'telemetry.ts']);
  const entries = readdirSync(resolve(root, 'src/bin')).filter((f) => f.endsWith('.ts') && !shared.has(f));

  it('load nothing through the guard itself', () => {
    const code = read('src/bin/node-guard.ts').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    expect(code).toContain('export function unsupportedNodeMessage');
    expect(code).not.toMatch(/^\s*import\b|\bimport\(|\brequire\(/m);
  });

  it('are the five roles and the CLI', () => {
    expect(entries.sort()).toEqual(['admin.ts', 'api.ts', 'both.ts', 'cli.ts', 'migrate.ts', 'worker.ts']);
  });

  it.each(entries)('%s checks the version before it loads anything else', (file) => {
    const code = read(`src/bin/${file}`);
    const statics = [...code.matchAll(/^import\s[^;]*?from\s+'([^']+)'|^import\s+'([^']+)'/gm)].map((m) => m[1] ?? m[2]);
    expect(statics).toEqual(['./node-guard.js']);
    const body = code.slice(code.indexOf("from './node-guard.js';")).split('\n').slice(1).filter((l) => l.trim() && !l.trim().startsWith('//'));
    expect(body[0]).toBe('exitOnUnsupportedNode();');
  });
});
