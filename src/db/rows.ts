import { type EntityMetadata, type FilterQuery, type QueryOrderMap, ReferenceKind } from '@mikro-orm/core';
import type { Em } from './orm.js';

/** A many-to-one relation of a read-only row: only the referenced id is known. */
export interface RowReference {
  readonly id: string;
}

interface RowQuery<T> {
  orderBy?: QueryOrderMap<T>;
  limit?: number;
  /** Soft-deleted rows are left out unless false (as `em.find` does with its default filters). */
  filters?: boolean;
}

/**
 * Reads rows for a read-only answer (a list page) without the unit of work: no identity map, no
 * change-tracking snapshot and no reference entity per relation, which is most of what a
 * `find` costs per row. The SQL is the same `find` would send (the entity's default filters,
 * e.g. soft delete, apply). Each row is an instance of the entity class (so `instanceof` and
 * GraphQL type resolution hold) whose scalar properties are converted as the ORM converts them
 * and whose many-to-one relations are `{ id }` (null when unset). It is not managed: never change
 * it or hand it to `em.persist`; load the entity for a write.
 */
export async function findRows<T extends object>(
  em: Em,
  entity: new (...args: never[]) => T,
  where: FilterQuery<T>,
  query: RowQuery<T> = {},
): Promise<T[]> {
  const qb = em.createQueryBuilder<T>(entity.name).select('*').where(where);
  if (query.orderBy) qb.orderBy(query.orderBy);
  if (query.limit !== undefined) qb.limit(query.limit);
  if (query.filters !== false) await qb.applyFilters();
  return rowsOf(em, entity, qb);
}

/** As `findRows`, for a query built by hand (e.g. with SQL fragments): `select *` of the entity's table. */
export async function rowsOf<T extends object>(
  em: Em,
  entity: new (...args: never[]) => T,
  qb: { execute(method: 'all', mapResults: boolean): Promise<unknown> },
): Promise<T[]> {
  const rows = (await qb.execute('all', true)) as Record<string, unknown>[];
  const convert = converterOf(em, em.getMetadata().get<T>(entity.name));
  return rows.map((row) => convert(row) as T);
}

type Converter = (row: Record<string, unknown>) => object;
const converters = new WeakMap<EntityMetadata, Converter>();

/** One converter per entity, compiled from its metadata once: only properties that need work are visited. */
function converterOf<T>(em: Em, meta: EntityMetadata<T>): Converter {
  const known = converters.get(meta as EntityMetadata);
  if (known) return known;
  const platform = em.getPlatform();
  const steps: ((row: Record<string, unknown>) => void)[] = [];
  for (const prop of meta.props) {
    const name = prop.name as string;
    if (prop.kind === ReferenceKind.MANY_TO_ONE || prop.kind === ReferenceKind.ONE_TO_ONE) {
      if (!prop.owner && prop.kind === ReferenceKind.ONE_TO_ONE) continue;
      steps.push((row) => {
        const id = row[name];
        row[name] = id === null || id === undefined ? null : { id: String(id) };
      });
    } else if (prop.customType) {
      const type = prop.customType;
      steps.push((row) => {
        const value = row[name];
        if (value !== undefined) row[name] = type.convertToJSValue(value, platform);
      });
    }
  }
  const prototype = meta.prototype as object;
  const converter: Converter = (row) => {
    for (const step of steps) step(row);
    // Own data properties first, then the prototype: assigning onto an entity instance would run
    // the ORM's tracking setters (they build its change-tracking state, the cost this avoids).
    return Object.setPrototypeOf(row, prototype);
  };
  converters.set(meta as EntityMetadata, converter);
  return converter;
}
