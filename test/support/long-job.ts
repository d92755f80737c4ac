/**
 * A job that is surely running when a test signals its process: mesh.generate on a config
 * of many nodes, kept waiting for the data lock (an exclusive write of the test's own, as
 * a restore holds) until the test releases it, however fast the job itself would be.
 * Jobs run in a worker the test started; these functions only submit and watch.
 */
import { expect } from 'vitest';
import type { Job } from 'bullmq';
import type { AppContext } from '../../src/bin/bootstrap.js';
import { waitFor } from './processes.js';

const stateOf = async (app: AppContext, id: string) => (await app.queues.view((await app.queues.find(id))!)).state;

/** Makes a config of `nodes` static nodes through the queues and returns its id. */
export async function configWithNodes(app: AppContext, subnet: string, nodes: number): Promise<string> {
  const config = await app.queues.submit('config.create', { name: 'big', subnet }, { actor: 'admin' });
  await waitFor('config.create (a worker is up)', async () => (await stateOf(app, config.id!)) === 'completed', 60_000);
  const configId = ((await app.queues.find(config.id!))!.returnvalue as { id: string }).id;
  let last = config;
  for (let i = 0; i < nodes; i++) last = await app.queues.submit('node.create', { configId, name: `n${i}`, kind: 'static' }, { actor: 'admin' });
  await waitFor('the nodes', async () => (await stateOf(app, last.id!)) === 'completed', 60_000);
  return configId;
}

export interface HeldJob {
  job: Job;
  /** Lets the job take the data lock, and waits until the test's own write has ended. */
  release(): Promise<void>;
}

/** Submits mesh.generate on the config and returns once it is active, held until `release()`. */
export async function heldMeshGenerate(app: AppContext, configId: string, everyMs: number): Promise<HeldJob> {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const holding = app.uow.write(() => released, { exclusive: true });
  const job = await app.queues.submit('mesh.generate', { configId }, { actor: 'admin' });
  await waitFor('mesh.generate to be active', async () => (await stateOf(app, job.id!)) === 'active', 60_000, everyMs);
  return {
    job,
    async release() {
      release();
      await holding;
    },
  };
}

/** Nothing active or waiting in the operations queue, and nothing delayed but the workers' own schedules (retention). */
export async function expectOperationsIdle(app: AppContext): Promise<void> {
  const counts = await app.queues.queue('operations').getJobCounts('active', 'waiting');
  expect(counts).toEqual({ active: 0, waiting: 0 });
  const delayed = await app.queues.queue('operations').getJobs(['delayed']);
  expect(delayed.map((j) => j.name).filter((n) => n !== 'retention.prune')).toEqual([]);
}
