/**
 * The CLI's HTTP client: meshq's API through Node's fetch. Every failure becomes one of
 * the CLI's errors (src/cli/errors.ts), which decide the exit code.
 */
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Credentials } from './env.js';
import { ApiRefusal, Unreachable } from './errors.js';

/** An ordinary request's bound; uploads, downloads and the event stream have none. */
const REQUEST_TIMEOUT_MS = 60_000;

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  form?: FormData;
  headers?: Record<string, string>;
  /** No timeout (long uploads, streams); `signal` still applies. */
  unbounded?: boolean;
  signal?: AbortSignal;
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly credentials: Credentials | undefined,
  ) {}

  url(path: string, query?: RequestOptions['query']): string {
    const u = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  /** Sends a request; answers the Response when its status is 2xx, else throws ApiRefusal. */
  async send(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const res = await this.request(method, path, opts);
    if (res.ok) return res;
    throw refusal(method, path, res, await res.text().catch(() => ''));
  }

  /**
   * A submission or a retry: answered with the job, 200 completed, 202 queued or running,
   * and 422 failed, which a job that fails fast may already be by the time the answer is
   * written. Any other status, or a 422 that is not a job, is a refusal.
   */
  async job<T extends { id: string; state: string }>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.request(method, path, opts);
    if (res.ok) return (await res.json()) as T;
    const text = await res.text().catch(() => '');
    if (res.status === 422) {
      const body = parseOrUndefined(text) as Partial<T> | undefined;
      if (typeof body?.id === 'string' && body.state === 'failed') return body as T;
    }
    throw refusal(method, path, res, text);
  }

  private async request(method: string, path: string, opts: RequestOptions): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (this.credentials?.kind === 'bearer') headers.authorization = `Bearer ${this.credentials.token}`;
    if (this.credentials?.kind === 'basic') {
      headers.authorization = 'Basic ' + Buffer.from(`${this.credentials.user}:${this.credentials.password}`).toString('base64');
    }
    let body: RequestInit['body'];
    if (opts.form) body = opts.form;
    else if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    const signals = [opts.signal, opts.unbounded ? undefined : AbortSignal.timeout(REQUEST_TIMEOUT_MS)].filter((s): s is AbortSignal => s !== undefined);
    let res: Response;
    try {
      res = await fetch(this.url(path, opts.query), { method, headers, body, signal: signals.length ? AbortSignal.any(signals) : undefined });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw new Unreachable(`meshq at ${this.baseUrl} is not reachable: ${describeFetchError(err)}`);
    }
    return res;
  }

  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, path, opts);
    return (await res.json()) as T;
  }

  get<T>(path: string, query?: RequestOptions['query']): Promise<T> {
    return this.json<T>('GET', path, { query });
  }

  /** Every item of a paged list, following `next` (500 per page, the API's largest). */
  async all<T>(path: string, query: RequestOptions['query'] = {}): Promise<T[]> {
    const items: T[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.get<Page<T>>(path, { ...query, limit: 500, cursor });
      items.push(...page.items);
      cursor = page.next ?? undefined;
    } while (cursor);
    return items;
  }

  /**
   * Streams a response body into `file` (through a temporary name, so an interrupted
   * download never leaves a file that looks whole); `onBytes` sees each chunk's size.
   */
  async download(path: string, file: string, onBytes?: (n: number, total: number | undefined) => void): Promise<{ bytes: number; sha256: string | null }> {
    const res = await this.send('GET', path, { unbounded: true, headers: { accept: 'application/octet-stream' } });
    if (!res.body) throw new Unreachable(`meshq at ${this.baseUrl} sent no body for ${path}`);
    const total = Number(res.headers.get('content-length')) || undefined;
    let bytes = 0;
    const count = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        onBytes?.(chunk.length, total);
        done(null, chunk);
      },
    });
    const partial = `${file}.partial`;
    try {
      await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), count, createWriteStream(partial, { mode: 0o600 }));
      await rename(partial, file);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
    return { bytes, sha256: res.headers.get('x-content-sha256') };
  }
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // not meshq's JSON: a proxy's page, say
  }
}

function refusal(method: string, path: string, res: Response, text: string): ApiRefusal {
  const body = parseOrUndefined(text) as { error?: { code?: string; message?: string; details?: unknown } } | undefined;
  const code = body?.error?.code ?? `HTTP_${res.status}`;
  const message = body?.error?.message ?? (text.trim().slice(0, 200) || res.statusText);
  return new ApiRefusal(res.status, code, `${method} ${path}: ${res.status} ${code}: ${message}`, body?.error?.details);
}

/** fetch says "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND, a timeout) is in the cause. */
function describeFetchError(err: unknown): string {
  if (err instanceof DOMException && err.name === 'TimeoutError') return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
  const cause = (err as { cause?: { code?: string; message?: string; errors?: { code?: string }[] } })?.cause;
  const code = cause?.code ?? cause?.errors?.[0]?.code;
  return code ?? cause?.message ?? (err as Error)?.message ?? String(err);
}
