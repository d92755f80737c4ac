/**
 * Broker sync benchmark (issue 5): a full reconcile of 10,000 credentials against the
 * EMQX contract double, from an empty EMQX, then the run that finds nothing to do. Time
 * and HTTP requests of each, on SQLite and PostgreSQL. The request count is the figure
 * that travels: it must grow with chunks (n / 1000), not with users.
 */
import { pino } from 'pino';
import type { Dialect } from '../src/config.js';
import { connectOrm } from '../src/db/orm.js';
import { migrateUnderLock } from '../src/db/migrate.js';
import { UnitOfWork } from '../src/db/unit-of-work.js';
import { parseServerKey } from '../src/crypto.js';
import { seedDynamicNodes } from '../test/support/broker-data.js';
import { startEmqxDouble } from '../test/support/emqx-double.js';
import { benchDatabase, directRunner, record, seconds } from './support.js';

const USERS = Number(process.env.BENCH_BROKER_USERS ?? 10_000);

async function benchDialect(dialect: Dialect): Promise<void> {
  const double = await startEmqxDouble();
  const db = await benchDatabase(dialect, {
    MQTT_ENABLED: 'true',
    EMQX_API_URL: double.url,
    EMQX_API_KEY: double.apiKey,
    EMQX_API_SECRET: double.apiSecret,
  });
  const orm = await connectOrm(db.config);
  try {
    await migrateUnderLock(orm, db.config);
    const uow = new UnitOfWork(orm, db.config.dialect);
    // Through the real runner: the transaction, ledger and bookkeeping are part of the cost.
    const run = directRunner({ uow, config: db.config, log: pino({ level: 'silent' }), serverKey: parseServerKey(db.config.secretKey) });

    const { id: configId } = await run('config.create', { name: 'bench', subnet: '10.64.0.0/16' });
    await seedDynamicNodes(uow, configId, USERS);

    const measure = async (label: string, target: { requests: string; writes: string }) => {
      const before = double.requests.length;
      const writesBefore = double.writeRequests();
      const start = process.hrtime.bigint();
      await run('broker.sync', { reason: 'bench' });
      const ms = seconds(start) * 1000;
      const name = `broker sync ${USERS.toLocaleString('en-US')} users ${label} (${dialect})`;
      record({ name: `${name}: time`, value: ms, unit: 'ms' });
      record({ name: `${name}: HTTP requests`, value: double.requests.length - before, unit: 'requests', target: target.requests });
      record({ name: `${name}: of which writes`, value: double.writeRequests() - writesBefore, unit: 'requests', target: target.writes });
    };
    // Status probe, one page each of users and rules, then one request per chunk of
    // rule sets and of imports; a second run only reads (status + every page).
    const chunks = Math.ceil(USERS / 1000);
    await measure('from empty', { requests: `${2 * chunks + 3} (chunks, not users)`, writes: `${2 * chunks}` });
    await measure('nothing changed', { requests: `${2 * chunks + 1} (reads only)`, writes: '0' });
  } finally {
    await orm.close(true);
    await db.drop();
    await double.close();
  }
}

export async function benchBroker(): Promise<void> {
  console.error(`broker sync: ${USERS} credentials against the EMQX double`);
  for (const dialect of ['sqlite', 'postgresql'] as const) await benchDialect(dialect);
}
