/**
 * Field rules of the mesh entities as zod schemas, for job payload schemas to compose.
 *
 * The schemas validate and do not transform: a payload that passes is stored as given,
 * except that addresses should go through `canonicalAddress`/`canonicalCidr` before they
 * are stored (the repositories' job). Keeping transforms out keeps input and output types
 * equal, so the same schema can describe the HTTP body and the job payload.
 *
 * Every message states what was wrong with the value; `parseOrInvalid` adds where (the
 * field path), so a job or an HTTP 400 says e.g. `config "home": listenPort: 70000 is out
 * of range 1-65535`.
 */
import { z } from 'zod';
import { InvalidError } from './errors.js';
import { parseAddress, parseCidr } from './cidr.js';
import { isWireguardKey } from './keys.js';
import { jsonValueProblem, MAX_JSON_DEPTH, MAX_SETTING_VALUE_BYTES } from './json-values.js';

/** Quoted and shortened, so a pasted megabyte does not end up in an error message or a log. */
function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return `a ${typeof value}`;
}

/** The message for a value of the wrong type: "is required" reads better than "expected string, received undefined". */
const typeError = (expected: string) => (iss: { input?: unknown }) =>
  iss.input === undefined ? 'is required' : `must be ${expected} (got ${show(iss.input)})`;

function integerInRange(min: number, max: number) {
  const out = (iss: { input?: unknown }) => `${show(iss.input)} is out of range ${min}-${max}`;
  return z
    .number({ error: typeError('an integer') })
    .int({ error: (iss) => `${show(iss.input)} is not an integer` })
    .min(min, { error: out })
    .max(max, { error: out });
}

const NAME_CHARS = /^[A-Za-z0-9._-]+$/;
const HAS_ALNUM = /[A-Za-z0-9]/;

/**
 * Names appear in file names, interface hints and URLs, hence the small charset. A name of
 * only dots and dashes ("." or "..") is refused: it is a path segment, not a name.
 */
function nameSchema(max = 64) {
  return z
    .string({ error: typeError('a string') })
    // One message per name: the checks after a failed one would only restate it.
    .min(1, { error: 'must not be empty', abort: true })
    .max(max, { error: (iss) => `${show(iss.input)} is longer than ${max} characters`, abort: true })
    .regex(NAME_CHARS, {
      error: (iss) => `${show(iss.input)} may contain only letters, digits, ".", "_" and "-"`,
      abort: true,
    })
    .regex(HAS_ALNUM, { error: (iss) => `${show(iss.input)} must contain a letter or a digit` });
}

/** nameSchema's verdict without its messages: for checks over many rows (a restore). */
export const isValidName = (s: unknown, max = 64): boolean =>
  typeof s === 'string' && s.length >= 1 && s.length <= max && NAME_CHARS.test(s) && HAS_ALNUM.test(s);

export const configNameSchema = nameSchema();
export const nodeNameSchema = nameSchema();

/** A TCP/UDP port. */
export const portSchema = integerInRange(1, 65535);
export const listenPortSchema = portSchema;

/** PersistentKeepalive seconds; 0 or null switch it off, as in wg(8). */
export const persistentKeepaliveSchema = integerInRange(0, 65535).nullable();

export const protocolSchema = z.enum(['wireguard', 'amneziawg'], {
  error: (iss) => `${show(iss.input)} is not a protocol (wireguard or amneziawg)`,
});
export type TunnelProtocol = z.infer<typeof protocolSchema>;

export const nodeKindSchema = z.enum(['dynamic', 'static'], {
  error: (iss) => `${show(iss.input)} is not a node kind (dynamic or static)`,
});
export type NodeKind = z.infer<typeof nodeKindSchema>;

export const forwardProtocolSchema = z.enum(['tcp', 'udp'], {
  error: (iss) => `${show(iss.input)} is not a port-forward protocol (tcp or udp)`,
});
export type ForwardProtocol = z.infer<typeof forwardProtocolSchema>;

