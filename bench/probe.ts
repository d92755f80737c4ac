/**
 * One timed request, shared by the benchmarks' own loops (bench/support.ts) and the prober
 * process (bench/probe-child.ts), which must not load the rest of the benchmark support.
 */

export interface ProbeSample {
  /** When the probe was sent (Date.now()). */
  at: number;
  ms: number;
}

/** One request's latency in ms; `anyStatus`: an answer of any status counts (a 503 from /readyz is an answer). */
export async function probe(url: string, anyStatus = false): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  await res.arrayBuffer();
  if (!res.ok && !anyStatus) throw new Error(`${url}: ${res.status}`);
  return performance.now() - t0;
}
