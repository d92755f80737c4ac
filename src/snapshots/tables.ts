/**
 * What a snapshot carries, table by table, and what a restore accepts.
 *
 * Rows are keyed by TABLE and COLUMN names, not by entity property names: columns change
 * only through migrations, and every migration that changes a business table ships an
 * upgrade step for snapshot rows (upgrades.ts). A property renamed in TypeScript without a
 * migration therefore never changes the file format, and an old file always has a path to
 * the current schema. Values are plain JSON, the same on both databases:
 *
 *   uuid / string / text  string            integer  number (PostgreSQL int4 range)
 *   boolean               true / false      datetime ISO 8601 UTC with milliseconds
 *   json                  the JSON value itself (not its text)
 *
 * The table specs are derived from the ORM metadata of BUSINESS_ENTITIES (so the schema
 * diff test that keeps entities and migrations equal also keeps this equal to the
 * database), in foreign-key order: restore inserts in this order and deletes in reverse.
 * Each row is checked against the CURRENT schema, after upgrade steps: types, lengths and
 * nullability per column here (rowCheck, rowSchema); keys and the rest across rows in
 * validator.ts.
 */
import { JsonType, ReferenceKind, UuidType, type EntityMetadata, type EntityProperty, type MetadataStorage } from '@mikro-orm/core';
import { z } from 'zod';
import { BUSINESS_ENTITIES } from '../domain/entities/index.js';
import { describeJsonProblem, jsonValueProblem, stringProblem } from '../domain/json-values.js';

export type SnapshotRow = Record<string, unknown>;
export type SnapshotTables = Record<string, SnapshotRow[]>;

export type ColumnKind = 'uuid' | 'string' | 'text' | 'integer' | 'boolean' | 'datetime' | 'json';

export interface ColumnSpec {
  /** Column name in the database and in the snapshot. */
  readonly name: string;
  /** Entity property the column belongs to (unique and primary keys are declared by property). */
  readonly property: string;
  readonly kind: ColumnKind;
  readonly nullable: boolean;
  /** varchar(n): enforced on both databases, so a file restores on PostgreSQL as on SQLite. */
  readonly maxLength?: number;
  /** Foreign key: the referenced table and column. */
  readonly references?: { readonly table: string; readonly column: string };
}

export interface TableSpec {
  readonly table: string;
  /** The entity's class (for ORM calls such as counting rows). */
  readonly entity: EntityMetadata['class'];
  readonly columns: readonly ColumnSpec[];
  readonly primaryKey: readonly string[];
  /** Unique constraints other than the primary key (column names). */
  readonly uniques: readonly { readonly name: string; readonly columns: readonly string[] }[];
}

const INT4_MIN = -2_147_483_648;
const INT4_MAX = 2_147_483_647;

const specsByMetadata = new WeakMap<MetadataStorage, readonly TableSpec[]>();

/** The business tables in foreign-key order (parents first), from the ORM metadata. */
export function snapshotTableSpecs(metadata: MetadataStorage): readonly TableSpec[] {
  let specs = specsByMetadata.get(metadata);
  if (!specs) {
    specs = Object.freeze(BUSINESS_ENTITIES.map((schema) => tableSpec(metadata.get(schema.meta.class))));
    specsByMetadata.set(metadata, specs);
  }
  return specs;
}

function tableSpec(meta: EntityMetadata): TableSpec {
  const columns: ColumnSpec[] = [];
  for (const prop of meta.props) {
    if (prop.persist === false) continue;
    if (prop.kind === ReferenceKind.SCALAR) {
      columns.push(scalarColumn(meta, prop));
    } else if (prop.kind === ReferenceKind.MANY_TO_ONE || (prop.kind === ReferenceKind.ONE_TO_ONE && prop.owner)) {
      columns.push(referenceColumn(meta, prop));
    }
    // Inverse sides and collections have no column.
  }
  const columnOf = (property: string): string => {
    const col = columns.find((c) => c.property === property);
    if (!col) throw new Error(`snapshot tables: ${meta.tableName}.${property} is not a column`);
    return col.name;
  };
  const uniques: { name: string; columns: string[] }[] = [];
  for (const prop of meta.props) {
    if (prop.unique && prop.persist !== false) {
      uniques.push({ name: typeof prop.unique === 'string' ? prop.unique : `${meta.tableName}_${prop.fieldNames[0]}_unique`, columns: [columnOf(prop.name)] });
    }
  }
  for (const u of meta.uniques) {
    const props = (Array.isArray(u.properties) ? u.properties : [u.properties]) as string[];
    if (props.length === 0 || u.expression) throw new Error(`snapshot tables: unique ${u.name ?? '?'} of ${meta.tableName} is not a plain column list`);
    uniques.push({ name: u.name ?? `${meta.tableName}_unique`, columns: props.map(columnOf) });
  }
  return {
    table: meta.tableName,
    entity: meta.class,
    columns,
    primaryKey: meta.primaryKeys.map((pk) => columnOf(pk)),
    uniques,
  };
}