/** Why `parse` refuses a string, or null when it accepts it (the parsers' own messages). */
function problemOf(parse: (s: string) => unknown, s: string): string | null {
  try {
    parse(s);
    return null;
  } catch (err) {
    return err instanceof InvalidError ? err.message : String(err);
  }
}

/** A plain IPv4 or IPv6 address. */
export const ipAddressSchema = z.string({ error: typeError('a string') }).superRefine((s, ctx) => {
  const problem = problemOf((v) => parseAddress(v), s);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: s });
});

/** An IPv4 or IPv6 CIDR with no host bits set: a config's subnet. */
export const subnetSchema = z.string({ error: typeError('a string') }).superRefine((s, ctx) => {
  const problem = problemOf((v) => parseCidr(v), s);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: s });
});

/** A WireGuard public key: base64 of 32 bytes. */
export const wireguardKeySchema = z
  .string({ error: typeError('a string') })
  .refine(isWireguardKey, { error: 'is not a WireGuard key (44 characters of base64 encoding 32 bytes)' });

export const MAX_DNS_SERVERS = 8;

/** DNS servers pushed to nodes: up to 8 distinct addresses. */
export const dnsSchema = z
  .array(ipAddressSchema, { error: typeError('an array of IP addresses') })
  .max(MAX_DNS_SERVERS, {
    error: (iss) =>
      `lists ${Array.isArray(iss.input) ? iss.input.length : 'too many'} servers (at most ${MAX_DNS_SERVERS})`,
  })
  .superRefine((servers, ctx) => {
    const seen = new Map<string, number>();
    servers.forEach((s, i) => {
      let key = s;
      try {
        const a = parseAddress(s);
        key = `${a.version}:${a.value}`;
      } catch {
        return; // reported by the element schema
      }
      const first = seen.get(key);
      if (first === undefined) seen.set(key, i);
      else ctx.addIssue({ code: 'custom', path: [i], message: `${s} repeats dns[${first}]`, input: s });
    });
  });

export interface Endpoint {
  host: string;
  port: number;
  hostKind: 'dns' | 'ipv4' | 'ipv6';
}

const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const PORT_DIGITS = /^[1-9]\d{0,4}$/;
const MAX_ENDPOINT_LENGTH = 300; // the column width

/** "host:port" with a DNS name, an IPv4 address or a bracketed IPv6 address; a message when not. */
export function checkEndpoint(s: string): { endpoint: Endpoint } | { problem: string } {
  const example = '(e.g. vpn.example.com:51820, 203.0.113.5:51820 or [2001:db8::1]:51820)';
  if (s.length > MAX_ENDPOINT_LENGTH) return { problem: `is longer than ${MAX_ENDPOINT_LENGTH} characters` };
  let host: string;
  let portText: string;
  let hostKind: Endpoint['hostKind'];
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(s);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2]!;
    hostKind = 'ipv6';
    let ok = false;
    try {
      ok = parseAddress(host).version === 6;
    } catch {
      ok = false;
    }
    if (!ok) return { problem: `${show(s)}: ${show(host)} in brackets is not an IPv6 address` };
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return { problem: `${show(s)} has no port: expected host:port ${example}` };
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(':')) {
      return { problem: `${show(s)}: an IPv6 host must be in brackets, e.g. [2001:db8::1]:51820` };
    }
    if (host === '') return { problem: `${show(s)} has no host: expected host:port ${example}` };
    if (/^[\d.]+$/.test(host)) {
      // All digits and dots can only be an IPv4 address: a top-level domain is never numeric.
      try {
        parseAddress(host);
      } catch {
        return { problem: `${show(s)}: ${show(host)} is not a valid IPv4 address` };
      }
      hostKind = 'ipv4';
    } else {
      const labels = host.split('.');
      if (host.length > 253 || !labels.every((l) => DNS_LABEL.test(l))) {
        return {
          problem:
            `${show(s)}: ${show(host)} is not a valid host name ` +
            '(dot-separated labels of 1-63 letters, digits and inner hyphens, 253 characters at most)',
        };
      }
      hostKind = 'dns';
    }
  }
  const port = PORT_DIGITS.test(portText) ? Number(portText) : Number.NaN;
  if (!(port <= 65535)) return { problem: `${show(s)}: port ${show(portText)} is not a number 1-65535` };
  return { endpoint: { host, port, hostKind } };
}

