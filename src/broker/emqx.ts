/**
 * The EMQX management client as meshq configures it, from the validated config.
 */
import type { Config } from '../config.js';
import { EmqxClient, type EmqxClientConfig, type EmqxLogger } from './emqx-client.js';

export type EmqxClientTuning = Pick<EmqxClientConfig, 'timeoutMs' | 'retries' | 'minBackoffMs' | 'maxBackoffMs'>;

/**
 * For the sync job. Its calls run inside the job's write transaction (on SQLite that is
 * the process's one writer), so the in-call retry budget stays small: a blip is ridden
 * out here, an outage fails the job fast and the job's own capped backoff and the
 * scheduled reconcile take over.
 */
export const SYNC_CLIENT_TUNING: EmqxClientTuning = { timeoutMs: 10_000, retries: 2, minBackoffMs: 200, maxBackoffMs: 1_000 };

/**
 * For the deny-by-default check before a push: like the sync, it runs inside a job's
 * transaction, so one quick retry at most; an outage fails the push, which retries.
 */
export const CHECK_CLIENT_TUNING: EmqxClientTuning = { timeoutMs: 5_000, retries: 1, minBackoffMs: 200, maxBackoffMs: 200 };

/** For the status endpoint: one quick probe, no retries. */
export const PROBE_CLIENT_TUNING: EmqxClientTuning = { timeoutMs: 2_000, retries: 0 };

export function createEmqxClient(config: Pick<Config, 'emqx'>, tuning: EmqxClientTuning, logger?: EmqxLogger): EmqxClient {
  const { apiUrl, apiKey, apiSecret } = config.emqx;
  // loadConfig already refuses MQTT_ENABLED=true without them; this guards other callers.
  if (!apiKey || !apiSecret) throw new Error('EMQX_API_KEY and EMQX_API_SECRET are required to talk to EMQX');
  return new EmqxClient({ baseUrl: apiUrl, apiKey, apiSecret, ...tuning, ...(logger ? { logger } : {}) });
}
