/**
 * The /healthz prober in a process of its own, so that what the benchmark's own process
 * does meanwhile (sending an upload, polling jobs, collecting the garbage of a million
 * generated rows) does not count as the latency of the process under test.
 * Receives {url, everyMs, count?, anyStatus?} (anyStatus: an answer of any status counts,
 * as probe() says); warms up (WARM_UP probes, not kept: a new process's
 * first requests are slow on its own side), says 'ready', then probes every `everyMs` until
 * it has `count` samples or is sent 'stop'; answers with the samples ({at, ms}: when each
 * was sent, how long it took).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { probe, type ProbeSample } from './probe.js';

const WARM_UP = 50;

process.once('message', async (m) => {
  const { url, everyMs, count, anyStatus } = m as { url: string; everyMs: number; count?: number; anyStatus?: boolean };
  let stopped = false;
  process.on('message', (msg) => {
    if (msg === 'stop') stopped = true;
  });
  for (let i = 0; i < WARM_UP; i++) {
    await probe(url, anyStatus);
    await sleep(everyMs);
  }
  process.send!('ready');
  const samples: ProbeSample[] = [];
  while (!stopped && (count === undefined || samples.length < count)) {
    const at = Date.now();
    samples.push({ at, ms: await probe(url, anyStatus) });
    await sleep(everyMs);
  }
  process.send!(samples, () => process.exit(0));
});
