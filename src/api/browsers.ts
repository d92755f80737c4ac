/**
 * What a browser needs to be kept from doing: being steered by another site into an
 * unsafe request with the administrator's cached Basic credentials (cross-site request
 * forgery), and framing or sniffing our pages. Clients that are not browsers (curl, the
 * CLI, scripts) send neither `Sec-Fetch-Site` nor `Origin`, and pass untouched.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet, { type HelmetOptions } from 'helmet';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorBody } from './errors.js';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Why a request is cross-site, or undefined when it is not. `Sec-Fetch-Site` is set by
 * the browser and cannot be forged by a page: anything but `same-origin` (or `none`, a
 * user typing the URL) is refused; `same-site` too, since a sibling subdomain is another
 * application. Browsers without Fetch Metadata still send `Origin` on unsafe requests:
 * it must name this host.
 */
export function crossSiteReason(request: FastifyRequest): string | undefined {
  const site = headerValue(request, 'sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return `Sec-Fetch-Site is "${site}"`;
  const origin = headerValue(request, 'origin');
  if (origin === undefined) return undefined;
  const host = headerValue(request, 'host');
  try {
    const from = new URL(origin);
    // The Host header read with the Origin's scheme, so a default port written out
    // (`localhost:80`) compares equal to one left implicit.
    if (host && from.host === new URL(`${from.protocol}//${host}`).host) return undefined;
  } catch {
    // "null" (sandboxed frames, file: pages) or garbage: not this server either.
  }
  return `Origin "${origin}" is not this server`;
}

const headerValue = (request: FastifyRequest, name: string): string | undefined => {
  const v = request.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/** Refuses unsafe cross-site requests before anything else runs (no password check either). */
export function registerCrossSiteGuard(api: FastifyInstance): void {
  api.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (SAFE_METHODS.has(request.method)) return;
    const reason = crossSiteReason(request);
    if (reason) {
      request.log.info({ method: request.method, url: request.url.split('?')[0] }, 'cross-site request refused');
      return reply.status(403).send(errorBody('FORBIDDEN', `cross-site ${request.method} refused: ${reason}`));
    }
  });
}

/**
 * Security headers on every response. The CSP fits the two HTML pages we serve: Bull
 * Board and Swagger UI load their scripts and styles from our own origin, set inline
 * styles (React style attributes, Bull Board's loading animation) and data: images, and
 * fetch only our own API. Bull Board's Google Fonts stylesheet is left out on purpose
 * (a third party learning who opens the dashboard); the page falls back to system fonts.
 * No `upgrade-insecure-requests`: on a plain-HTTP deployment it would send the pages'
 * own scripts to an https port that does not exist.
 */
const SECURITY_HEADER_OPTIONS: HelmetOptions = {
  contentSecurityPolicy: {
    useDefaults: false,
    directives: {
      'default-src': ["'self'"],
      'base-uri': ["'self'"],
      'script-src': ["'self'"],
      'script-src-attr': ["'none'"],
      'style-src': ["'self'", "'unsafe-inline'"],
      'img-src': ["'self'", 'data:'],
      'font-src': ["'self'", 'data:'],
      'connect-src': ["'self'"],
      'object-src': ["'none'"],
      'form-action': ["'self'"],
      'frame-ancestors': ["'none'"],
    },
  },
  frameguard: { action: 'deny' },
  referrerPolicy: { policy: 'no-referrer' },
};

/**
 * The headers helmet sets for `options`, computed once by running its middleware against
 * a response that records them. They do not depend on the request as long as no CSP
 * directive is a function (no per-request nonces), so every response can carry the same
 * object instead of building helmet's middleware and setting each header on every request.
 */
export function securityHeaders(options: HelmetOptions = SECURITY_HEADER_OPTIONS): Readonly<Record<string, string>> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (err?: unknown) => {
    if (err) throw err;
  });
  return Object.freeze(headers);
}

/**
 * First hook of all, so refusals carry the headers too. A handler that writes the raw
 * response itself (the event stream) passes `reply.getHeaders()` on.
 */
export function registerSecurityHeaders(api: FastifyInstance): void {
  const headers = securityHeaders();
  api.addHook('onRequest', (_request, reply, done) => {
    void reply.headers(headers);
    done();
  });
}
