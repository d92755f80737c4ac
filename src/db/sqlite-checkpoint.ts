/**
 * SQLite: the WAL checkpoint of a large commit, run in a thread of its own instead of by
 * the committing connection.
 *
 * In WAL mode the connection that commits a transaction which leaves the WAL longer than
 * `wal_autocheckpoint` pages checkpoints it at once: it copies every page of the WAL into
 * the database file and syncs both, inside the commit call. After a large write (a full
 * mesh.generate) that is a large WAL copied and synced inside the job, on the thread of
 * the worker's event loop, since better-sqlite3 is synchronous. A transaction that asks for it
 * (`WriteTransaction.checkpointAfterCommit`) turns the connection's automatic checkpoint
 * off for its commit; the same PASSIVE checkpoint then runs on a connection of a short-lived
 * thread, and the connection's automatic checkpoint comes back once that is done, so the
 * WAL never grows past what the jobs in between wrote. Durability is what the pragmas say
 * (`synchronous = NORMAL`, src/db/orm.ts): a commit is synced when a checkpoint syncs the
 * WAL, as for every small commit; the checkpoint only moves off the job. A checkpoint that
 * fails or finds readers in its way leaves frames for the next automatic one, as before.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';

/**
 * The thread: a connection of its own to the file, then one checkpoint when told `true`
 * (nothing when told `false`), closed. CommonJS text, so that it loads nothing but the
 * driver (given by path: an evaluated thread resolves modules from the working directory).
 */
const THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
parentPort.once('message', (go) => {
  try {
    parentPort.postMessage(go ? db.pragma('wal_checkpoint(PASSIVE)')[0] : undefined);
  } finally {
    db.close();
  }
});`;

const DRIVER = createRequire(import.meta.url).resolve('better-sqlite3');

/** What `pragma wal_checkpoint` answers: whether it was blocked, WAL frames, frames copied. */
export interface CheckpointResult {
  busy: number;
  log: number;
  checkpointed: number;
}

/**
 * A thread with a connection to the database file `file`, ready to checkpoint it once:
 * started before the commit, so that the checkpoint begins as soon as the commit is done
 * (until then another worker connection's commit would run the whole checkpoint itself,
 * on its own loop; the API's connection never does, see OffLoopCheckpoints).
 */
function checkpointThread(file: string): (go: boolean) => Promise<CheckpointResult | undefined> {
  const thread = new Worker(THREAD, { eval: true, workerData: { driver: DRIVER, file }, resourceLimits: { maxOldGenerationSizeMb: 16 } });
  const ended = new Promise<CheckpointResult | undefined>((resolve, reject) => {
    let answered = false;
    let answer: CheckpointResult | undefined;
    thread.once('message', (m: CheckpointResult | undefined) => ((answered = true), (answer = m)));
    thread.once('error', reject);
    thread.once('exit', (code) => (answered ? resolve(answer) : reject(new Error(`the checkpoint thread exited with code ${code}`))));
  });
  // Until told, an error must not go unhandled.
  ended.catch(() => undefined);
  return (go) => {
    thread.postMessage(go);
    return ended;
  };
}

/**
 * The large commits of one connection whose checkpoints run in a thread (see the file
 * comment). `hold` before such a commit, `release` after it, committed or not (the
 * connection's write transactions are serialized, so a release is always for the last
 * hold); checkpoints run one after the other, and the connection's automatic checkpoint is
 * back once none is held or running.
 */
export class DeferredCheckpoints {
  private held = 0;
  /** The connection's own wal_autocheckpoint, while held. */
  private saved: number | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private ready: ((go: boolean) => Promise<CheckpointResult | undefined>) | undefined;

  constructor(
    private readonly db: Database.Database,
    private readonly log?: Logger,
  ) {}

  hold(): void {
    if (this.held++ === 0) {
      this.saved = this.db.pragma('wal_autocheckpoint', { simple: true }) as number;
      this.db.pragma('wal_autocheckpoint = 0');
    }
    this.ready = checkpointThread(this.db.name);
  }

  /** After the held commit (or its rollback, which leaves nothing to checkpoint). */
  release(committed: boolean): Promise<void> {
    const thread = this.ready!;
    this.ready = undefined;
    this.chain = this.chain.then(() =>
      thread(committed).then(
        (result) => result && this.log?.debug({ ...result }, 'WAL checkpoint after a large commit'),
        (err: unknown) => this.log?.warn({ err }, 'WAL checkpoint after a large commit failed; the automatic checkpoint will do it'),
      ),
    );
    return this.chain.then(() => {
      if (--this.held === 0 && this.db.open) this.db.pragma(`wal_autocheckpoint = ${this.saved}`);
    });
  }
}

/** How often a connection whose checkpoints run off its loop looks at the WAL. */
const OFF_LOOP_EVERY_MS = 5_000;

/**
 * SQLite, the connection of a process that answers HTTP (the API: `npm run api`, and the
 * main thread of `npm start`): it never checkpoints the WAL on its own loop. With SQLite's
 * automatic checkpoint, the commit that finds the WAL past `wal_autocheckpoint` pages
 * copies all of it into the database file inside the commit call, and better-sqlite3 runs
 * that on the calling thread. The API commits small writes (the readiness probe's, an
 * upload's staging), but whichever commit comes first after a large one elsewhere (a job's
 * whose thread checkpoint found a reader in its way and left frames, or one in the moment
 * before that thread starts) inherits the large one's checkpoint, and `/healthz` waits
 * behind it (the scale bench caught it, docs/benchmarks.md). So the connection's
 * automatic checkpoint is off, and every OFF_LOOP_EVERY_MS it reads how many
 * frames the WAL holds that no checkpoint has copied (`wal_checkpoint(NOOP)`: it reads
 * the WAL index and copies nothing); at the same threshold as the automatic checkpoint it
 * had, a PASSIVE checkpoint runs in a short-lived thread (checkpointThread), one at a
 * time. The workers' connections keep their automatic checkpoint (on the workers' loop),
 * so in `npm start` the jobs' commits keep doing most of it, as before.
 */
export class OffLoopCheckpoints {
  private readonly threshold: number;
  private readonly timer: NodeJS.Timeout;
  private running: Promise<void> | undefined;

  constructor(
    private readonly db: Database.Database,
    private readonly log?: Logger,
    everyMs = OFF_LOOP_EVERY_MS,
  ) {
    this.threshold = Math.max(1, this.db.pragma('wal_autocheckpoint', { simple: true }) as number);
    this.db.pragma('wal_autocheckpoint = 0');
    this.timer = setInterval(() => this.look(), everyMs).unref();
  }

  /** Frames in the WAL that no checkpoint has copied yet; undefined when it cannot say now. */
  private pending(): number | undefined {
    // Inside a transaction of this connection (a write in progress), wait for the next look.
    if (!this.db.open || this.db.inTransaction) return undefined;
    try {
      const [r] = this.db.pragma('wal_checkpoint(NOOP)') as CheckpointResult[];
      return r && r.busy === 0 ? r.log - r.checkpointed : undefined;
    } catch (err) {
      // Called from a timer: a throw would end the process. The next look asks again.
      this.log?.warn({ err }, 'could not read the WAL size; the next look asks again');
      return undefined;
    }
  }

  private look(): void {
    if (this.running) return;
    const pending = this.pending();
    if (pending === undefined || pending < this.threshold) return;
    this.running = checkpointThread(this.db.name)(true)
      .then(
        (result) => result && this.log?.debug({ ...result }, 'WAL checkpoint off the loop'),
        (err: unknown) => this.log?.warn({ err }, 'WAL checkpoint off the loop failed; the next look tries again'),
      )
      .finally(() => (this.running = undefined));
  }

  /** Stops looking; resolves once a checkpoint under way has ended. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
