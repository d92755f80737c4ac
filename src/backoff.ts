/**
 * The one capped exponential backoff every retry loop in meshq uses (database connect at
 * start-up, the MQTT link's reconnects, the broker sync's BullMQ strategy, EMQX calls).
 *
 *   delay(attempt) = min(cap, base * 2^(attempt - 1)), minus up to `jitter` of it at random
 *
 * The jitter only ever shortens a delay, so the cap stays a cap; it keeps several
 * processes that lost a service together from coming back in lockstep.
 */
export interface BackoffOptions {
  /** Delay before the first retry (attempt 1). */
  readonly baseMs: number;
  /** Largest delay. */
  readonly capMs: number;
  /** Fraction of the delay taken off at random, 0..1 (default 0.2). */
  readonly jitter?: number;
  /** Test seam: a source of numbers in [0, 1). */
  readonly random?: () => number;
}

/** The delay before retry number `attempt` (1 = the first retry). */
export function backoffDelay(attempt: number, opts: BackoffOptions): number {
  const full = Math.min(opts.capMs, opts.baseMs * 2 ** Math.max(0, attempt - 1));
  const jitter = opts.jitter ?? 0.2;
  return Math.round(full * (1 - jitter * (opts.random ?? Math.random)()));
}
