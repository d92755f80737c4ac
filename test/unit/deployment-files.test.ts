/**
 * The deployment files (docker-compose.yml, Dockerfile, .env.example, .ci/run) are
 * checked against the code: no Docker engine is needed, the compose file is parsed.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CONFIG_VARIABLES, loadConfig } from '../../src/config.js';

const root = resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(resolve(root, file), 'utf8');

interface Service {
  image?: string;
  build?: unknown;
  command?: string | string[];
  init?: boolean;
  container_name?: string;
  ports?: unknown[];
  profiles?: string[];
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[]; disable?: boolean };
  volumes?: (string | { type?: string; source?: string; target?: string; read_only?: boolean })[];
}

const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string>; engines?: { node?: string } };
const scripts = pkg.scripts;

const compose = parse(read('docker-compose.yml'), { merge: true }) as {
  version?: unknown;
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
const services = compose.services;

function svc(name: string): Service {
  const s = services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
}

/** environment as a map, whichever of the two compose forms is used. */
function envOf(s: Service): Record<string, string> {
  const env = s.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((line) => {
        const i = line.indexOf('=');
        return i < 0 ? [line, ''] : [line.slice(0, i), line.slice(i + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v == null ? '' : String(v)]));
}

const commandText = (s: Service) => (Array.isArray(s.command) ? s.command.join(' ') : (s.command ?? ''));
const healthText = (s: Service) => {
  const t = s.healthcheck?.test;
  return Array.isArray(t) ? t.join(' ') : (t ?? '');
};

/** What compose would pass with none of the host's variables set except `given`. */
function interpolate(value: string, given: Record<string, string>): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}/g, (_m, name: string, op?: string, arg?: string) => {
    const v = given[name];
    if (v !== undefined && v !== '') return v;
    if (op === '?') throw new Error(`${name}: ${arg}`);
    return op === '-' ? (arg ?? '') : '';
  });
}