/** The parts of an endpoint; InvalidError naming `field` when it is malformed. */
export function parseEndpoint(s: string, field = 'endpoint'): Endpoint {
  const result = checkEndpoint(s);
  if ('problem' in result) throw new InvalidError(`${field} ${result.problem}`);
  return result.endpoint;
}

export const endpointSchema = z.string({ error: typeError('a string') }).superRefine((s, ctx) => {
  const result = checkEndpoint(s);
  if ('problem' in result) ctx.addIssue({ code: 'custom', message: result.problem, input: s });
});

/*
 * AmneziaWG 1.x obfuscation parameters, as its documentation (amneziawg-linux-kernel-module
 * README, "Configuration") states them, sized for the 1280-byte minimum MTU:
 * - jc: junk packets sent before a handshake, 1-128.
 * - jmin < jmax <= 1280: the junk packets' size range.
 * - s1 <= 1132 (1280 - 148, the handshake initiation size), s2 <= 1188 (1280 - 92, the
 *   response size): random padding of those two messages. s1 + 56 must differ from s2,
 *   or padded initiation and response have the same length and peers cannot tell them
 *   apart; an absent s1/s2 counts as 0 (amneziawg's default), so s2 = 56 alone is refused,
 *   and so are the two maxima together (1132 + 56 = 1188).
 * - h1-h4: the replacement message-type headers of initiation, response, cookie and data
 *   messages; u32, distinct. 1-4 are WireGuard's own types (amneziawg treats those values
 *   as "not obfuscated"), so the range starts at 5 as the docs recommend.
 * Later AmneziaWG versions add more keys (s3, s4, i1-i5, header ranges); they are refused
 * until this system knows how to push them.
 */
export const AWG_LIMITS = Object.freeze({
  jc: [1, 128],
  jmin: [0, 1279],
  jmax: [1, 1280],
  s1: [0, 1132],
  s2: [0, 1188],
  h: [5, 4294967295],
} as const);

const HEADER_KEYS = ['h1', 'h2', 'h3', 'h4'] as const;

export const awgSchema = z
  .strictObject(
    {
      jc: integerInRange(...AWG_LIMITS.jc).optional(),
      jmin: integerInRange(...AWG_LIMITS.jmin).optional(),
      jmax: integerInRange(...AWG_LIMITS.jmax).optional(),
      s1: integerInRange(...AWG_LIMITS.s1).optional(),
      s2: integerInRange(...AWG_LIMITS.s2).optional(),
      h1: integerInRange(...AWG_LIMITS.h).optional(),
      h2: integerInRange(...AWG_LIMITS.h).optional(),
      h3: integerInRange(...AWG_LIMITS.h).optional(),
      h4: integerInRange(...AWG_LIMITS.h).optional(),
    },
    {
      error: (iss) =>
        iss.code === 'unrecognized_keys'
          ? `has unknown parameter(s) ${iss.keys.map((k) => JSON.stringify(k)).join(', ')} ` +
            '(allowed: jc, jmin, jmax, s1, s2, h1, h2, h3, h4)'
          : typeError('an object of AmneziaWG parameters')(iss),
    },
  )
  .superRefine((awg, ctx) => {
    if (awg.jmin !== undefined && awg.jmax !== undefined && awg.jmin >= awg.jmax) {
      ctx.addIssue({
        code: 'custom',
        path: ['jmin'],
        message: `jmin ${awg.jmin} must be less than jmax ${awg.jmax}`,
        input: awg.jmin,
      });
    }
    if (awg.s1 !== undefined || awg.s2 !== undefined) {
      const s1 = awg.s1 ?? 0;
      const s2 = awg.s2 ?? 0;
      if (s1 + 56 === s2) {
        ctx.addIssue({
          code: 'custom',
          path: ['s2'],
          message: `s2 ${s2} equals s1 ${s1} + 56: padded handshake initiation and response would be the same size`,
          input: s2,
        });
      }
    }
    const seen = new Map<number, string>();
    for (const key of HEADER_KEYS) {
      const value = awg[key];
      if (value === undefined) continue;
      const other = seen.get(value);
      if (other) {
        ctx.addIssue({ code: 'custom', path: [key], message: `${value} is also ${other}; h1-h4 must differ`, input: value });
      } else {
        seen.set(value, key);
      }
    }
  });
