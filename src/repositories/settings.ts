import type { Em } from '../db/orm.js';
import { pageLimit, toPage, type Page, type PageRequest } from '../domain/paging.js';
import { Setting } from '../domain/entities/settings.js';

interface SettingView {
  key: string;
  value: unknown;
  updatedAt: string;
}

const settingView = (s: Setting): SettingView => ({
  key: s.key,
  value: s.value,
  updatedAt: s.updatedAt.toISOString(),
});

export class SettingsRepository {
  constructor(private readonly em: Em) {}

  /**
   * One upsert per key (settings.update carries at most 100). A JSON `null` removes the
   * key: the column cannot hold SQL NULL, and "no value" is what a null setting means.
   */
  async setMany(values: Record<string, unknown>): Promise<string[]> {
    const keys = Object.keys(values).sort();
    const updatedAt = new Date();
    const removed = keys.filter((k) => values[k] === null || values[k] === undefined);
    if (removed.length > 0) await this.em.nativeDelete(Setting, { key: { $in: removed } });
    for (const key of keys) {
      if (!removed.includes(key)) await this.em.upsert(Setting, { key, value: values[key], updatedAt });
    }
    return keys;
  }

  async get(key: string): Promise<SettingView | undefined> {
    const row = await this.em.findOne(Setting, { key });
    return row ? settingView(row) : undefined;
  }

  async value<T>(key: string): Promise<T | undefined> {
    return (await this.get(key))?.value as T | undefined;
  }

  /** Ordered by key; the cursor is the last key of the previous page. */
  async list(req: PageRequest = {}): Promise<Page<SettingView>> {
    const limit = pageLimit(req);
    const where = req.cursor ? { key: { $gt: req.cursor } } : {};
    const rows = await this.em.find(Setting, where, { orderBy: { key: 'asc' }, limit: limit + 1 });
    return toPage(rows, limit, (r) => r.key, settingView);
  }
}
