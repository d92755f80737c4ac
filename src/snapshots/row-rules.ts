/**
 * The domain rules of the jobs, applied to snapshot rows: a file can carry nothing the API
 * would refuse (a name with a slash, an address outside its config's subnet, an EMQX
 * username outside `node-`, a setting nested too deep). The rules are the jobs' own
 * (src/domain/validation.ts, cidr.ts, allocation.ts, json-values.ts); this module only says
 * which column each one governs.
 *
 * Runs after the type checks (tables.ts), so values have their column's type. Each rule
 * answers null for a good value without allocating, using plain tests (precompiled
 * patterns, the cidr parsers) on the rows a large mesh has many of; zod runs only for the
 * message of a value already refused, or on the few config and setting rows. Rules that
 * span rows (a node's address in its config's subnet, a link's nodes in the link's config,
 * a credential for a dynamic node) look the other row up in a map built once per table:
 * linear in the rows, never a scan per row.
 */
import type { z } from 'zod';
import { formatAddress, parseCidr, type Cidr } from '../domain/cidr.js';
import { usableRange, validateRequestedAddress } from '../domain/allocation.js';
import { InvalidError } from '../domain/errors.js';
import { describeJsonProblem, jsonValueProblem, MAX_RESTORED_SETTING_VALUE_BYTES } from '../domain/json-values.js';
import { isWireguardKey } from '../domain/keys.js';
import {
  awgSchema,
  checkEndpoint,
  configNameSchema,
  dnsSchema,
  forwardProtocolSchema,
  isValidName,
  mtuSchema,
  nodeKindSchema,
  nodeNameSchema,
  persistentKeepaliveSchema,
  portSchema,
  protocolAwgProblem,
  protocolSchema,
  SETTING_KEY,
  settingKeySchema,
  subnetSchema,
  type AwgParams,
  type TunnelProtocol,
} from '../domain/validation.js';

type Row = Record<string, unknown>;

/** What is wrong with a column's value, or null. */
type ColumnRule = (value: unknown, row: Row) => string | null;

/** zod's messages for a value, joined; null when it passes. */
function zodProblem(schema: z.ZodType, value: unknown): string | null {
  const result = schema.safeParse(value);
  if (result.success) return null;
  return result.error.issues
    .slice(0, 3)
    .map((i) => (i.path.length > 0 ? `${i.path.map(String).join('.')}: ${i.message}` : i.message))
    .join(', ');
}

/** A quick verdict first; zod (or `explain`) says why only when it refuses. */
const rule =
  (ok: (v: unknown) => boolean, explain: z.ZodType | ((v: unknown) => string)): ColumnRule =>
  (v) => {
    if (ok(v)) return null;
    return typeof explain === 'function' ? explain(v) : (zodProblem(explain, v) ?? 'is not allowed here');
  };

const nullable = (r: ColumnRule): ColumnRule => (v, row) => (v === null ? null : r(v, row));
const bySchema = (schema: z.ZodType): ColumnRule => (v) => zodProblem(schema, v);

const isPort = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
const port = rule(isPort, portSchema);
const SHA256_HEX = /^[0-9a-f]{64}$/;
const SALT_HEX = /^[0-9a-f]{16,64}$/;

const showShort = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v) : String(v));

/*
 * IPv4 fast paths. Links and nodes are most of a large mesh's rows, and the cidr parsers
 * work in BigInt for both families. These accept only a subset of what the parsers accept
 * (dotted decimal without leading zeros, so always canonical) and send everything else to
 * the parsers, whose verdict and message stand: they can make a check faster, never
 * different.
 */
const DOTTED = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;
const PREFIX_V4 = /^(?:[0-9]|[12][0-9]|3[0-2])$/;

/** The address as a number, or -1 when the fast path does not apply. */
function ipv4Value(s: string): number {
  const m = DOTTED.exec(s);
  if (!m) return -1;
  let value = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255) return -1;
    value = value * 256 + octet;
  }
  return value;
}

/** True for an IPv4 CIDR parseCidr accepts and spells the same way; false: ask parseCidr. */
function isPlainIpv4Cidr(s: string): boolean {
  const slash = s.indexOf('/');
  if (slash < 0) return false;
  const prefixText = s.slice(slash + 1);
  if (!PREFIX_V4.test(prefixText)) return false;
  const value = ipv4Value(s.slice(0, slash));
  return value >= 0 && value % 2 ** (32 - Number(prefixText)) === 0;
}