function scalarColumn(meta: EntityMetadata, prop: EntityProperty): ColumnSpec {
  if (prop.fieldNames.length !== 1) throw new Error(`snapshot tables: ${meta.tableName}.${prop.name} maps to ${prop.fieldNames.length} columns`);
  return {
    name: prop.fieldNames[0]!,
    property: prop.name,
    kind: kindOf(meta, prop),
    nullable: prop.nullable === true,
    ...(prop.runtimeType === 'string' && prop.type !== 'text' && !(prop.customType instanceof UuidType) && prop.length ? { maxLength: prop.length } : {}),
  };
}

function referenceColumn(meta: EntityMetadata, prop: EntityProperty): ColumnSpec {
  const target = prop.targetMeta;
  if (!target || prop.fieldNames.length !== 1 || target.primaryKeys.length !== 1) {
    throw new Error(`snapshot tables: ${meta.tableName}.${prop.name} must reference a single-column primary key`);
  }
  const targetPk = target.properties[target.primaryKeys[0]!]!;
  return {
    name: prop.fieldNames[0]!,
    property: prop.name,
    kind: kindOf(target, targetPk),
    nullable: prop.nullable === true,
    references: { table: target.tableName, column: targetPk.fieldNames[0]! },
  };
}

/**
 * Every column type a business table uses. A new type fails here, loudly, at start-up
 * and in the coverage test, instead of being exported in some accidental form.
 */
function kindOf(meta: EntityMetadata, prop: EntityProperty): ColumnKind {
  if (prop.customType instanceof UuidType) return 'uuid';
  if (prop.customType instanceof JsonType) return 'json';
  switch (prop.runtimeType) {
    case 'Date':
      return 'datetime';
    case 'boolean':
      return 'boolean';
    case 'number':
      if (prop.type === 'integer') return 'integer';
      break;
    case 'string':
      return prop.type === 'text' ? 'text' : 'string';
  }
  throw new Error(
    `snapshot tables: ${meta.tableName}.${prop.name} has type ${String(prop.type)} (${String(prop.runtimeType)}), ` +
      'which snapshots do not carry yet: teach src/snapshots/tables.ts how to export, validate and restore it',
  );
}

/* --------------------------------------------------------------- validation */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// PostgreSQL text and jsonb cannot hold NUL; SQLite can. A lone surrogate becomes U+FFFD
// on its way into either database, so the restored text would not be the file's. Both are
// refused everywhere, so that a file restores as it is on one database and the other.
// JSON values follow the stored-value rules of src/domain/json-values.ts, the same that
// settings.update applies.
const storable = (s: string) => stringProblem(s) === null;
const refuseUnstorable = (s: string, ctx: z.RefinementCtx) => {
  const problem = stringProblem(s);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, input: undefined });
};

function columnSchema(col: ColumnSpec): z.ZodType {
  let s: z.ZodType;
  switch (col.kind) {
    case 'uuid':
      s = z.string().regex(UUID, { error: 'must be a UUID in lowercase' });
      break;
    case 'string':
      s = z.string().max(col.maxLength ?? Number.MAX_SAFE_INTEGER).superRefine(refuseUnstorable);
      break;
    case 'text':
      s = z.string().superRefine(refuseUnstorable);
      break;
    case 'integer':
      s = z.number().int().min(INT4_MIN).max(INT4_MAX);
      break;
    case 'boolean':
      s = z.boolean();
      break;
    case 'datetime':
      s = z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time with a zone' });
      break;
    case 'json':
      // Not z.json(), which recurses without a bound: a file may nest a value a million
      // levels deep. jsonValueProblem stops at the depth bound and checks JSON-ness itself.
      s = z.unknown().superRefine((v, ctx) => {
        if (v === undefined) ctx.addIssue({ code: 'invalid_type', expected: 'unknown', message: 'is missing', input: v });
        // A JSON null in a NOT NULL column would be stored as SQL NULL: refuse it as missing.
        else if (v === null) ctx.addIssue({ code: 'custom', message: 'must not be null', input: v });
        else {
          const problem = jsonValueProblem(v);
          if (problem) ctx.addIssue({ code: 'custom', message: describeJsonProblem(problem), input: undefined });
        }
      });
      break;
  }
  return col.nullable ? s.nullable() : s;
}

/**
 * A fast yes/no for one value: true only where columnSchema would accept it too (it may
 * say false where zod would accept, e.g. a date-time with an offset; zod decides those).
 * Validation runs on every upload in the API and on every restore, ~2 million values for
 * 250,000 rows: zod costs about a microsecond per value, this a few nanoseconds.
 */
