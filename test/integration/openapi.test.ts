/**
 * The OpenAPI document, on both dialects: it is valid OpenAPI 3.0; the body of
 * POST /api/v1/jobs is a `oneOf` of every public job type of the job table, discriminated
 * by `type`, each built from the type's own payload schema; every route documents a 2xx
 * answer and its errors; real answers match the schemas documented for them (strict
 * objects: a field the document does not name fails); and a client generated from the
 * document with openapi-typescript type-checks a config.create submission and refuses
 * wrong ones.
 */
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import SwaggerParser from '@apidevtools/swagger-parser';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import openapiTS, { astToString } from 'openapi-typescript';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  auditSchema,
  brokerStatusSchema,
  cancelledSchema,
  configSchema,
  credentialRotationSchema,
  errorSchema,
  jobSchema,
  jobTypeSchema,
  laggingNodeSchema,
  linkSchema,
  livenessSchema,
  nodeDetailSchema,
  nodeSchema,
  pageOf,
  portForwardSchema,
  readinessSchema,
  requestJsonSchema,
  settingSchema,
  snapshotSchema,
  submissionComponent,
  tokenCreatedSchema,
  tokenSchema,
} from '../../src/api/schemas.js';
import type { BrokerStatus } from '../../src/api/routes/broker.js';
import { JOB_TYPES, PUBLIC_JOB_TYPES, jobDefinition } from '../../src/jobs/table.js';
import { DIALECTS } from '../support/db.js';
import { startStack, type Stack } from '../support/stack.js';

interface Operation {
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> };
  responses: Record<string, { description: string; content?: Record<string, { schema: Record<string, unknown> }> }>;
}
interface Document {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Record<string, unknown>> };
}

const ADMIN_PASSWORD = 'openapi-test-admin-pw';
const ERROR_REF = '#/components/schemas/Error';
const ref = (type: string) => `#/components/schemas/${submissionComponent(type as never)}`;

// The broker status route's own type and its documented schema are one type.
const brokerStatusIsDocumented: [BrokerStatus] extends [z.output<typeof brokerStatusSchema>]
  ? [z.output<typeof brokerStatusSchema>] extends [BrokerStatus]
    ? true
    : false
  : false = true;

