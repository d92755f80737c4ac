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
 * (until then another connection's commit, the API's write probe in `npm start`, would run
 * the whole checkpoint itself, on its own loop).
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
