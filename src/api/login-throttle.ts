/**
 * Failed administrator logins, counted per client address and over all clients with
 * @fastify/rate-limit's counters (its in-memory store: each API process counts its own
 * failures, which bounds guesses per process; several API processes multiply the budget,
 * a price paid to keep Redis out of the login path). Only failures count: the counters
 * are read, without incrementing, before a password is hashed, and incremented after a
 * wrong one. A client over either limit is answered 429 with Retry-After and costs no
 * hashing at all.
 */
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuthLimits, LoginThrottle } from './auth.js';

type Limiter = ReturnType<FastifyInstance['createRateLimit']>;

export async function createLoginThrottle(api: FastifyInstance, limits: AuthLimits): Promise<LoginThrottle> {
  // global: false: nothing is limited unless asked, so no route is throttled by this.
  await api.register(rateLimit, { global: false });
  // The default key is the client address (IPv6 grouped by /64, so one host cannot rotate
  // through its own prefix to escape the limit).
  const perClient = api.createRateLimit({ max: limits.perClient, timeWindow: limits.windowMs });
  const everyone = api.createRateLimit({ max: limits.global, timeWindow: limits.windowMs, keyGenerator: () => 'meshq-failed-logins' });

  const waitFor = async (limiter: Limiter, request: FastifyRequest, max: number): Promise<number> => {
    const state = await limiter(request, { increment: false });
    if (state.isAllowed) return 0;
    return max - state.remaining >= max ? Math.max(1, state.ttlInSeconds) : 0;
  };

  return {
    async check(request) {
      return Math.max(await waitFor(perClient, request, limits.perClient), await waitFor(everyone, request, limits.global));
    },
    async recordFailure(request) {
      await perClient(request);
      await everyone(request);
    },
  };
}
