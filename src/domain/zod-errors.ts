/**
 * The one way a zod failure becomes words and details: each issue as `path: problem`,
 * the path prefixed by what the value was (`listenPort`, `config "home"`, `payload`),
 * at most `limit` of them (a bad file can have a million bad rows).
 */
import type { z } from 'zod';

export interface FieldIssue {
  path: string;
  code: string;
  message: string;
}

const pathOf = (path: readonly PropertyKey[]): string => path.map(String).join('.');

/** Issues as clients need them: where and what, without zod's internals (regexes, etc.). */
export const compactIssues = (issues: readonly z.core.$ZodIssue[]): FieldIssue[] =>
  issues.map((i) => ({ path: pathOf(i.path), code: i.code, message: i.message }));

/**
 * "name: too long; dns.0: invalid IPv4". `root` names an issue without a path
 * (default `(value)`); `limit` bounds how many are spelled out ("; and 12 more").
 */
export function describeIssues(error: z.ZodError, opts: { root?: string; limit?: number; prefix?: string } = {}): string {
  const limit = opts.limit ?? Infinity;
  const shown = error.issues.slice(0, limit).map((i) => {
    const path = [opts.prefix, pathOf(i.path)].filter(Boolean).join('.');
    return `${path || (opts.root ?? '(value)')}: ${i.message}`;
  });
  const more = error.issues.length - shown.length;
  return shown.join('; ') + (more > 0 ? `; and ${more} more` : '');
}

/** "invalid config.create payload: configId: expected a UUID; name: too long" */
export const describeZodError = (error: z.ZodError, what: string): string =>
  `invalid ${what} payload: ${describeIssues(error, { root: '(payload)' })}`;
