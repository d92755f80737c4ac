/**
 * A Redis primary, one replica and three sentinels of a test's own, on free ports in temp
 * folders: never the shared Redis. The data nodes persist with AOF (`appendfsync always`)
 * and refuse writes when no replica is connected (`min-replicas-to-write 1`: the setting
 * the README asks of a Sentinel deployment, so that a demoted primary cannot accept jobs
 * its successor never sees). Every process is started through own-services.ts, so
 * `stopOwnServices()` kills them by pid.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ownFolder, spawnOwn } from './own-services.js';
import { exited, freePort, waitFor } from './processes.js';

export const MASTER_NAME = 'mymaster';

/** redis-sentinel, or redis-server in sentinel mode (the same program: some packages ship only redis-server). */
function sentinelProgram(conf: string): { cmd: string; args: string[] } {
  const has = (cmd: string) => {
    try {
      execFileSync('which', [cmd], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  if (has('redis-sentinel')) return { cmd: 'redis-sentinel', args: [conf] };
  if (has('redis-server')) return { cmd: 'redis-server', args: [conf, '--sentinel'] };
  throw new Error('Redis Sentinel is not installed: neither redis-sentinel nor redis-server is on PATH (install redis-sentinel)');
}

/** One short-lived connection to a node or sentinel: never left open. */
async function ask<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 2_000, enableReadyCheck: false });
  r.on('error', () => undefined);
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

const fieldOf = (info: string, name: string) => new RegExp(`^${name}:(.*)\\r?$`, 'm').exec(info)?.[1]?.trim();
const pairs = (flat: string[]) => Object.fromEntries(flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1]]] : [])));

interface Node {
  port: number;
  proc?: ChildProcess;
  conf: string;
}

export interface OwnSentinelGroup {
  /** The sentinels' addresses. */
  sentinels: { host: string; port: number }[];
  /** REDIS_URL and the sentinel variables for meshq's configuration. */
  env: Record<string, string>;
  /** Ports of the two data nodes. */
  nodePorts: number[];
  /** The primary's port as every sentinel says it (waits until they agree). */
  primaryPort(): Promise<number>;
  /** SENTINEL FAILOVER, then waits until the sentinels name the replica and the old primary replicates from it. */
  failover(): Promise<{ from: number; to: number }>;
  /** Kills a data node by its pid (SIGKILL, no shutdown). */
  kill(port: number): Promise<void>;
  /** Starts a killed data node again on its port, folder and (sentinel-rewritten) config file. */
  restart(port: number): Promise<void>;
  /** Waits until there is one primary that every sentinel names, with its replica connected and caught up. */
  settled(): Promise<number>;
}