describe('docker-compose.yml', () => {
  it('has the services and no version key', () => {
    expect(compose.version).toBeUndefined();
    for (const name of ['redis', 'postgres', 'api', 'worker', 'emqx']) expect(services[name], name).toBeDefined();
  });

  it('runs redis with appendonly and a healthcheck', () => {
    const redis = svc('redis');
    expect(commandText(redis)).toMatch(/--appendonly\s+yes/);
    expect(healthText(redis)).toMatch(/redis-cli\s+ping/);
    expect(redis.volumes?.length).toBeGreaterThan(0);
  });

  it('gives postgres a healthcheck and a named volume', () => {
    const pg = svc('postgres');
    expect(healthText(pg)).toMatch(/pg_isready/);
    const volume = pg.volumes?.find((v) => typeof v === 'string' && v.endsWith(':/var/lib/postgresql/data'));
    expect(volume).toBeDefined();
    expect(Object.keys(compose.volumes ?? {})).toContain(String(volume).split(':')[0]);
  });

  it('keeps the worker scalable', () => {
    const worker = svc('worker');
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports ?? []).toEqual([]);
  });

  // SIGTERM from `docker compose stop` must reach meshq: an npm or sh between the init
  // process and node would exit on it and leave the active jobs to be killed.
  it.each([
    ['api', 'api'],
    ['worker', 'worker'],
  ])('runs %s as node on the compiled entry, exactly the package.json script, under an init process', (name, script) => {
    const s = svc(name);
    expect(s.init).toBe(true);
    expect(Array.isArray(s.command), 'exec form').toBe(true);
    const argv = s.command as string[];
    expect(argv[0]).toBe('node');
    expect(argv.at(-1)).toBe(`dist/bin/${script}.js`);
    expect(argv.join(' ')).toBe(scripts[script]);
  });

  const ports = (s: Service) => (s.ports ?? []).map((p) => interpolate(String(p), {}));

  it('publishes the API and the EMQX dashboard/API on 127.0.0.1 only by default', () => {
    expect(ports(svc('api'))).toEqual(['127.0.0.1:3000:3000']);
    const emqx = ports(svc('emqx'));
    expect(emqx).toContain('127.0.0.1:18083:18083');
    expect(emqx.filter((p) => p.endsWith(':18083'))).toEqual(['127.0.0.1:18083:18083']);
  });

  it('offers MQTT over TLS on 8883 with certificates from a mounted folder, and plain MQTT on 127.0.0.1 only', () => {
    const emqx = svc('emqx');
    const published = ports(emqx);
    expect(published).toContain('8883:8883');
    expect(published.filter((p) => p.endsWith(':1883'))).toEqual(['127.0.0.1:1883:1883']);
    const env = envOf(emqx);
    expect(env.EMQX_LISTENERS__SSL__DEFAULT__BIND).toBe('0.0.0.0:8883');
    const certfile = env.EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__CERTFILE;
    const keyfile = env.EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__KEYFILE;
    const mount = (emqx.volumes ?? []).find(
      (v): v is { type?: string; source?: string; target?: string; read_only?: boolean } =>
        typeof v !== 'string' && v.source === './deploy/emqx/certs',
    );
    expect(mount?.read_only).toBe(true);
    expect(certfile).toBe(`${mount?.target}/cert.pem`);
    expect(keyfile).toBe(`${mount?.target}/key.pem`);
    expect(existsSync(resolve(root, 'deploy/emqx/certs/README.md'))).toBe(true);
    expect(read('.gitignore')).toMatch(/^deploy\/emqx\/certs\/\*\.pem$/m);
  });

  it.each(['api', 'worker'])('starts %s once redis and postgres are healthy', (name) => {
    const deps = svc(name).depends_on;
    expect(deps).toBeDefined();
    expect(Array.isArray(deps)).toBe(false);
    const map = deps as Record<string, { condition?: string }>;
    expect(map.redis?.condition).toBe('service_healthy');
    expect(map.postgres?.condition).toBe('service_healthy');
  });

  it('puts emqx under the mqtt profile with bootstrap API keys and built-in-database auth', () => {
    const emqx = svc('emqx');
    expect(emqx.profiles).toContain('mqtt');
    expect(healthText(emqx)).toMatch(/emqx\s+ctl\s+status/);
    const env = envOf(emqx);
    const bootstrap = env.EMQX_API_KEY__BOOTSTRAP_FILE;
    expect(bootstrap).toBeTruthy();
    const mounted = (emqx.volumes ?? []).some((v) =>
      typeof v === 'string'
        ? v.split(':')[1] === bootstrap && v.startsWith('./deploy/emqx/api_keys.txt:')
        : v.target === bootstrap && v.source === './deploy/emqx/api_keys.txt',
    );
    expect(mounted).toBe(true);
    expect(read('deploy/emqx/api_keys.txt.example').trim()).toMatch(/^[^:\s]+:[^:\s]+:administrator$/);

    // Either whole HOCON arrays or EMQX_..._1__FIELD overrides: judge the text.
    const authn = Object.entries(env)
      .filter(([k]) => k.startsWith('EMQX_AUTHENTICATION'))
      .map(([k, v]) => `${k}=${v}`)
      .join('\n')
      .toLowerCase();
    expect(authn).toMatch(/password_based/);
    expect(authn).toMatch(/built_in_database/);
    expect(authn).toMatch(/sha256/);
    expect(authn).toMatch(/salt_position\s*[=:]?\s*"?prefix/);
    const authz = Object.entries(env)
      .filter(([k]) => k.startsWith('EMQX_AUTHORIZATION__SOURCES'))
      .map(([k, v]) => `${k}=${v}`)
      .join('\n')
      .toLowerCase();
    expect(authz).toMatch(/built_in_database/);
    expect(authz).not.toMatch(/type\s*[=:]\s*"?file/);
    expect(env.EMQX_AUTHORIZATION__NO_MATCH).toBe('deny');
  });

  const needed = [
    'DATABASE_URL',
    'REDIS_URL',
    'SECRET_KEY',
    'ADMIN_PASSWORD',
    'MQTT_ENABLED',
    'MQTT_URL',
    'EMQX_API_URL',
    'EMQX_API_KEY',
    'EMQX_API_SECRET',
  ];

  it.each(['api', 'worker'])('configures %s only with variables meshq reads', (name) => {
    const env = envOf(svc(name));
    for (const key of Object.keys(env)) expect(CONFIG_VARIABLES as string[], key).toContain(key);
    for (const key of needed) expect(Object.keys(env), key).toContain(key);
    expect(env.DATABASE_URL).toMatch(/^postgres(ql)?:\/\/.+@postgres:5432\//);
    expect(env.REDIS_URL).toBe('redis://redis:6379');
  });

  it.each(['api', 'worker'])('gives %s an environment meshq accepts, and demands SECRET_KEY', (name) => {
    const env = envOf(svc(name));
    expect(() => interpolate(env.SECRET_KEY ?? '', {})).toThrow(/SECRET_KEY/);
    const resolved = Object.fromEntries(
      Object.entries(env).map(([k, v]) => [k, interpolate(v, { SECRET_KEY: 'a'.repeat(64) })]),
    );
    const config = loadConfig(resolved, { generateSecretKey: false });
    expect(config.dialect).toBe('postgresql');
    expect(config.mqtt.enabled).toBe(false);
  });
});

describe('package.json', () => {
  it('builds dist on npm ci, so `npm ci && npm start` is all a fresh clone needs', () => {
    expect(scripts.build).toMatch(/\btsc -p tsconfig\.build\.json\b/);
    expect(scripts.prepare).toMatch(/^npm run build\b/);
    const build = JSON.parse(read('tsconfig.build.json').replace(/^\s*\/\/.*$/gm, '')) as { compilerOptions: Record<string, unknown>; include: string[] };
    expect(build.compilerOptions).toMatchObject({ rootDir: 'src', outDir: 'dist', noEmit: false });
    expect(build.include).toEqual(['src']);
    expect(read('.gitignore')).toMatch(/^\/?dist\/?$/m);
  });

  it.each([
    ['start', 'both'],
    ['api', 'api'],
    ['worker', 'worker'],
    ['migrate', 'migrate'],
    ['admin', 'admin'],
  ])('runs `npm run %s` as node on dist/bin/%s.js, with no tsx', (script, entry) => {
    expect(scripts[script]).toMatch(new RegExp(`^node (--[a-z-]+=\\S+ )*dist/bin/${entry}\\.js$`));
  });
});

describe('.env.example', () => {
  const text = read('.env.example');
  const lines = text.split('\n').filter((l) => l.trim() !== '');

  it('lists exactly the variables meshq reads, each with a comment', () => {
    const names = lines.filter((l) => !l.startsWith('#')).map((l) => l.split('=')[0]);
    expect(names).toEqual([...CONFIG_VARIABLES]);
    for (const l of lines) expect(l).toMatch(/^(# \S.*|[A-Z][A-Z0-9_]*=.*)$/);
    lines.forEach((l, i) => {
      if (!l.startsWith('#')) expect(lines[i - 1], `comment above ${l}`).toMatch(/^# /);
    });
  });

  it('states the real defaults', () => {
    const key = 'b'.repeat(64);
    const fromExample = loadConfig(parseEnv(text), { overrides: { SECRET_KEY: key }, generateSecretKey: false });
    const fromNothing = loadConfig({ SECRET_KEY: key }, { generateSecretKey: false });
    expect(fromExample).toEqual(fromNothing);
  });
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');

  it('builds on Node 24, matching package.json engines', () => {
    const froms = [...text.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const image of froms) expect(image).toMatch(/^node:24[-.]/);
    expect(pkg.engines?.node).toMatch(/(^|[^\d])24([^\d]|$)/);
  });

  /** The stages by name, each with its lines (continuations joined). */
  const stages = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of text.replace(/\\\n\s*/g, ' ').split('\n')) {
    const from = /^FROM\s+\S+(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) stages.set(from[1] ?? `stage${stages.size}`, (current = []));
    else if (line.trim() && !line.startsWith('#')) current.push(line.trim());
  }
  const runtime = [...stages.values()].at(-1)!;

  it('runs as a non-root user with a data volume and a healthcheck', () => {
    expect(text).toMatch(/^RUN npm ci\b/m);
    expect(text).toMatch(/^USER\s+(?!root\b|0\b)\S+/m);
    expect(text).toMatch(/^WORKDIR \/app$/m);
    expect(text).toMatch(/^VOLUME \/app\/data$/m);
    expect(text).toMatch(/^HEALTHCHECK[\s\S]*\/healthz/m);
    expect(existsSync(resolve(root, '.dockerignore'))).toBe(true);
    expect(read('.dockerignore')).toMatch(/^node_modules$/m);
    expect(read('.dockerignore')).toMatch(/^dist$/m);
  });

  it('runs node on the compiled code itself, in exec form, as `npm start` does', () => {
    const cmd = runtime.filter((l) => l.startsWith('CMD '));
    expect(cmd).toHaveLength(1);
    const argv = JSON.parse(cmd[0]!.slice('CMD '.length)) as string[];
    expect(argv[0]).toBe('node');
    expect(argv.join(' ')).toBe(scripts.start);
    expect(argv.at(-1)).toBe('dist/bin/both.js');
    expect(runtime.some((l) => l.startsWith('ENTRYPOINT'))).toBe(false);
  });

  it('compiles in a build stage and ships only production dependencies and dist', () => {
    const build = stages.get('build');
    expect(build, 'a stage named build').toBeDefined();
    expect(build!.some((l) => /^RUN npm (run build|ci)\b/.test(l) && l.includes('npm run build'))).toBe(true);
    const installs = [...stages.values()].flat().filter((l) => /^RUN\b.*\bnpm ci\b/.test(l));
    // The stage whose node_modules the runtime copies installs without dev dependencies.
    const from = runtime.find((l) => /^COPY --from=\S+ \/app\/node_modules /.test(l));
    expect(from).toBeDefined();
    const depsStage = stages.get(/--from=(\S+)/.exec(from!)![1]!)!;
    expect(depsStage.some((l) => /^RUN\b.*\bnpm ci\b.*--omit=dev/.test(l))).toBe(true);
    expect(installs.length).toBeGreaterThanOrEqual(2);
    expect(runtime).toContain('COPY --from=build /app/dist ./dist');
    // No TypeScript sources and no tsx in the image; tsx (and its esbuild) is a dev tool.
    expect(runtime.some((l) => /^COPY\b.*\bsrc\b/.test(l))).toBe(false);
    expect(runtime.some((l) => /\btsx\b/.test(l))).toBe(false);
    const p = pkg as unknown as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    expect(Object.keys(p.dependencies)).not.toContain('tsx');
    expect(Object.keys(p.devDependencies)).toContain('tsx');
    const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { dev?: boolean }> };
    for (const name of ['node_modules/tsx', 'node_modules/esbuild']) {
      expect(lock.packages[name]?.dev, name).toBe(true);
    }
  });
});

describe('.ci/run', () => {
  const text = read('.ci/run');

  it('is a self-contained, executable bash script', () => {
    expect(text.startsWith('#!/usr/bin/env bash\n') || text.startsWith('#!/bin/bash\n')).toBe(true);
    expect(text).toMatch(/^set -euo pipefail$/m);
    expect(text).not.toMatch(/\.\.\/shared|\/work\/shared/);
    expect(statSync(resolve(root, '.ci/run')).mode & 0o111).not.toBe(0);
  });

  it("ends by running the README's test command", () => {
    let expected = 'npm test';
    if (existsSync(resolve(root, 'README.md'))) {
      const m = /^\s*(?:\$\s*)?(npm (?:run )?test\b[^\n#]*?)\s*$/m.exec(read('README.md'));
      if (m?.[1]) expected = m[1];
    }
    const commands = text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(commands.at(-1)).toBe(expected);
  });
});
