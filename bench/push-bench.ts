/**
 * Push fan-out benchmark (`npm run bench pushes`, also run by `npm run bench scale`):
 * `mesh.generate` over BENCH_PUSH_NODES (1,000) dynamic nodes with MQTT on, and the
 * config pushes it causes, one per node, each listing every other node as a peer.
 *   - from the submission of mesh.generate until every node's new configuration was
 *     received by a subscriber on the push topics, and from the job's commit until then
 *     (the fan-out's own time, the issue's target: from the enqueue of the first push batch,
 *     which follows the commit), as pushes per second;
 *   - baseline from the same run: a raw mqtt.js client publishing the same payloads to the
 *     same topics at QoS 1, pipelined, until the same subscriber received them all.
 * meshq's worker is a real process (`npm run worker`'s compiled code) on the shared Mosquitto
 * (BENCH_MQTT_URL) and the EMQX contract double; the nodes are created before it starts,
 * through the real runner in this process. PostgreSQL first, then SQLite
 * (BENCH_PUSH_DIALECTS=postgresql to run one).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { connect, type MqttClient } from 'mqtt';
import { bootstrap } from '../src/bin/bootstrap.js';
import type { Dialect } from '../src/config.js';
import { QUEUES } from '../src/jobs/names.js';
import { startEmqxDouble } from '../test/support/emqx-double.js';
import { benchDatabase, buildOnce, deployedArgs, directRunner, dropRedisPrefix, record, seconds } from './support.js';

const root = resolve(import.meta.dirname, '..');
const NODES = Number(process.env.BENCH_PUSH_NODES ?? 1000);
const MQTT_URL = process.env.BENCH_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const DIALECTS = (process.env.BENCH_PUSH_DIALECTS ?? 'postgresql,sqlite').split(',') as Dialect[];
const TIMEOUT_MS = 15 * 60_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => done(port));
    });
  });
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Counts, per node, the pushes whose revision is `revision`: the message ends with it
 * (the processor writes it last), so the subscriber never parses 250 kB of JSON per node.
 */
class PushCounter {
  readonly last = new Map<string, Buffer>();
  private readonly seen = new Set<string>();
  private wanted = '';
  lastAt = 0;

  constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      if (!payload.subarray(-24).toString('latin1').endsWith(this.wanted)) return;
      this.last.set(topic, payload);
      this.seen.add(topic);
      this.lastAt = performance.timeOrigin + performance.now();
    });
  }

  expect(suffix: string): void {
    this.wanted = suffix;
    this.seen.clear();
  }

  get count(): number {
    return this.seen.size;
  }
}

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux). */
const TICKS = 100;

/** CPU seconds (user + system) a process has used so far (Linux /proc; 0 when it is gone or elsewhere). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch {
    return 0;
  }
}

/** The PostgreSQL backends serving this database (their process titles name it), on this host. */
function backendPids(database: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.startsWith('postgres: ') && cmd.includes(` ${database} `)) pids.push(Number(entry));
    } catch {
      // ended meanwhile
    }
  }
  return pids;
}

/** CPU samples of the worker and the database's backends, to take the fan-out's share (from commit to the last push). */
class CpuSamples {
  private readonly samples: { at: number; worker: number; backends: Map<number, number> }[] = [];
  private pids: number[] = [];

  constructor(
    private readonly workerPid: number | undefined,
    private readonly database: string | undefined,
  ) {}

  rescan(): void {
    if (this.database) this.pids = backendPids(this.database);
  }

  sample(): void {
    // The worker's pool may open connections during the run: look for new backends now and then.
    if (this.samples.length % 25 === 0) this.rescan();
    this.samples.push({ at: performance.timeOrigin + performance.now(), worker: this.workerPid ? cpuSeconds(this.workerPid) : 0, backends: new Map(this.pids.map((p) => [p, cpuSeconds(p)])) });
  }

  /** CPU seconds from the last sample at or before `from` to the last sample. */
  since(from: number): { worker: number; database: number } {
    const first = this.samples.findLast((s) => s.at <= from) ?? this.samples[0]!;
    const last = this.samples.at(-1)!;
    let database = 0;
    for (const [pid, cpu] of last.backends) database += cpu - (first.backends.get(pid) ?? 0);
    return { worker: last.worker - first.worker, database };
  }
}

