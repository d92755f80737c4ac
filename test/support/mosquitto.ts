/**
 * A Mosquitto broker of a test's own, on a free port, that the test can stop and start
 * again on the same port (broker outage tests). The shared broker on 127.0.0.1:1883 must
 * never be stopped by a test; this one exists for that.
 *
 * Nothing is written to disk (persistence off, logs to stderr), so the broker may drop
 * to the `mosquitto` user when started as root: it only has to read its config file,
 * which is made world-readable.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './processes.js';

export const SHARED_MQTT_URL = 'mqtt://127.0.0.1:1883';
const SHARED_MQTT_ADDRESS = '127.0.0.1:1883';

export interface TestBroker {
  readonly port: number;
  readonly url: string;
  /** Output of the current and earlier runs, for failure messages. */
  output(): string;
  /** Stops the broker (SIGTERM) and waits until the port refuses connections. */
  stop(): Promise<void>;
  /**
   * Sends the broker `signal` (SIGKILL unless told) at once, synchronously: from inside a
   * callback, the broker is gone before the code after the callback runs, which stop()
   * (asking it to end, then waiting) cannot promise. Resolves once it exited.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and waits until it accepts connections. */
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface TestBrokerOptions {
  /**
   * Feeds `$SYS/brokers/#` of this broker from `<sysFeedPrefix>brokers/#` on the shared
   * broker, through a bridge. Mosquitto refuses `$SYS` publishes from clients but not from
   * its bridges, so this is how a test delivers EMQX-shaped client events
   * (`$SYS/brokers/<node>/clients/<id>/connected`) through a real broker: publish them on
   * the shared broker under the prefix.
   */
  sysFeedPrefix?: string;
  /**
   * Mosquitto's max_inflight_messages (default 20). 0, no bound: the broker writes a QoS 1
   * message to every subscriber's connection before it acknowledges it to the publisher,
   * so once the publisher has its acknowledgement the message is on its way even if the
   * broker is killed that moment; with a bound, the messages past it wait in the broker's
   * memory for subscribers' acknowledgements, and die with it.
   */
  maxInflightMessages?: number;
}

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startTestBroker(opts: TestBrokerOptions = {}): Promise<TestBroker> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'meshq-mosquitto-'));
  chmodSync(dir, 0o755);
  const configFile = join(dir, 'mosquitto.conf');
  writeFileSync(
    configFile,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      ...(opts.maxInflightMessages === undefined ? [] : [`max_inflight_messages ${opts.maxInflightMessages}`]),
      ...(opts.sysFeedPrefix
        ? [`connection sysfeed-${port}`, `address ${SHARED_MQTT_ADDRESS}`, 'cleansession true', `topic brokers/# in 1 $SYS/ ${opts.sysFeedPrefix}`]
        : []),
      '',
    ].join('\n'),
  );
  chmodSync(configFile, 0o644);

  let proc: ChildProcess | undefined;
  let out = '';

  const start = async () => {
    if (proc) return;
    const child = spawn('mosquitto', ['-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    child.once('exit', () => {
      if (proc === child) proc = undefined;
    });
    proc = child;
    await until(`mosquitto on port ${port}\n${out}`, () => accepts(port));
  };

  const stop = async () => {
    const child = proc;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await exited;
    await until(`port ${port} to close`, async () => !(await accepts(port)));
  };

  const kill = (signal: NodeJS.Signals = 'SIGKILL') => {
    const child = proc;
    if (!child) return Promise.resolve();
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    return exited;
  };

  await start();
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    output: () => out,
    stop,
    kill,
    start,
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
