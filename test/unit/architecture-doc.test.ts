/**
 * docs/architecture.md is the map a new maintainer reads first: every path it names must
 * exist, and code comments cite it (or nothing), never a document outside the repository.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');
const read = (p: string) => readFileSync(join(root, p), 'utf8');

/** Repository paths a document names: in backticks or as relative links. */
function namedPaths(markdown: string): string[] {
  const found = new Set<string>();
  for (const m of markdown.matchAll(/`([^`\s]+)`/g)) {
    const p = m[1]!.replace(/[),.:;]+$/, '');
    if (/^(src|test|bench|docs|deploy|scripts)\//.test(p) || /^\.?[\w-]+\.(md|cjs|js|json|ya?ml)$/.test(p)) found.add(p.replace(/\/$/, ''));
  }
  for (const m of markdown.matchAll(/\]\(([^)#\s]+)\)/g)) {
    if (!/^[a-z]+:/.test(m[1]!)) found.add(join('docs', m[1]!));
  }
  return [...found].sort();
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(root, dir)).flatMap((name) => {
    const rel = join(dir, name);
    return statSync(join(root, rel)).isDirectory() ? sourceFiles(rel) : /\.(ts|cjs|mjs)$/.test(name) ? [rel] : [];
  });
}

describe('docs/architecture.md', () => {
  const doc = read('docs/architecture.md');

  it('names only paths that exist in the repository', () => {
    const paths = namedPaths(doc);
    // A document that names nothing would pass trivially.
    expect(paths.length).toBeGreaterThan(20);
    expect(paths.filter((p) => !existsSync(join(root, p)))).toEqual([]);
  });

  it('shows every top-level folder of src/ in its layer map', () => {
    const folders = readdirSync(join(root, 'src')).filter((n) => statSync(join(root, 'src', n)).isDirectory());
    expect(folders.filter((f) => !doc.includes(`src/${f}/`))).toEqual([]);
  });

  it('walks node.update and snapshot.restore hop by hop', () => {
    expect(doc).toMatch(/## A job, hop by hop: `node\.update`/);
    expect(doc).toMatch(/## A job, hop by hop: `snapshot\.restore`/);
  });
});

describe('comments', () => {
  it('cite no document outside the repository', () => {
    const outside = /DESIGN(\.md| section|\s?§)|reference\/[\w-]+\.md|\.\.\/shared\//;
    const offenders = [...sourceFiles('src'), ...sourceFiles('test'), ...sourceFiles('bench')]
      .filter((f) => f !== 'test/unit/architecture-doc.test.ts')
      .filter((f) => outside.test(read(f)));
    expect(offenders).toEqual([]);
  });
});