export type AwgParams = z.infer<typeof awgSchema>;

/** Why a protocol / awg combination is refused, or null. awg belongs to amneziawg only. */
export function protocolAwgProblem(protocol: TunnelProtocol, awg: AwgParams | null | undefined): string | null {
  if (protocol === 'wireguard' && awg !== null && awg !== undefined) {
    return 'awg parameters are given but protocol is wireguard (set protocol to amneziawg, or drop awg)';
  }
  return null;
}

/** The fields of a config as a create payload carries them. */
export const configFieldsSchema = z.object({
  name: configNameSchema,
  subnet: subnetSchema,
  listenPort: listenPortSchema,
  dns: dnsSchema.default([]),
  protocol: protocolSchema.default('wireguard'),
  awg: awgSchema.nullable().optional(),
});

/** configFieldsSchema plus the cross-field rule (kept apart: refined objects cannot be `.partial()`-ed). */
export const configSchema = configFieldsSchema.superRefine((config, ctx) => {
  const problem = protocolAwgProblem(config.protocol, config.awg);
  if (problem) ctx.addIssue({ code: 'custom', path: ['awg'], message: problem, input: config.awg });
});

/** "dns[2].host", "listenPort": the path as a person reads it. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

export interface FieldIssue {
  path: string;
  message: string;
}

/**
 * Parses `value` or throws InvalidError `${where}: path: problem; path: problem`. `where`
 * names the value: a field (`listenPort`) or the thing it belongs to (`config "home"`).
 * The issues travel as details too, for API clients that highlight fields.
 */
export function parseOrInvalid<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues: FieldIssue[] = result.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message }));
  const text = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
  throw new InvalidError(`${where}: ${text}`, { where, issues });
}

/** Tunnel MTU: IPv6 needs 1280 on the inner packets; jumbo frames top out near 9000. */
export const DEFAULT_MTU = 1420;
export const mtuSchema = z.number().int().min(1280).max(9000);

/** A setting's key: what the API takes, and what a restored setting row must have. */
export const SETTING_KEY = /^[A-Za-z0-9._-]{1,128}$/;

export const settingKeySchema = z.string({ error: typeError('a string') }).regex(SETTING_KEY, {
  error: (iss) => `setting key ${show(iss.input)} must be 1-128 letters, digits, ".", "_" or "-"`,
});

/**
 * A setting's value: any JSON value within the stored-value rules (json-values.ts). The
 * rule runs before zod's own JSON check, which recurses without a bound: a value nested a
 * million levels deep is refused here instead of overflowing the stack there.
 */
export const settingValueSchema = z
  .unknown()
  .superRefine((value, ctx) => {
    const problem = jsonValueProblem(value, { maxBytes: MAX_SETTING_VALUE_BYTES });
    if (problem) ctx.addIssue({ code: 'custom', path: problem.path, message: problem.message, input: undefined });
  })
  .pipe(z.json())
  .meta({
    description:
      `any JSON value: no NUL character in a string or key, well-formed Unicode, at most ${MAX_JSON_DEPTH} levels ` +
      `of nesting, at most ${MAX_SETTING_VALUE_BYTES} bytes as JSON; null removes the key`,
  });
