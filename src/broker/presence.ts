/**
 * Presence coalescing: a node that flaps, or floods its status topic, must not become one
 * job (and one audit row) per message. Per node, the first message is passed on at once;
 * for `windowMs` after each pass the node's messages only replace a pending state (latest
 * wins), which is passed on when the window closes. So a node costs at most one event per
 * window, however much it sends, and the last state it sent always gets through.
 *
 * Every worker process runs its own coalescer on the same messages. `key` names an event
 * the same way in every process (node, state and the window the message arrived in), so
 * the processes' copies of one event can collapse into one job; a copy that slips through
 * (a window boundary between two processes) is harmless, because the processor ignores
 * events older than the recorded one and audits only changes.
 */

export interface PresenceEvent {
  nodeId: string;
  /** Known for agent statuses; null for EMQX client events. */
  configId: string | null;
  online: boolean;
  /** When the (latest coalesced) message reached this process. */
  at: Date;
  /** `<nodeId>-<online|offline>-<window>`: equal across processes for the same event. */
  key: string;
}

export type PresenceSink = (event: PresenceEvent) => void;

interface NodeWindow {
  timer: NodeJS.Timeout;
  pending?: Omit<PresenceEvent, 'key'>;
}

export const DEFAULT_PRESENCE_WINDOW_MS = 1_000;

export class PresenceCoalescer {
  private readonly windows = new Map<string, NodeWindow>();
  private closed = false;

  constructor(
    private readonly sink: PresenceSink,
    private readonly windowMs = DEFAULT_PRESENCE_WINDOW_MS,
  ) {}

  /** How many nodes are inside a window right now (tests, metrics). */
  get open(): number {
    return this.windows.size;
  }

  push(nodeId: string, configId: string | null, online: boolean, at = new Date()): void {
    if (this.closed) return;
    const event = { nodeId, configId, online, at };
    const open = this.windows.get(nodeId);
    if (open) {
      open.pending = event;
      return;
    }
    this.emit(event);
    this.windows.set(nodeId, { timer: this.startTimer(nodeId) });
  }

  /** Passes on every pending state now and stops (shutdown: the latest states are not lost). */
  flush(): void {
    this.closed = true;
    for (const [nodeId, w] of this.windows) {
      clearTimeout(w.timer);
      if (w.pending) this.emit(w.pending);
      this.windows.delete(nodeId);
    }
  }

  private startTimer(nodeId: string): NodeJS.Timeout {
    const timer = setTimeout(() => this.closeWindow(nodeId), this.windowMs);
    timer.unref();
    return timer;
  }

  private closeWindow(nodeId: string): void {
    const w = this.windows.get(nodeId);
    if (!w) return;
    if (!w.pending) {
      this.windows.delete(nodeId);
      return;
    }
    const pending = w.pending;
    delete w.pending;
    this.emit(pending);
    w.timer = this.startTimer(nodeId);
  }

  private emit(event: Omit<PresenceEvent, 'key'>): void {
    const window = Math.floor(event.at.getTime() / this.windowMs);
    this.sink({ ...event, key: `${event.nodeId}-${event.online ? 'online' : 'offline'}-${window}` });
  }
}
