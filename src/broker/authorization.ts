/**
 * Is EMQX safe to publish a private key through? A config push carries the node's own
 * WireGuard private key on `meshq/<configId>/<nodeId>/config/push`, and meshq's per-node
 * rules only say what each node may do. Whether everything else is refused is EMQX's
 * global configuration, which meshq does not own, so it is checked before such a push:
 *
 * - authorization must deny by default (`no_match = deny`): a request no source has a
 *   rule for is refused, not allowed;
 * - the built-in-database source (where meshq writes the per-node rules) must be enabled
 *   and the first enabled source: EMQX asks sources in order and the first allow or deny
 *   wins, so a `file` source in front of it (stock EMQX ships one that allows much) or an
 *   HTTP or database source could allow a node what meshq's rules deny.
 */
import type { EmqxAuthorizationSettings, EmqxAuthorizationSource, EmqxClient } from './emqx-client.js';

export const BUILT_IN_DATABASE_SOURCE = 'built_in_database';

export type AuthorizationVerdict = { ok: true } | { ok: false; reason: string };

/** The rule itself: pure, so every configuration is a unit test. */
export function judgeAuthorization(settings: EmqxAuthorizationSettings, sources: readonly EmqxAuthorizationSource[]): AuthorizationVerdict {
  if (settings.noMatch !== 'deny') {
    return { ok: false, reason: `EMQX authorization allows by default (no_match = "${settings.noMatch}"); set authorization.no_match = deny` };
  }
  const enabled = sources.filter((s) => s.enable);
  const first = enabled[0];
  if (!enabled.some((s) => s.type === BUILT_IN_DATABASE_SOURCE)) {
    return { ok: false, reason: `the EMQX authorization source "${BUILT_IN_DATABASE_SOURCE}" is not enabled, so meshq's per-node rules are not applied` };
  }
  if (first?.type !== BUILT_IN_DATABASE_SOURCE) {
    return {
      ok: false,
      reason: `the EMQX authorization source "${first?.type}" is consulted before "${BUILT_IN_DATABASE_SOURCE}" and may allow node users what meshq's rules deny; move "${BUILT_IN_DATABASE_SOURCE}" first or disable the others`,
    };
  }
  return { ok: true };
}

/** Asks EMQX (two GETs). EMQX errors propagate: "cannot tell" is not "insecure". */
export async function checkAuthorization(client: EmqxClient): Promise<AuthorizationVerdict> {
  const [settings, sources] = await Promise.all([client.authorizationSettings(), client.authorizationSources()]);
  return judgeAuthorization(settings, sources);
}

export const AUTHORIZATION_VERDICT_TTL_MS = 60_000;

/**
 * Remembers a good verdict for `ttlMs` per EMQX API URL, so pushes do not ask EMQX each
 * time: EMQX being made insecure is noticed within that time. A bad verdict is not
 * remembered: the pushes it fails do not retry, and fixing EMQX takes effect at once.
 */
export class AuthorizationVerdicts {
  private readonly okUntil = new Map<string, number>();

  constructor(private readonly ttlMs = AUTHORIZATION_VERDICT_TTL_MS) {}

  async verdict(apiUrl: string, client: () => EmqxClient, now = Date.now()): Promise<AuthorizationVerdict> {
    const until = this.okUntil.get(apiUrl);
    if (until !== undefined && until > now) return { ok: true };
    const verdict = await checkAuthorization(client());
    if (verdict.ok) this.okUntil.set(apiUrl, now + this.ttlMs);
    else this.okUntil.delete(apiUrl);
    return verdict;
  }
}
