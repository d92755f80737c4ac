/**
 * The CLI's own environment: where meshq answers and who is calling. The CLI never loads
 * the server's configuration (it runs on an operator's machine, where DATABASE_URL or
 * SECRET_KEY have no business), so it reads and validates its few variables here.
 */
import { z } from 'zod';
import { UsageError } from './errors.js';

export const DEFAULT_URL = 'http://127.0.0.1:3000';

export type Credentials = { kind: 'bearer'; token: string } | { kind: 'basic'; user: string; password: string };

export interface CliEnv {
  /** The API's base URL, without a trailing slash. */
  url: string;
  credentials: Credentials | undefined;
}

const nonEmpty = z.string().trim().min(1, { error: 'must not be empty' });
const schema = z
  .object({
    MESHQ_URL: z
      .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL such as http://127.0.0.1:3000' })
      .default(DEFAULT_URL),
    MESHQ_TOKEN: nonEmpty.optional(),
    MESHQ_USER: nonEmpty.default('admin'),
    MESHQ_PASSWORD: z.string().min(1, { error: 'must not be empty' }).optional(),
  })
  .superRefine((e, ctx) => {
    if (e.MESHQ_TOKEN !== undefined && e.MESHQ_PASSWORD !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['MESHQ_TOKEN'], message: 'set MESHQ_TOKEN or MESHQ_PASSWORD, not both' });
    }
  });

/** Reads MESHQ_URL, MESHQ_TOKEN, MESHQ_USER and MESHQ_PASSWORD; `urlOption` (--url) wins over MESHQ_URL. */
export function readCliEnv(env: NodeJS.ProcessEnv = process.env, urlOption?: string): CliEnv {
  const given = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith('MESHQ_') && v !== ''));
  if (urlOption !== undefined) given.MESHQ_URL = urlOption;
  const parsed = schema.safeParse(given);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${urlOption !== undefined && i.path[0] === 'MESHQ_URL' ? '--url' : String(i.path[0])}: ${i.message}`);
    throw new UsageError(`invalid environment: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  const credentials: Credentials | undefined =
    e.MESHQ_TOKEN !== undefined
      ? { kind: 'bearer', token: e.MESHQ_TOKEN }
      : e.MESHQ_PASSWORD !== undefined
        ? { kind: 'basic', user: e.MESHQ_USER, password: e.MESHQ_PASSWORD }
        : undefined;
  return { url: e.MESHQ_URL.replace(/\/+$/, ''), credentials };
}