async function startWorker(env: NodeJS.ProcessEnv): Promise<{ pid: number | undefined; stop(): Promise<void> }> {
  await buildOnce(root);
  const proc: ChildProcess = spawn(process.execPath, deployedArgs('worker'), { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] });
  return {
    pid: proc.pid,
    stop: () =>
      new Promise<void>((done) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return done();
        proc.once('exit', () => done());
        proc.kill('SIGTERM');
      }),
  };
}

interface Figures {
  generateS: number;
  /** Submission of mesh.generate until the last node's push was received. */
  totalS: number;
  /** mesh.generate's commit (the enqueue of the first push batch) until the last node's push was received. */
  afterCommitS: number;
  /** Raw mqtt.js publishing the same payloads until the subscriber had them all. */
  baselineS: number;
  megabytes: number;
  /** CPU seconds of the worker process from commit to the last push received. */
  workerCpuS: number;
  /** CPU seconds of the database's PostgreSQL backends in that time (0 on SQLite, whose work is the worker's). */
  databaseCpuS: number;
}

async function measure(dialect: Dialect): Promise<Figures> {
  const emqx = await startEmqxDouble();
  const mqttEnv = { MQTT_ENABLED: 'true', MQTT_URL, EMQX_API_URL: emqx.url, EMQX_API_KEY: emqx.apiKey, EMQX_API_SECRET: emqx.apiSecret };
  const db = await benchDatabase(dialect, mqttEnv);
  const app = await bootstrap('bench', db.config);
  const subscriber = connect(MQTT_URL, { reconnectPeriod: 0 });
  let worker: Awaited<ReturnType<typeof startWorker>> | undefined;
  try {
    await new Promise<void>((done, fail) => {
      subscriber.once('connect', () => done());
      subscriber.once('error', fail);
    });
    const counter = new PushCounter(subscriber);
    console.error(`pushes, ${dialect}: seeding ${NODES} dynamic nodes`);
    const runJob = directRunner(app);
    const { id: configId } = await runJob('config.create', { name: 'pushes', subnet: '10.80.0.0/16' });
    for (let i = 0; i < NODES; i++) await runJob('node.create', { configId, name: `n${i}`, kind: 'dynamic' });
    await subscriber.subscribeAsync(`meshq/${configId}/+/config/push`, { qos: 1 });

    // The worker serves the push requests node.create left (each node alone, revision 1)
    // and the broker sync of the new credentials; mesh.generate is measured once both are done.
    counter.expect('"revision":1}');
    worker = await startWorker({
      ...process.env,
      ...mqttEnv,
      DATABASE_URL: db.config.databaseUrl,
      REDIS_URL: db.config.redisUrl,
      SECRET_KEY: db.config.secretKey,
      QUEUE_PREFIX: db.config.queuePrefix,
      REDIS_DURABILITY: 'none',
      LOG_LEVEL: process.env.BENCH_PUSH_WORKER_LOG_LEVEL ?? 'warn',
      WORKER_HTTP_PORT: String(await freePort()),
    });
    await until('the first push of every node', () => counter.count === NODES);
    const queue = app.queues.queue(QUEUES.brokerSync);
    await until('the broker-sync queue to drain', async () => {
      const counts = await queue.getJobCounts('waiting', 'active', 'prioritized');
      return (counts.waiting ?? 0) + (counts.active ?? 0) + (counts.prioritized ?? 0) === 0;
    });

    counter.expect('"revision":2}');
    const cpu = new CpuSamples(worker.pid, dialect === 'postgresql' ? new URL(db.config.databaseUrl).pathname.slice(1) : undefined);
    cpu.sample();
    const t0 = performance.timeOrigin + performance.now();
    const job = await app.queues.submit('mesh.generate', { configId }, { actor: 'bench' });
    await until('every node to receive its full mesh', () => {
      cpu.sample();
      return counter.count === NODES;
    });
    const view = await app.queues.waitFor(job, TIMEOUT_MS);
    if (view.state !== 'completed') throw new Error(`mesh.generate did not complete: ${JSON.stringify(view.error)}`);
    const finished = (await app.queues.find(job.id!))!;
    // The commit: the first push batch is enqueued right after it. (finishedOn can be
    // later: on a loaded machine BullMQ may count a long job as stalled and run it again.)
    const batches = (await queue.getJobs(['completed'], 0, 10_000)).filter((j) => j?.name === 'node.push-configs' && j.timestamp >= t0);
    const committedAt = Math.min(...batches.map((b) => b.timestamp));
    const figures = {
      generateS: (finished.finishedOn! - finished.processedOn!) / 1000,
      totalS: (counter.lastAt - t0) / 1000,
      afterCommitS: (counter.lastAt - committedAt) / 1000,
      megabytes: [...counter.last.values()].reduce((n, b) => n + b.length, 0) / 1e6,
    };
    const used = cpu.since(committedAt);
    const fanoutCpu = { workerCpuS: used.worker, databaseCpuS: used.database };
    const rel = (t: number) => ((t - committedAt) / 1000).toFixed(2);
    for (const b of batches.sort((x, y) => x.processedOn! - y.processedOn!)) {
      if (process.env.BENCH_PUSH_VERBOSE) console.error(`    batch added ${rel(b.timestamp)} started ${rel(b.processedOn!)} finished ${rel(b.finishedOn!)} ${JSON.stringify(b.returnvalue)}`);
    }
    console.error(`  ${batches.length} push batches; CPU from commit to the last push: worker ${used.worker.toFixed(2)} s, PostgreSQL backends ${used.database.toFixed(2)} s`);
    console.error(`  mesh.generate ${figures.generateS.toFixed(2)} s; all pushes received ${figures.totalS.toFixed(2)} s after submission, ${figures.afterCommitS.toFixed(2)} s after commit`);

    // Baseline: the same bytes to the same topics from a plain client, pipelined at QoS 1.
    const payloads = [...counter.last.entries()];
    counter.expect('"revision":2}');
    const raw = connect(MQTT_URL, { reconnectPeriod: 0 });
    try {
      await new Promise<void>((done, fail) => {
        raw.once('connect', () => done());
        raw.once('error', fail);
      });
      const b0 = process.hrtime.bigint();
      await Promise.all(payloads.map(([topic, body]) => raw.publishAsync(topic, body, { qos: 1 })));
      await until('the baseline messages', () => counter.count === NODES);
      const baselineS = seconds(b0);
      console.error(`  raw mqtt.js publish of the same ${NODES} payloads: ${baselineS.toFixed(2)} s`);
      return { ...figures, ...fanoutCpu, baselineS };
    } finally {
      await raw.endAsync();
    }
  } finally {
    await worker?.stop();
    await subscriber.endAsync(true);
    await app.close();
    await dropRedisPrefix(db.config.queuePrefix);
    await db.drop();
    await emqx.close();
  }
}

