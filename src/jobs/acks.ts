/**
 * Agents' acknowledgements (`{"revision": n}` on `meshq/<configId>/<nodeId>/config/applied`)
 * become the nodes' applied revision and time (node_sync). Not a job per acknowledgement:
 * a revision applied is the agent's report, not a change anyone asked for, so it gets no
 * ledger or audit row. Acknowledgements are buffered for a short window and written in
 * one small transaction, so a thousand agents answering a mesh-wide push cost a few
 * writes. Each worker process receives every acknowledgement; writing one twice is
 * harmless (the second is older than or equal to the recorded one and changes nothing).
 *
 * One for a revision meshq never issued (higher than the node's desired revision, or a
 * node without any) and one older than the recorded one are ignored and logged.
 */
import type { Logger } from 'pino';
import type { UnitOfWork } from '../db/unit-of-work.js';
import { createRepositories } from '../repositories/index.js';
import type { AppliedAck, IgnoredAck } from '../repositories/node-sync.js';

export const DEFAULT_ACK_WINDOW_MS = 200;
/** Beyond this many buffered acknowledgements a flush starts at once. */
const MAX_BUFFERED = 5_000;
/** At most this many ignored acknowledgements named per log line. */
const LOGGED_IGNORED = 20;

export class AppliedRecorder {
  private buffer: AppliedAck[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: {
      uow: UnitOfWork;
      serverKey: Buffer;
      log: Logger;
      /** Told the acknowledgements that were recorded, after commit (the events stream). */
      onRecorded?: (acks: AppliedAck[], at: Date) => Promise<unknown>;
    },
    private readonly windowMs = DEFAULT_ACK_WINDOW_MS,
  ) {}

  /** Buffers one acknowledgement; never throws. */
  push(ack: AppliedAck): void {
    this.buffer.push({ nodeId: ack.nodeId, revision: ack.revision });
    if (this.buffer.length >= MAX_BUFFERED) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.windowMs);
  }

  /** Writes what is buffered (one after the other: a flush never overlaps the previous one). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const acks = this.buffer;
    this.buffer = [];
    if (acks.length === 0) return this.flushing;
    this.flushing = this.flushing.then(() => this.write(acks));
    return this.flushing;
  }

  private async write(acks: AppliedAck[]): Promise<void> {
    const at = new Date();
    try {
      const outcome = await this.deps.uow.write((em) => createRepositories(em, { serverKey: this.deps.serverKey }).nodeSync.recordApplied(acks, at));
      if (outcome.ignored.length > 0) logIgnored(this.deps.log, outcome.ignored);
      if (outcome.recorded > 0) this.deps.log.debug({ recorded: outcome.recorded }, 'config acknowledgements recorded');
      if (outcome.recorded > 0 && this.deps.onRecorded) {
        await this.deps.onRecorded(recordedOf(acks, outcome.ignored), at).catch((err: unknown) => this.deps.log.warn({ err }, 'publishing acknowledgement events failed'));
      }
    } catch (err) {
      // The agent's next acknowledgement (of this revision or a later one) records it.
      this.deps.log.warn({ err, acknowledgements: acks.length }, 'recording config acknowledgements failed');
    }
  }
}

/** The acknowledgements not ignored (ignored ones are counted off, so a repeated ack is recorded once). */
function recordedOf(acks: AppliedAck[], ignored: IgnoredAck[]): AppliedAck[] {
  const skip = new Map<string, number>();
  for (const i of ignored) skip.set(`${i.nodeId}:${i.revision}`, (skip.get(`${i.nodeId}:${i.revision}`) ?? 0) + 1);
  return acks.filter((a) => {
    const key = `${a.nodeId}:${a.revision}`;
    const n = skip.get(key) ?? 0;
    if (n === 0) return true;
    skip.set(key, n - 1);
    return false;
  });
}

function logIgnored(log: Logger, ignored: IgnoredAck[]): void {
  log.warn(
    { ignored: ignored.length, acknowledgements: ignored.slice(0, LOGGED_IGNORED) },
    'config acknowledgements ignored (a revision never issued, or older than the one recorded)',
  );
}
