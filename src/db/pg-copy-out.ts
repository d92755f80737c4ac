/**
 * `COPY … TO STDOUT` read straight off the connection's socket: each chunk the socket
 * hands over becomes one chunk of COPY text, the protocol's framing taken out in place.
 *
 * Why not pg-copy-streams' reader (which src/db/pg-copy.ts keeps for COPY FROM): the
 * server sends one CopyData message per row, and that reader makes a Buffer of every
 * message, then a zero-filled buffer per socket chunk that they are copied into, then
 * hands those on through a Readable; for the export's hundreds of thousands of rows that
 * was a large share of the worker's main thread and of its garbage (docs/architecture.md,
 * "COPY for snapshots on PostgreSQL"). Here a row costs a few byte reads and one move of
 * its bytes within the chunk it came in.
 *
 * How it takes the connection over, as pg-copy-streams does: it is a node-postgres
 * submittable; once submitted it replaces the client's `data` listener on the socket
 * (the protocol parser) with its own, and gives the socket back to that parser from the
 * message after CopyDone (CommandComplete, ReadyForQuery) or from an ErrorResponse on, so
 * that node-postgres reports the end or the error of the query as for any other. The
 * iteration ends only once the client is ready for the next query.
 */
import type { Connection, PoolClient, Submittable } from 'pg';

/** Message types (https://www.postgresql.org/docs/current/protocol-message-formats.html). */
const COPY_DATA = 0x64; // d
const COPY_DONE = 0x63; // c
const ERROR_RESPONSE = 0x45; // E

/** COPY text held for the reader before the socket is paused. */
const HIGH_WATER_BYTES = 1024 * 1024;

type DataListener = (chunk: Buffer) => void;

/**
 * The submittable itself: node-postgres calls submit() when the query's turn comes, then
 * handleCommandComplete / handleError / handleReadyForQuery from its own parser.
 */
class CopyOutQuery implements Submittable, AsyncIterable<Buffer> {
  private socket: Connection['stream'] | undefined;
  private parserListener: DataListener | undefined;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private paused = false;
  private failure: Error | undefined;
  private done = false;
  private wake: (() => void) | undefined;
  /** Framing state: header bytes still to read (0: at a message's first byte), then payload bytes left. */
  private headerLeft = 0;
  private code = 0;
  private length = 0;
  private payloadLeft = 0;
  private readonly onData = (chunk: Buffer): void => this.take(chunk);

  constructor(readonly text: string) {}

  /** An error returned (not thrown: node-postgres calls this from its queue) fails the query. */
  submit(connection: Connection): Error | undefined {
    const socket = connection.stream;
    const listeners = socket.listeners('data') as DataListener[];
    if (listeners.length !== 1) return new Error(`COPY TO: the connection has ${listeners.length} data listeners, expected its protocol parser alone`);
    this.socket = socket;
    this.parserListener = listeners[0]!;
    socket.removeListener('data', this.parserListener);
    socket.on('data', this.onData);
    connection.query(this.text);
    return undefined;
  }

  handleCommandComplete(): void {}

  handleError(err: Error): void {
    this.failure ??= err;
    this.detach(undefined);
    this.signal();
  }

  handleReadyForQuery(): void {
    this.done = true;
    this.signal();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    try {
      yield* this.chunks();
    } finally {
      if (!this.done && !this.failure) this.abandon();
    }
  }

  /**
   * A reader that stopped before the end: the rest of the COPY is still on its way, and
   * neither this reader nor node-postgres's parser can take it, so the connection is
   * ended (the client reports it as any lost connection; the export's client is then
   * discarded, src/db/pg-copy.ts).
   */
  private abandon(): void {
    const socket = this.socket;
    this.detach(undefined);
    socket?.destroy();
  }

  private async *chunks(): AsyncGenerator<Buffer> {
    for (;;) {
      if (this.failure) throw this.failure;
      const chunk = this.queue.shift();
      if (chunk) {
        this.queued -= chunk.length;
        if (this.paused && this.queued < HIGH_WATER_BYTES) {
          this.paused = false;
          this.socket?.resume();
        }
        yield chunk;
      } else if (this.done) {
        return;
      } else {
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    }
  }

  private signal(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /**
   * One socket chunk: CopyData payloads are moved to its front (the chunk is this
   * reader's alone: the socket allocates each one), other messages in between
   * (CopyOutResponse, notices) are skipped. A message cut at the chunk's end continues
   * in the next.
   */
  private take(chunk: Buffer): void {
    const end = chunk.length;
    let p = 0;
    let w = 0;
    while (p < end) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, end - p);
        if (this.code === COPY_DATA) {
          if (w !== p) chunk.copyWithin(w, p, p + n);
          w += n;
        }
        p += n;
        this.payloadLeft -= n;
        continue;
      }
      if (this.headerLeft === 0) {
        this.code = chunk[p]!;
        if (this.code === ERROR_RESPONSE) {
          // node-postgres reads the error and calls handleError.
          this.push(chunk, w);
          this.detach(chunk.subarray(p));
          return;
        }
        p++;
        this.headerLeft = 4;
        this.length = 0;
        continue;
      }
      this.length = this.length * 256 + chunk[p++]!;
      if (--this.headerLeft === 0) {
        this.payloadLeft = this.length - 4;
        if (this.payloadLeft === 0 && this.code === COPY_DONE) {
          this.push(chunk, w);
          this.detach(chunk.subarray(p));
          return;
        }
      }
    }
    this.push(chunk, w);
  }

  private push(chunk: Buffer, length: number): void {
    if (length === 0) return;
    this.queue.push(length === chunk.length ? chunk : chunk.subarray(0, length));
    this.queued += length;
    if (!this.paused && this.queued >= HIGH_WATER_BYTES) {
      this.paused = true;
      this.socket?.pause();
    }
    this.signal();
  }

  /** Gives the socket back to node-postgres's parser, with what it has not read yet. */
  private detach(rest: Buffer | undefined): void {
    const socket = this.socket;
    const parser = this.parserListener;
    if (!socket || !parser) return;
    this.socket = undefined;
    this.parserListener = undefined;
    socket.removeListener('data', this.onData);
    socket.on('data', parser);
    if (rest && rest.length > 0) parser(rest);
    // The rest (CommandComplete, ReadyForQuery) must reach the parser whatever the reader does.
    if (this.paused) {
      this.paused = false;
      socket.resume();
    }
  }
}

/** `COPY … TO STDOUT` as a stream of byte chunks (cut anywhere, not at lines). */
export function copyOutRaw(client: PoolClient, sql: string): AsyncIterable<Buffer> {
  return client.query(new CopyOutQuery(sql));
}