type ValueCheck = (v: unknown) => boolean;

const isUuid = (v: unknown): boolean => typeof v === 'string' && v.length === 36 && UUID.test(v);
const isCanonicalDateTime = (v: unknown): boolean => {
  // The form every meshq export writes (Date.toISOString); anything else goes to zod.
  if (typeof v !== 'string' || v.length !== 24 || v.charCodeAt(23) !== 90 /* Z */) return false;
  const t = Date.parse(v);
  return !Number.isNaN(t) && new Date(t).toISOString() === v;
};

function valueCheck(col: ColumnSpec): ValueCheck {
  let check: ValueCheck;
  switch (col.kind) {
    case 'uuid':
      check = isUuid;
      break;
    case 'string': {
      const max = col.maxLength ?? Number.MAX_SAFE_INTEGER;
      check = (v) => typeof v === 'string' && v.length <= max && storable(v);
      break;
    }
    case 'text':
      check = (v) => typeof v === 'string' && storable(v);
      break;
    case 'integer':
      check = (v) => typeof v === 'number' && Number.isInteger(v) && v >= INT4_MIN && v <= INT4_MAX;
      break;
    case 'boolean':
      check = (v) => typeof v === 'boolean';
      break;
    case 'datetime':
      check = isCanonicalDateTime;
      break;
    case 'json':
      // null is the JSON null here; nullability is decided below like every column's.
      check = (v) => v !== null && jsonValueProblem(v) === null;
      break;
  }
  return col.nullable ? (v) => v === null || check(v) : check;
}

const rowChecks = new WeakMap<TableSpec, (row: unknown) => boolean>();

/** True only for rows rowSchema accepts (false leaves the verdict, and the message, to zod). */
export function rowCheck(spec: TableSpec): (row: unknown) => boolean {
  let check = rowChecks.get(spec);
  if (!check) {
    const names = spec.columns.map((c) => c.name);
    const checks = spec.columns.map(valueCheck);
    const n = names.length;
    check = (row) => {
      if (typeof row !== 'object' || row === null || Array.isArray(row)) return false;
      const r = row as Record<string, unknown>;
      let present = 0;
      for (let i = 0; i < n; i++) {
        const name = names[i]!;
        const v = r[name];
        if (v === undefined || !Object.hasOwn(r, name) || !checks[i]!(v)) return false;
        present++;
      }
      // strictObject: no other key. Counting own keys is enough once every column is there.
      return Object.keys(r).length === present;
    };
    rowChecks.set(spec, check);
  }
  return check;
}

const rowSchemas = new WeakMap<TableSpec, z.ZodType>();

/** Every column present (null where nullable), no other key. */
export function rowSchema(spec: TableSpec): z.ZodType {
  let schema = rowSchemas.get(spec);
  if (!schema) {
    schema = z.strictObject(Object.fromEntries(spec.columns.map((c) => [c.name, columnSchema(c)])));
    rowSchemas.set(spec, schema);
  }
  return schema;
}

/* -------------------------------------------------------------- conversions */

/** A database value as the snapshot carries it (see the table at the top). */
export function toSnapshotValue(col: ColumnSpec, value: unknown, jsonIsText: boolean): unknown {
  if (value === null || value === undefined) return null;
  switch (col.kind) {
    case 'datetime':
      return toIsoString(value);
    case 'boolean':
      return typeof value === 'boolean' ? value : Number(value) !== 0;
    case 'integer':
      return typeof value === 'number' ? value : Number(value);
    case 'json':
      // SQLite keeps JSON as text (a bare number may come back as a number: NUMERIC affinity).
      return jsonIsText && typeof value === 'string' ? JSON.parse(value) : value;
    default:
      return value;
  }
}

/** PostgreSQL's text form `2026-01-02 03:04:05.678+00`, SQLite's epoch milliseconds, or a Date. */
export function toIsoString(value: unknown): string {
  let date: Date;
  if (value instanceof Date) date = value;
  else if (typeof value === 'number') date = new Date(value);
  else if (typeof value === 'string') {
    const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d+)?)(Z|[+-]\d{2}(?::?\d{2})?)?$/.exec(value);
    if (m) {
      const zone = m[3] === undefined || m[3] === 'Z' ? 'Z' : m[3].length === 3 ? `${m[3]}:00` : m[3].includes(':') ? m[3] : `${m[3].slice(0, 3)}:${m[3].slice(3)}`;
      date = new Date(`${m[1]}T${m[2]}${zone}`);
    } else {
      date = new Date(value);
    }
  } else {
    throw new Error(`not a date-time value: ${typeof value}`);
  }
  if (Number.isNaN(date.getTime())) throw new Error(`not a date-time value: ${String(value)}`);
  return date.toISOString();
}
