/**
 * What the API is handed at start (src/bin/bootstrap.ts builds it): configuration, the
 * logger, the database, the queues and the server key.
 */
import type { Telemetry } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Orm } from '../db/orm.js';
import type { UnitOfWork } from '../db/unit-of-work.js';
import type { JobQueues } from '../jobs/queue-client.js';

export interface AppContext {
  config: Config;
  log: Logger;
  orm: Orm;
  uow: UnitOfWork;
  queues: JobQueues;
  serverKey: Buffer;
  /** BullMQ's telemetry when tracing is on (src/bin/telemetry.ts); absent: untraced. */
  jobTelemetry?: Telemetry;
  close(): Promise<void>;
}
