import type { JobContext } from '../context.js';
import type { SettingsUpdate } from '../payloads.js';

/**
 * The audit record names the keys, not the values: settings are free-form JSON and may
 * hold something sensitive (a webhook URL with a token in it), which the log must not copy.
 */
export async function updateSettings(data: SettingsUpdate, ctx: JobContext): Promise<{ keys: string[] }> {
  const keys = await ctx.repos.settings.setMany(data.values);
  const removed = keys.filter((k) => data.values[k] === null);
  ctx.repos.audit.record({
    actor: ctx.actor,
    action: 'settings.update',
    entityType: 'setting',
    entityId: null,
    detail: { keys, ...(removed.length > 0 ? { removed } : {}) },
  });
  return { keys };
}