describe.each(DIALECTS)('OpenAPI document on %s', (dialect) => {
  let s: Stack;
  let doc: Document;

  beforeAll(async () => {
    s = await startStack(dialect, 'openapi', { adminPassword: ADMIN_PASSWORD });
    const res = await s.call({ method: 'GET', url: '/docs/json' });
    expect(res.statusCode, res.body).toBe(200);
    doc = res.json<Document>();
  });

  afterAll(async () => {
    await s?.stop();
  });

  const operations = () =>
    Object.entries(doc.paths).flatMap(([path, item]) => Object.entries(item).map(([method, op]) => ({ path, method: method.toUpperCase(), op })));

  it('is a valid OpenAPI 3.0 document', async () => {
    expect(brokerStatusIsDocumented).toBe(true);
    expect(doc.openapi).toBe('3.0.3');
    // validate() dereferences in place: give it a copy.
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeTruthy();
  });

  it('takes every public job type, and no internal one, as a oneOf discriminated by type', () => {
    const body = doc.paths['/api/v1/jobs']!.post!.requestBody!.content['application/json']!.schema as {
      oneOf: { $ref: string }[];
      discriminator: { propertyName: string; mapping: Record<string, string> };
    };
    expect(body.oneOf.map((v) => v.$ref).sort()).toEqual(PUBLIC_JOB_TYPES.map(ref).sort());
    expect(body.discriminator.propertyName).toBe('type');
    expect(body.discriminator.mapping).toEqual(Object.fromEntries(PUBLIC_JOB_TYPES.map((t) => [t, ref(t)])));
    const internal = JOB_TYPES.filter((t) => jobDefinition(t).internal);
    expect(internal.length).toBeGreaterThan(0);
    for (const type of internal) {
      expect(body.discriminator.mapping[type]).toBeUndefined();
      expect(doc.components.schemas[submissionComponent(type)]).toBeUndefined();
    }
    for (const type of PUBLIC_JOB_TYPES) {
      const variant = doc.components.schemas[submissionComponent(type)] as { properties: Record<string, unknown>; required: string[] };
      expect(variant.properties.type, type).toEqual({ type: 'string', enum: [type] });
      // `data` is the table's own payload schema, as a submitter writes it.
      const payload = requestJsonSchema(jobDefinition(type).schema);
      expect(variant.properties.data, type).toEqual(payload);
      const optionalData = jobDefinition(type).schema.safeParse({}).success;
      expect(variant.required, type).toEqual(optionalData ? ['type'] : ['type', 'data']);
    }
  });

  it('documents a 2xx answer with a schema and the error answers for every route', () => {
    const documented = new Set(operations().map((o) => `${o.method} ${o.path}`));
    // Every route meshq serves itself is in the document (Swagger UI and Bull Board are not meshq's API).
    const served = s.api
      .meshqRoutes()
      .filter((r) => r.method !== 'HEAD' && !r.url.startsWith('/docs') && !r.url.startsWith('/admin/queues'))
      .map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`);
    expect(served.length).toBeGreaterThan(25);
    expect(served.filter((r) => !documented.has(r))).toEqual([]);

    // Requests read by hand are documented too: the restore upload, the stream's resume header.
    const upload = doc.paths['/api/v1/snapshots/restore']!.post!.requestBody!.content['multipart/form-data']!.schema;
    expect(upload.required).toEqual(['file', 'password']);
    const events = doc.paths['/api/v1/events']!.get! as Operation & { parameters: { in: string; name: string }[] };
    expect(events.parameters).toContainEqual(expect.objectContaining({ in: 'header', name: 'last-event-id' }));

    for (const { path, method, op } of operations()) {
      const where = `${method} ${path}`;
      const ok = Object.entries(op.responses).filter(([status]) => /^2/.test(status));
      expect(ok.length, where).toBeGreaterThan(0);
      for (const [status, response] of ok) {
        const media = Object.values(response.content ?? {});
        expect(media.length, `${where} ${status}`).toBeGreaterThan(0);
        for (const m of media) expect(m.schema, `${where} ${status}`).toBeTruthy();
        expect(response.description, `${where} ${status}`).not.toBe('Default Response');
      }
      for (const status of ['4XX', '5XX']) {
        expect(op.responses[status]?.content?.['application/json']?.schema, `${where} ${status}`).toEqual({ $ref: ERROR_REF });
      }
    }
  });

  it('answers what the document says, on every kind of route', async () => {
    const checked = new Set<string>();
    /** The answer's status is documented for the route, and its JSON body parses with the strict schema. */
    const expectAnswer = async (method: string, path: string, opts: InjectOptions, status: number, schema?: z.ZodType) => {
      const res: LightMyRequestResponse = await s.call({ method: method as never, ...opts });
      expect(res.statusCode, `${method} ${opts.url}: ${res.body}`).toBe(status);
      const responses = doc.paths[path]?.[method.toLowerCase()]?.responses ?? {};
      expect(responses[String(status)] ?? responses[`${String(status)[0]}XX`], `${method} ${path} ${status} is documented`).toBeDefined();
      if (schema) {
        const parsed = schema.safeParse(res.json());
        expect(parsed.success, `${method} ${opts.url}: ${parsed.error?.message}\n${res.body}`).toBe(true);
      }
      checked.add(`${method} ${path}`);
      return res;
    };
    const submit = (payload: object, status = 200) =>
      expectAnswer('POST', '/api/v1/jobs', { url: status === 200 ? '/api/v1/jobs?wait=15000' : '/api/v1/jobs', payload }, status, jobSchema);
    const resultOf = async (payload: object) => (await submit(payload)).json<{ result: { id: string } }>().result;

    const config = await resultOf({ type: 'config.create', data: { name: `openapi-${dialect}`, subnet: '10.61.0.0/24' } });
    const gw = await resultOf({ type: 'node.create', data: { configId: config.id, name: 'gw', kind: 'static', endpoint: 'gw.example.net:51820' } });
    const phone = await resultOf({ type: 'node.create', data: { configId: config.id, name: 'phone', kind: 'dynamic' } });
    await submit({ type: 'mesh.generate', data: { configId: config.id } });
    await submit({ type: 'port-forward.create', data: { configId: config.id, fromNodeId: gw.id, fromPort: 8080, toNodeId: phone.id, toPort: 80, protocol: 'tcp' } });
    await submit({ type: 'settings.update', data: { values: { 'ui.theme': { dark: true } } } });
    const delayed = await submit({ type: 'config.create', data: { name: 'later', subnet: '10.62.0.0/24' }, delay: 60_000 }, 202);
    const delayedId = delayed.json<{ id: string }>().id;

    await expectAnswer('GET', '/api/v1/jobs/{id}', { url: `/api/v1/jobs/${delayedId}` }, 200, jobSchema);
    await expectAnswer('DELETE', '/api/v1/jobs/{id}', { url: `/api/v1/jobs/${delayedId}` }, 200, cancelledSchema);
    await expectAnswer('GET', '/api/v1/jobs', { url: '/api/v1/jobs?limit=5' }, 200, pageOf(jobSchema));
    await expectAnswer('GET', '/api/v1/job-types', { url: '/api/v1/job-types' }, 200, pageOf(jobTypeSchema));
    await expectAnswer('GET', '/api/v1/configs', { url: '/api/v1/configs' }, 200, pageOf(configSchema));
    await expectAnswer('GET', '/api/v1/configs/{id}', { url: `/api/v1/configs/${config.id}` }, 200, configSchema);
    const nodes = await expectAnswer('GET', '/api/v1/configs/{id}/nodes', { url: `/api/v1/configs/${config.id}/nodes` }, 200, pageOf(nodeSchema));
    expect(nodes.json<{ items: unknown[] }>().items).toHaveLength(2);
    const links = await expectAnswer('GET', '/api/v1/configs/{id}/links', { url: `/api/v1/configs/${config.id}/links` }, 200, pageOf(linkSchema));
    expect(links.json<{ items: unknown[] }>().items).toHaveLength(2);
    await expectAnswer('GET', '/api/v1/configs/{id}/port-forwards', { url: `/api/v1/configs/${config.id}/port-forwards` }, 200, pageOf(portForwardSchema));
    await expectAnswer('GET', '/api/v1/configs/{id}/sync', { url: `/api/v1/configs/${config.id}/sync` }, 200, z.strictObject({ items: z.array(laggingNodeSchema) }));
    await expectAnswer('GET', '/api/v1/nodes/{id}', { url: `/api/v1/nodes/${gw.id}` }, 200, nodeDetailSchema);
    const rotated = await expectAnswer('POST', '/api/v1/nodes/{id}/credentials', { url: `/api/v1/nodes/${phone.id}/credentials?wait=15000` }, 200, credentialRotationSchema);
    expect(rotated.json<{ job: { state: string } }>().job.state).toBe('completed');
    await expectAnswer('GET', '/api/v1/nodes/{id}', { url: `/api/v1/nodes/${phone.id}` }, 200, nodeDetailSchema);
    const conf = await expectAnswer('GET', '/api/v1/nodes/{id}/wireguard.conf', { url: `/api/v1/nodes/${gw.id}/wireguard.conf` }, 200);
    expect(conf.headers['content-type']).toMatch(/^text\/plain/);
    await expectAnswer('GET', '/api/v1/settings', { url: '/api/v1/settings' }, 200, pageOf(settingSchema));
    await expectAnswer('POST', '/api/v1/tokens', { url: '/api/v1/tokens?wait=15000', payload: { name: 'openapi', scopes: ['read'] } }, 200, tokenCreatedSchema);
    await expectAnswer('GET', '/api/v1/tokens', { url: '/api/v1/tokens' }, 200, pageOf(tokenSchema));
    await expectAnswer('GET', '/api/v1/audit', { url: '/api/v1/audit?limit=10' }, 200, pageOf(auditSchema));
    await expectAnswer('GET', '/api/v1/broker/status', { url: '/api/v1/broker/status' }, 200, brokerStatusSchema);
    const exported = await expectAnswer('POST', '/api/v1/snapshots/export', { url: '/api/v1/snapshots/export?wait=30000' }, 200, jobSchema);
    const snapshotId = exported.json<{ result: { snapshotId: string } }>().result.snapshotId;
    await expectAnswer('GET', '/api/v1/snapshots', { url: '/api/v1/snapshots' }, 200, pageOf(snapshotSchema));
    await expectAnswer('GET', '/api/v1/snapshots/{id}', { url: `/api/v1/snapshots/${snapshotId}` }, 200, snapshotSchema);
    const file = await expectAnswer('GET', '/api/v1/snapshots/{id}/download', { url: `/api/v1/snapshots/${snapshotId}/download` }, 200);
    expect(file.headers['content-type']).toBe('application/octet-stream');
    await expectAnswer('GET', '/healthz', { url: '/healthz' }, 200, livenessSchema);
    await expectAnswer('GET', '/readyz', { url: '/readyz' }, 200, readinessSchema);
    const metrics = await expectAnswer('GET', '/metrics', { url: '/metrics' }, 200);
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/);

    // Errors: the documented error object, with the statuses the document names.
    await expectAnswer('GET', '/api/v1/configs/{id}', { url: '/api/v1/configs/0192f0c4-5a1e-7000-8000-000000000000' }, 404, errorSchema);
    await expectAnswer('POST', '/api/v1/jobs', { url: '/api/v1/jobs', payload: { type: 'config.create', data: { name: 'no-subnet' } } }, 400, errorSchema);
    await expectAnswer('POST', '/api/v1/jobs', { url: '/api/v1/jobs', payload: { type: 'token.create', data: {} } }, 400, errorSchema);
    await expectAnswer('GET', '/api/v1/tokens', { url: '/api/v1/tokens', headers: { authorization: 'Bearer mq_not-a-token' } }, 401, errorSchema);
    expect(checked.size).toBeGreaterThan(25);
  });

  it('generates a typed client: a config.create submission type-checks, wrong bodies do not', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshq-openapi-'));
    try {
      writeFileSync(join(dir, 'api.d.ts'), astToString(await openapiTS(structuredClone(doc) as never)));
      // The generated file and the calls resolve openapi-fetch from the project's node_modules.
      symlinkSync(resolve('node_modules'), join(dir, 'node_modules'), 'dir');
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
      const call = (body: string) => `import createClient from 'openapi-fetch';
import type { paths } from './api.js';
const client = createClient<paths>({ baseUrl: 'http://127.0.0.1:3000' });
export async function submit(): Promise<string | undefined> {
  const { data, error } = await client.POST('/api/v1/jobs', { params: { query: { wait: 10000 } }, body: ${body} });
  if (error) return error.error?.code;
  return data?.state === 'completed' ? data.id : undefined;
}
`;
      const files = {
        good: call(`{ type: 'config.create', data: { name: 'home', subnet: '10.10.0.0/24', protocol: 'wireguard' } }`),
        missingField: call(`{ type: 'config.create', data: { name: 'home' } }`),
        wrongType: call(`{ type: 'config.create', data: { name: 'home', subnet: '10.10.0.0/24', listenPort: '51820' } }`),
        otherTypesPayload: call(`{ type: 'config.create', data: { configId: '0192f0c4-5a1e-7000-8000-000000000000', name: 'gw', kind: 'static' } }`),
        internalType: call(`{ type: 'token.create', data: { name: 'x' } }`),
      };
      for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, `${name}.ts`), text);
      const program = ts.createProgram(
        Object.keys(files).map((name) => join(dir, `${name}.ts`)),
        { strict: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2024, types: [], skipLibCheck: true },
      );
      const errorsOf = (name: string) =>
        ts.getPreEmitDiagnostics(program, program.getSourceFile(join(dir, `${name}.ts`))).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      // Each wrong body differs from the good one in one place: that place is what fails.
      // (The generated union is exclusive, so TypeScript's message may name another variant.)
      expect(errorsOf('good')).toEqual([]);
      for (const wrong of ['missingField', 'wrongType', 'otherTypesPayload', 'internalType']) expect(errorsOf(wrong), wrong).not.toEqual([]);
      expect(errorsOf('internalType').join('\n')).toMatch(/"token\.create"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