export async function benchPushes(): Promise<void> {
  for (const dialect of DIALECTS) {
    const f = await measure(dialect);
    const name = dialect === 'postgresql' ? 'PostgreSQL' : 'SQLite';
    record({ name: `push fan-out, ${name}: nodes (pushes) / MB published`, value: NODES, unit: `pushes; ${f.megabytes.toFixed(0)} MB` });
    record({ name: `raw mqtt.js publish of the same payloads, ${name} run (baseline)`, value: f.baselineS, unit: 's' });
    record({ name: `mesh.generate itself, ${name}`, value: f.generateS, unit: 's' });
    record({ name: `mesh.generate submitted -> all pushes received, ${name}`, value: f.totalS, unit: 's' });
    record({
      name: `mesh.generate committed -> all pushes received, ${name}`,
      value: f.afterCommitS,
      unit: 's',
      baseline: 'raw mqtt.js',
      ratio: f.afterCommitS / f.baselineS,
      target: '<= 10 s',
    });
    record({ name: `CPU from commit to the last push, ${name}: worker / PostgreSQL backends`, value: f.workerCpuS, unit: `s / ${f.databaseCpuS.toFixed(2)} s` });
    record({ name: `pushes per second after commit, ${name}`, value: NODES / f.afterCommitS, unit: 'pushes/s', baseline: 'raw mqtt.js', ratio: f.baselineS / f.afterCommitS });
  }
}
