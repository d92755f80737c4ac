/**
 * Metrics are counted once, where the work happens: two worker pools share the jobs, each
 * counts on its own /metrics (WORKER_HTTP_PORT server) exactly the attempts it ran, the
 * counts add up to the jobs submitted, and the API's /metrics counts none of them. The
 * worker's health endpoints answer, and stop saying healthy once its workers are closed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorkerHttp, type WorkerHttp } from '../../src/jobs/http.js';
import { startWorkers, type WorkerPool } from '../../src/jobs/worker.js';
import { DIALECTS } from '../support/db.js';
import { startStack, type Stack } from '../support/stack.js';

/** The value of one series in Prometheus text, 0 when it is absent. */
function series(text: string, name: string, labels: string): number {
  const prefix = labels ? `${name}{${labels}} ` : `${name} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

describe.each(DIALECTS)('worker metrics on %s', (dialect) => {
  let s: Stack;
  let second: WorkerPool;
  const servers: WorkerHttp[] = [];

  beforeAll(async () => {
    s = await startStack(dialect, 'wmetrics', { adminPassword: 'worker-metrics-pw', env: { WORKER_HTTP_PORT: '0', HOST: '127.0.0.1' } });
    // A second worker "process": its own pool, registry and server (process metrics once per process).
    second = await startWorkers(s.app, { processMetrics: false });
    servers.push(await startWorkerHttp({ ...s.app, pool: s.pool! }), await startWorkerHttp({ ...s.app, pool: second }));
  });

  afterAll(async () => {
    for (const server of servers) await server.close();
    await second?.close();
    await s?.stop();
  });

  const scrape = async (server: WorkerHttp) => {
    const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    return res.text();
  };

  it('counts each job once, on the worker that ran it, and never on the API', async () => {
    const jobs = 12;
    for (let i = 0; i < jobs; i++) {
      const job = await s.job('config.create', { name: `metrics-${i}`, subnet: `10.${60 + i}.0.0/24` });
      expect(job.state).toBe('completed');
    }
    // A permanent failure: a node name taken in its config (the job finds it, not the precheck).
    const configs = await s.get<{ items: { id: string }[] }>('/api/v1/configs');
    const configId = configs.items[0]!.id;
    expect((await s.job('node.create', { configId, name: 'twice', kind: 'static' })).state).toBe('completed');
    const failed = await s.job('node.create', { configId, name: 'twice', kind: 'static' });
    expect(failed.state).toBe('failed');

    const [a, b] = (await Promise.all(servers.map(scrape))) as [string, string];
    const completed = (t: string) => series(t, 'meshq_jobs_total', 'type="config.create",status="completed"');
    expect(completed(a) + completed(b)).toBe(jobs);
    const failures = (t: string) => series(t, 'meshq_jobs_total', 'type="node.create",status="failed"');
    expect(failures(a) + failures(b)).toBe(1);
    // Durations and waits are observed for the same attempts.
    const runs = (t: string) => series(t, 'meshq_job_duration_seconds_count', 'type="config.create",status="completed"');
    expect(runs(a) + runs(b)).toBe(jobs);
    const waits = (t: string) => series(t, 'meshq_job_wait_seconds_count', 'type="config.create"');
    expect(waits(a) + waits(b)).toBe(jobs);
    // Process metrics once per process: the first pool has them, the second was told not to.
    expect(a).toMatch(/^process_cpu_user_seconds_total /m);
    expect(b).not.toMatch(/^process_cpu_user_seconds_total /m);

    const api = await s.call({ method: 'GET', url: '/metrics' });
    expect(api.statusCode).toBe(200);
    expect(api.body).not.toMatch(/^meshq_jobs?_/m);
    expect(api.body).toMatch(/^meshq_queue_jobs\{queue="operations",state="completed"\} /m);
  });

  it('reports the newest export as the last successful snapshot', async () => {
    const before = series(await scrape(servers[0]!), 'meshq_snapshot_last_success_timestamp_seconds', '');
    expect(before).toBe(0);
    const started = Date.now() / 1000;
    const res = await s.call({ method: 'POST', url: '/api/v1/snapshots/export?wait=20000' });
    expect(res.json<{ state: string }>().state, res.body).toBe('completed');
    const text = await scrape(servers[1]!);
    const line = text.split('\n').find((l) => l.startsWith('meshq_snapshot_last_success_timestamp_seconds '));
    expect(Number(line?.split(' ')[1])).toBeGreaterThanOrEqual(Math.floor(started) - 1);
  });

  it('answers /healthz and /readyz, and is not healthy once its workers stopped', async () => {
    const base = `http://127.0.0.1:${servers[1]!.port}`;
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', checks: { database: { ok: true }, redis: { ok: true }, workers: { ok: true } }, warnings: [] });
    expect((await fetch(`${base}/nope`)).status).toBe(404);

    // A port in use is one clear line naming the variable.
    const taken = { ...s.app.config, workerHttpPort: servers[0]!.port };
    await expect(startWorkerHttp({ ...s.app, config: taken, pool: s.pool! })).rejects.toThrow(/^WORKER_HTTP_PORT \d+ on 127\.0\.0\.1 is already in use/);

    await second.close();
    const sick = await fetch(`${base}/healthz`);
    expect(sick.status).toBe(503);
  });
});
