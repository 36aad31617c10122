import type { EntityClass } from '@mikro-orm/core';
import DataLoader from 'dataloader';
import type { Em } from '../db/orm.js';
import { findRows } from '../db/rows.js';

/**
 * Rows by id, read once for everyone executing one event batch of live subscriptions: groups
 * with different callers share the read, and each service applies its own caller's visibility
 * to the rows in memory (the same rule its SQL filter states). Read-only; default filters (soft
 * delete) apply as in any other read.
 */
export class SharedReads {
  private readonly loaders = new Map<EntityClass<{ id: string }>, DataLoader<string, { id: string } | null>>();

  constructor(private readonly em: Em) {}

  async byIds<T extends { id: string }>(entity: EntityClass<T>, ids: readonly string[]): Promise<T[]> {
    let loader = this.loaders.get(entity);
    if (!loader) {
      loader = new DataLoader(async (keys: readonly string[]) => {
        const rows = await findRows(this.em, entity as new () => T, { id: { $in: [...keys] } } as never);
        const byId = new Map(rows.map((row) => [row.id, row]));
        return keys.map((key) => byId.get(key) ?? null);
      });
      this.loaders.set(entity, loader);
    }
    const rows = await loader.loadMany(ids);
    // A failed read is a failure for every group of the batch, never "not found".
    const failed = rows.find((row) => row instanceof Error);
    if (failed) throw failed;
    return rows.filter((row): row is T => row !== null);
  }
}
