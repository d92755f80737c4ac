/**
 * Login-flood benchmark: how fast `/healthz` answers while 100 clients at a time send
 * wrong administrator passwords, against the same probe on the idle API in the same run.
 * Failed logins are throttled before any password hashing and only a few scrypt
 * verifications run at once, so the flood must not starve the event loop or libuv's
 * thread pool. The figure is the probe's p99; the ratio is flood / idle.
 */
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

    const statuses = new Map<number, number>();
    let flooding = true;
    const bad = 'Basic ' + Buffer.from('admin:not-the-password').toString('base64');
    const flood = Array.from({ length: FLOOD_CLIENTS }, async () => {
      while (flooding) {
        const res = await fetch(`${base}/api/v1/configs`, { headers: { authorization: bad } });
        await res.arrayBuffer();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    });
    const loaded = await probe(`${base}/healthz`, DURATION_MS);
    flooding = false;
    await Promise.all(flood);

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
