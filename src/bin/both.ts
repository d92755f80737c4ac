/**
 * `npm start`: the API and the workers in one process, the single-machine default.
 *
 * The workers run in a worker thread: this same file, started again as a
 * `node:worker_threads` Worker, runs the worker role there with its own ORM, SQLite
 * connection or pg pool, Redis connections and event loop. A job's synchronous work
 * (better-sqlite3 statements run to completion on the loop that calls them, a large
 * mesh.generate or restore among them) then never delays an HTTP answer: the API's loop
 * only serves requests. docs/architecture.md ("Event loops") says why.
 *
 * Shutdown (SIGTERM/SIGINT reach the main thread only): the API stops listening first (no
 * new jobs come in), then the thread is asked to stop; it lets its workers finish their
 * active jobs, closes its connections and ends; runRole then closes the main thread's
 * queues, Redis and ORM. A worker thread that dies on its own takes the process down with
 * exit code 1, so a supervisor restarts the whole of it rather than keeping an API whose
 * jobs never run. The version check runs before anything else is loaded (see
 * node-guard.ts), then tracing when configured, each thread its own (see telemetry.ts).
 */
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { isMainThread, parentPort, Worker } = await import('node:worker_threads');
const prepared = await (await import('./telemetry.js')).prepareProcess(isMainThread ? 'api' : 'worker');

/** Messages between the main thread and the worker thread. */
type ToThread = { type: 'stop' } | { type: 'metrics'; id: number };
type FromThread = { type: 'ready' } | { type: 'stopped' } | { type: 'metrics'; id: number; text: string };

if (isMainThread) {
  const { buildApi } = await import('../api/app.js');
  const { assertPortFree, listenApi, runRole } = await import('./bootstrap.js');

  await runRole('both', async (app) => {
    // A port in use stops start-up before the worker thread can take a job.
    await assertPortFree(app.config.host, app.config.port);
    // Migrations ran in this thread's bootstrap; the thread's own finds nothing to apply.
    const thread = new Worker(new URL(import.meta.url), { name: 'meshq-worker' });
    let stopping = false;
    const exited = new Promise<number>((done) => thread.once('exit', done));
    await new Promise<void>((ready, failed) => {
      thread.once('message', (m: FromThread) => (m.type === 'ready' ? ready() : undefined));
      thread.once('error', failed);
      void exited.then((code) => failed(new Error(`the worker thread exited (code ${code}) before it was ready`)));
    });
    thread.on('error', (err) => app.log.error({ err }, 'worker thread failed'));
    void exited.then((code) => {
      if (stopping) return;
      app.log.fatal({ code }, 'the worker thread stopped on its own: exiting so that meshq is restarted whole');
      process.exit(1);
    });
    const stopThread = async () => {
      stopping = true;
      thread.postMessage({ type: 'stop' } satisfies ToThread);
      const code = await exited;
      if (code !== 0) throw new Error(`the worker thread ended with code ${code} while stopping`);
    };

    // The API's /metrics serves the workers' too: one process, each job counted once (by
    // the thread that ran it), process metrics once (the thread's; they are process-wide).
    let asked = 0;
    const workerMetrics = () =>
      new Promise<string>((resolve, reject) => {
        const id = ++asked;
        const timer = setTimeout(() => {
          thread.off('message', answer);
          reject(new Error('the worker thread did not send its metrics in time'));
        }, 5_000);
        const answer = (m: FromThread) => {
          if (m.type !== 'metrics' || m.id !== id) return;
          clearTimeout(timer);
          thread.off('message', answer);
          resolve(m.text);
        };
        thread.on('message', answer);
        thread.postMessage({ type: 'metrics', id } satisfies ToThread);
      });

    try {
      const api = await buildApi(app, { workerMetrics });
      await listenApi(api, app.config.host, app.config.port);
      return async () => {
        await api.close();
        await stopThread();
      };
    } catch (err) {
      await stopThread();
      throw err;
    }
  }, prepared);
} else {
  // The worker thread: the worker role, stopped by the main thread's message.
  const { bootstrap } = await import('./bootstrap.js');
  const { startWorkers } = await import('../jobs/worker.js');
  const { startWorkerHttp } = await import('../jobs/http.js');
  const port = parentPort!;
  const app = await bootstrap('worker', prepared.config, { jobTelemetry: prepared.tracing?.jobs });
  const pool = await startWorkers(app).catch(async (err: unknown) => {
    await app.close();
    throw err;
  });
  // Health probes and the workers' metrics on WORKER_HTTP_PORT, as in `npm run worker`.
  const http = await startWorkerHttp({ ...app, pool }).catch(async (err: unknown) => {
    await pool.close();
    await app.close();
    throw err;
  });
  port.on('message', (m: ToThread) => {
    if (m.type === 'metrics') {
      void pool.metrics.text().then(
        (text) => port.postMessage({ type: 'metrics', id: m.id, text } satisfies FromThread),
        (err: unknown) => app.log.warn({ err }, 'worker thread: metrics failed'),
      );
      return;
    }
    if (m.type !== 'stop') return;
    void (async () => {
      app.log.info('worker thread: finishing active jobs');
      await pool.close();
      await http.close();
      await app.close();
      await prepared.tracing?.shutdown();
      port.postMessage({ type: 'stopped' } satisfies FromThread);
      // Nothing is left on this thread's loop once the port closes: the thread ends.
      port.close();
    })().catch((err: unknown) => {
      app.log.error({ err }, 'worker thread: shutdown failed');
      process.exit(1);
    });
  });
  port.postMessage({ type: 'ready' } satisfies FromThread);
}