/** A CIDR as the jobs store it: valid, no host bits, canonical spelling. */
function cidrProblem(v: unknown): string | null {
  if (typeof v !== 'string') return 'must be a CIDR string';
  if (isPlainIpv4Cidr(v)) return null;
  let cidr: Cidr;
  try {
    cidr = parseCidr(v);
  } catch (err) {
    return (err as Error).message;
  }
  // Only a non-canonical spelling can differ; formatting costs nothing for the usual IPv4 /32.
  return canonicalCidrText(cidr) === v ? null : `${showShort(v)} is not written canonically (${canonicalCidrText(cidr)})`;
}

function canonicalCidrText(c: Cidr): string {
  return `${formatAddressOf(c)}/${c.prefix}`;
}

const formatAddressOf = (c: Cidr): string => formatAddress({ version: c.version, value: c.network });

interface ConfigFacts {
  name: string;
  /** Undefined when the config's own subnet is refused (reported there). */
  subnet: Cidr | undefined;
  /** An IPv4 subnet's usable addresses as numbers (allocation.ts's usableRange), for the fast path. */
  usableV4: { first: number; last: number } | undefined;
}

interface NodeFacts {
  configId: string;
  kind: unknown;
}

function configFact(row: Row): ConfigFacts {
  let subnet: Cidr | undefined;
  try {
    subnet = parseCidr(row.subnet as string);
  } catch {
    subnet = undefined;
  }
  let usableV4: ConfigFacts['usableV4'];
  if (subnet?.version === 4) {
    const { first, last } = usableRange(subnet);
    usableV4 = { first: Number(first), last: Number(last) };
  }
  return { name: String(row.name), subnet, usableV4 };
}

interface TableRules {
  columns: readonly (readonly [string, ColumnRule])[];
  /** Rules over several columns or rows: [column, problem] or null. */
  row?: (row: Row) => readonly [string, string] | null;
}

/**
 * The rules for every business table that has any, with the lookups they need: configs
 * and nodes are remembered as their rows pass (rememberFacts), and tables come parents
 * first, so a link's nodes are known when the link is checked.
 */
