/**
 * Login-flood benchmark: how fast `/healthz` answers while 100 clients at a time send
 * wrong administrator passwords, against the same probe on the idle API in the same run.
 * Failed logins are throttled before any password hashing and only a few scrypt
 * verifications run at once, so the flood must not starve the event loop or libuv's
 * thread pool. The figure is the probe's p99; the ratio is flood / idle.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { bootstrap } from '../src/bin/bootstrap.js';
import { BENCH_ADMIN_PASSWORD } from './jobs-bench.js';
import { benchDatabase, dropRedisPrefix, record } from './support.js';

const FLOOD_CLIENTS = 100;
const DURATION_MS = Number(process.env.BENCH_FLOOD_MS ?? 5_000);

const percentile = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};

/** Probes `/healthz` every 20 ms for `ms`; latencies in milliseconds. */
async function probe(url: string, ms: number): Promise<number[]> {
  const out: number[] = [];
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const t = performance.now();
    await (await fetch(url)).arrayBuffer();
    out.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 20));
  }
  return out;
}

export async function benchSecurity(): Promise<void> {
  const db = await benchDatabase('sqlite', { ADMIN_PASSWORD: BENCH_ADMIN_PASSWORD });
  const app = await bootstrap('bench', db.config);
  const { buildApi } = await import('../src/api/app.js');
  const api = await buildApi(app);
  await api.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(api.server.address() as { port: number }).port}`;
  try {
    const idle = await probe(`${base}/healthz`, DURATION_MS);

    // The flood comes from a child process; the probe runs here, beside the API.
    const child = fork(fileURLToPath(new URL('./flood-child.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const flooded = new Promise<Record<string, number>>((resolve, reject) => {
      child.once('message', (m) => resolve((m as { statuses: Record<string, number> }).statuses));
      child.once('exit', (code) => reject(new Error(`flood child exited ${code}`)));
    });
    child.send({
      url: `${base}/api/v1/configs`,
      authorization: 'Basic ' + Buffer.from('admin:not-the-password').toString('base64'),
      connections: FLOOD_CLIENTS,
      durationS: DURATION_MS / 1000,
    });
    // Let the flood reach full speed before probing.
    await new Promise((r) => setTimeout(r, 300));
    const loaded = await probe(`${base}/healthz`, DURATION_MS - 600);
    const statuses = new Map(Object.entries(await flooded).map(([k, v]) => [Number(k), v]));

    const attempts = [...statuses.values()].reduce((a, b) => a + b, 0);
    console.error(`  login flood: ${attempts} bad logins, answers ${JSON.stringify(Object.fromEntries(statuses))}`);
    const idleP99 = percentile(idle, 99);
    const loadedP99 = percentile(loaded, 99);
    record({ name: '/healthz p99, idle API', value: idleP99, unit: 'ms' });
    record({
      name: `/healthz p99 during ${FLOOD_CLIENTS} concurrent bad logins`,
      value: loadedP99,
      unit: 'ms',
      baseline: `idle probe, ${idleP99.toFixed(1)} ms`,
      ratio: loadedP99 / idleP99,
      target: 'stays fast (well under 1 s)',
    });
    record({ name: 'bad logins answered 429 during the flood', value: (100 * (statuses.get(429) ?? 0)) / Math.max(attempts, 1), unit: '%' });
  } finally {
    await api.close();
    await app.close();
    await dropRedisPrefix(db.config.queuePrefix);
    await db.drop();
  }
}