export async function startOwnSentinelGroup(): Promise<OwnSentinelGroup> {
  const nodes = new Map<number, Node>();
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    const dir = ownFolder(`meshq-sentinel-node-${i}-`);
    const conf = join(dir, 'redis.conf');
    // In a file, not on the command line: the sentinels rewrite it (CONFIG REWRITE) when
    // they reconfigure the node, and a restarted node must come back as what they made it.
    const lines = [
      `port ${port}`,
      'bind 127.0.0.1',
      'daemonize no',
      `dir ${dir}`,
      'save ""',
      'appendonly yes',
      'appendfsync always',
      'min-replicas-to-write 1',
      'min-replicas-max-lag 10',
      // A replica that reconnects gets its copy at once, not after the default 5 s wait.
      'repl-diskless-sync-delay 0',
      `logfile ${join(dir, 'redis.log')}`,
      ...(i === 1 ? [`replicaof 127.0.0.1 ${[...nodes.keys()][0]}`] : []),
    ];
    writeFileSync(conf, lines.join('\n') + '\n');
    nodes.set(port, { port, conf });
  }
  const [firstPort, secondPort] = [...nodes.keys()] as [number, number];

  const startNode = async (node: Node) => {
    node.proc = spawnOwn('redis-server', [node.conf]);
    const proc = node.proc;
    await waitFor(`redis node on ${node.port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`redis-server on ${node.port} exited (${proc.exitCode})`);
      return ask(node.port, async (r) => (await r.ping()) === 'PONG').catch(() => false);
    }, 20_000);
  };
  for (const node of nodes.values()) await startNode(node);

  const sentinels: { host: string; port: number }[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const dir = ownFolder(`meshq-sentinel-${i}-`);
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        'daemonize no',
        `dir ${dir}`,
        `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${firstPort} 2`,
        `sentinel down-after-milliseconds ${MASTER_NAME} 2000`,
        `sentinel failover-timeout ${MASTER_NAME} 10000`,
        `logfile ${join(dir, 'sentinel.log')}`,
      ].join('\n') + '\n',
    );
    const program = sentinelProgram(conf);
    const proc = spawnOwn(program.cmd, program.args);
    await waitFor(`sentinel on ${port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`${program.cmd} on ${port} exited (${proc.exitCode})`);
      return ask(port, async (r) => (await r.ping()) === 'PONG').catch(() => false);
    }, 20_000);
    sentinels.push({ host: '127.0.0.1', port });
  }

  const namedPrimary = async (): Promise<number | undefined> => {
    const named = await Promise.all(
      sentinels.map((s) => ask(s.port, async (r) => (await r.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME)) as [string, string] | null).catch(() => null)),
    );
    const ports = new Set(named.map((a) => (a ? Number(a[1]) : NaN)));
    return ports.size === 1 && !ports.has(NaN) ? [...ports][0] : undefined;
  };

  /** One primary named by all, its replica linked and caught up, and every sentinel knowing the two others and the replica. */
  const settled = () =>
    waitFor('the sentinel group to settle', async () => {
      const primary = await namedPrimary();
      if (primary === undefined) return false;
      const replica = primary === firstPort ? secondPort : firstPort;
      try {
        const [pInfo, rInfo] = await Promise.all([ask(primary, (r) => r.info('replication')), ask(replica, (r) => r.info('replication'))]);
        if (fieldOf(pInfo, 'role') !== 'master' || fieldOf(rInfo, 'role') !== 'slave') return false;
        if (fieldOf(rInfo, 'master_port') !== String(primary) || fieldOf(rInfo, 'master_link_status') !== 'up') return false;
        if (fieldOf(pInfo, 'connected_slaves') !== '1') return false;
        const known = await Promise.all(
          sentinels.map((s) =>
            ask(s.port, async (r) => {
              const others = (await r.call('SENTINEL', 'SENTINELS', MASTER_NAME)) as string[][];
              const replicas = ((await r.call('SENTINEL', 'REPLICAS', MASTER_NAME)) as string[][]).map(pairs);
              return others.length === 2 && replicas.some((x) => x.port === String(replica) && x.flags === 'slave' && x['master-link-status'] === 'ok');
            }),
          ),
        );
        return known.every(Boolean) ? primary : false;
      } catch {
        return false;
      }
    }, 60_000, 200);

  await settled();

  const primaryPort = () => waitFor('the sentinels to agree on the primary', namedPrimary, 30_000, 100);
  return {
    sentinels,
    env: {
      // With sentinels, REDIS_URL's host and port are not used: the sentinels name the primary.
      REDIS_URL: `redis://${MASTER_NAME}`,
      REDIS_SENTINELS: sentinels.map((s) => `${s.host}:${s.port}`).join(','),
      REDIS_SENTINEL_NAME: MASTER_NAME,
    },
    nodePorts: [firstPort, secondPort],
    primaryPort,
    settled,
    async failover() {
      const from = await primaryPort();
      const answer = await ask(sentinels[0]!.port, (r) => r.call('SENTINEL', 'FAILOVER', MASTER_NAME));
      if (answer !== 'OK') throw new Error(`SENTINEL FAILOVER answered ${String(answer)}`);
      const to = await waitFor('the sentinels to name the new primary', async () => {
        const p = await namedPrimary();
        return p !== undefined && p !== from ? p : undefined;
      }, 60_000, 100);
      return { from, to };
    },
    async kill(port) {
      const node = nodes.get(port)!;
      const proc = node.proc;
      node.proc = undefined;
      if (!proc) return;
      proc.kill('SIGKILL');
      await exited(proc);
    },
    async restart(port) {
      await startNode(nodes.get(port)!);
    },
  };
}