function rulesFor(configs: Map<unknown, ConfigFacts>, nodes: Map<unknown, NodeFacts>): Record<string, TableRules> {

  /** Both nodes of a link or forward belong to its config, and differ. */
  const nodePair = (row: Row): readonly [string, string] | null => {
    if (row.from_node_id === row.to_node_id) return ['to_node_id', `is the same node as from_node_id (${showShort(row.from_node_id)})`];
    for (const column of ['from_node_id', 'to_node_id'] as const) {
      const node = nodes.get(row[column]);
      // A missing node is the foreign-key check's to report.
      if (node && node.configId !== row.config_id) {
        return [column, `node ${showShort(row[column])} belongs to config ${showShort(node.configId)}, not to this row's config ${showShort(row.config_id)}`];
      }
    }
    return null;
  };

  return {
    setting: {
      columns: [
        ['key', rule((v) => typeof v === 'string' && SETTING_KEY.test(v), settingKeySchema)],
        [
          'value',
          (v) => {
            const problem = jsonValueProblem(v, { maxBytes: MAX_RESTORED_SETTING_VALUE_BYTES });
            return problem && describeJsonProblem(problem);
          },
        ],
      ],
    },
    mesh_config: {
      columns: [
        ['name', rule((v) => isValidName(v), configNameSchema)],
        ['subnet', (v) => zodProblem(subnetSchema, v) ?? cidrProblem(v)],
        ['listen_port', port],
        ['dns', bySchema(dnsSchema)],
        ['protocol', bySchema(protocolSchema)],
        ['awg', nullable(bySchema(awgSchema))],
        ['mtu', bySchema(mtuSchema)],
      ],
      row: (row) => {
        const problem = protocolSchema.safeParse(row.protocol).success ? protocolAwgProblem(row.protocol as TunnelProtocol, row.awg as AwgParams | null) : null;
        return problem ? ['awg', problem] : null;
      },
    },
    node: {
      columns: [
        ['name', rule((v) => isValidName(v), nodeNameSchema)],
        ['kind', rule((v) => v === 'dynamic' || v === 'static', nodeKindSchema)],
        [
          'endpoint',
          nullable((v) => {
            const result = checkEndpoint(v as string);
            return 'problem' in result ? result.problem : null;
          }),
        ],
        ['listen_port', nullable(port)],
        ['public_key', rule(isWireguardKey, () => 'is not a WireGuard key (44 characters of base64 encoding 32 bytes)')],
      ],
      row: (row) => {
        const config = configs.get(row.config_id);
        if (!config?.subnet) return null; // the foreign key or the config's subnet is reported instead
        if (config.usableV4) {
          const value = ipv4Value(row.address as string);
          if (value >= config.usableV4.first && value <= config.usableV4.last) return null;
        }
        let canonical: string;
        try {
          canonical = validateRequestedAddress(config.subnet, row.address as string, [], config.name);
        } catch (err) {
          if (err instanceof InvalidError) return ['address', err.message];
          throw err;
        }
        return canonical === row.address ? null : ['address', `${showShort(row.address)} is not written canonically (${canonical})`];
      },
    },
    peer_link: {
      columns: [
        [
          'allowed_ips',
          (v) => {
            if (!Array.isArray(v)) return 'must be an array of CIDRs';
            for (let i = 0; i < v.length; i++) {
              const problem = cidrProblem(v[i]);
              if (problem) return `[${i}]: ${problem}`;
            }
            return null;
          },
        ],
        ['persistent_keepalive', rule((v) => v === null || (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535), persistentKeepaliveSchema)],
      ],
      row: nodePair,
    },
    mqtt_credential: {
      columns: [
        // The broker sync owns exactly the EMQX users named node-<nodeId>: a row naming
        // any other user would make meshq create (and later delete) a user it does not own.
        ['username', (v, row) => (v === `node-${String(row.node_id)}` ? null : `must be "node-" followed by node_id (node-${String(row.node_id)}), got ${showShort(v)}`)],
        ['client_id', (v, row) => (v === `node-${String(row.node_id)}` ? null : `must be "node-" followed by node_id (node-${String(row.node_id)}), got ${showShort(v)}`)],
        ['password_hash', rule((v) => typeof v === 'string' && SHA256_HEX.test(v), () => 'must be 64 lowercase hex characters (a sha256 hash)')],
        ['salt', rule((v) => typeof v === 'string' && SALT_HEX.test(v), () => 'must be 16-64 lowercase hex characters')],
        ['version', rule((v) => typeof v === 'number' && v >= 1, (v) => `${String(v)} must be 1 or more`)],
      ],
      row: (row) => {
        const node = nodes.get(row.node_id);
        return node && node.kind !== 'dynamic' ? ['node_id', `node ${showShort(row.node_id)} is ${showShort(node.kind)}: only dynamic nodes have MQTT credentials`] : null;
      },
    },
    port_forward_rule: {
      columns: [
        ['from_port', port],
        ['to_port', port],
        ['protocol', rule((v) => v === 'tcp' || v === 'udp', forwardProtocolSchema)],
      ],
      row: nodePair,
    },
  };
}

/**
 * The jobs' domain rules for rows that arrive one at a time, tables parents first (the
 * snapshot order). Remembers what rules across rows need (each config's subnet, each
 * node's config and kind): memory in the number of configs and nodes, not links.
 */
export class DomainRules {
  private readonly configs = new Map<unknown, ConfigFacts>();
  private readonly nodes = new Map<unknown, NodeFacts>();
  private readonly rules = rulesFor(this.configs, this.nodes);

  /** A row's problems as [column, problem] pairs, or null (no allocation for a good row). */
  check(table: string, row: Row): (readonly [string, string])[] | null {
    const rules = this.rules[table];
    if (!rules) return null;
    const { columns, row: rowRule } = rules;
    let found: (readonly [string, string])[] | null = null;
    for (let c = 0; c < columns.length; c++) {
      const [column, check] = columns[c]!;
      const problem = check(row[column], row);
      if (problem !== null) (found ??= []).push([column, problem]);
    }
    const across = rowRule?.(row);
    if (across) (found ??= []).push(across);
    return found;
  }

  /** Records a row's facts for the rules of later rows (call for every row, checked or not). */
  remember(table: string, row: Row): void {
    if (table === 'mesh_config') this.configs.set(row.id, configFact(row));
    else if (table === 'node') this.nodes.set(row.id, { configId: row.config_id as string, kind: row.kind });
  }
}
