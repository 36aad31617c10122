import type { FilterQuery } from '@mikro-orm/core';
import { isUuid } from '../db/ids.js';
import { databaseKindOf, type Em } from '../db/orm.js';
import { findRows, rowsOf } from '../db/rows.js';
import { afterPositionSql, type LogPosition, POSTGRES_HORIZON_SQL } from '../events/reader.js';
import { ValidationError } from './errors.js';

/** Page size when the caller gives none. */
export const DEFAULT_PAGE_SIZE = 20;
/** The largest page a caller may ask for. */
export const MAX_PAGE_SIZE = 100;

/** Forward pagination: `after` is the id of the last item already seen. */
export interface PageArgs {
  first?: number | null;
  after?: string | null;
}

export interface Page<T> {
  items: T[];
  hasNextPage: boolean;
  /** Counts everything the filter matches, before paging. */
  totalCount: () => Promise<number>;
}

export function pageSize(first: number | null | undefined): number {
  if (first === null || first === undefined) return DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(first) || first < 0 || first > MAX_PAGE_SIZE) {
    throw new ValidationError(`first must be between 0 and ${MAX_PAGE_SIZE}`, 'first');
  }
  return first;
}

/**
 * A page ordered by id (ids are time-ordered UUIDs, so this is creation order). The
 * filter always applies, so a hand-made `after` only moves the starting point. A filter with
 * raw SQL fragments is given as a function: each fragment may be used in one query only.
 */
export async function keysetPage<T extends { id: string }>(
  em: Em,
  entity: new (...args: never[]) => T,
  filterOf: FilterQuery<T> | (() => FilterQuery<T>),
  args: PageArgs,
): Promise<Page<T>> {
  const whereOf = (): FilterQuery<T> =>
    typeof filterOf === 'function' ? (filterOf as () => FilterQuery<T>)() : filterOf;
  const where = whereOf();
  const size = pageSize(args.first);
  if (args.after !== null && args.after !== undefined && !isUuid(args.after)) {
    throw new ValidationError('after is not a valid cursor', 'after');
  }
  const filter = (args.after ? { $and: [where, { id: { $gt: args.after } }] } : where) as FilterQuery<T>;
  // A page is a read-only answer: rows without the unit of work (see findRows).
  const rows =
    size === 0 ? [] : await findRows(em, entity, filter, { orderBy: { id: 'asc' } as never, limit: size + 1 });
  return {
    items: rows.slice(0, size),
    hasNextPage: rows.length > size,
    totalCount: () => em.count(entity, whereOf()),
  };
}

/** Forward pagination in event-log order: `after` is the log position of the last item already seen. */
export interface PositionPageArgs {
  first?: number | null;
  after?: LogPosition | null;
}

/** The two columns (and properties) that hold an entity's log position, e.g. an event's own. */
export interface PositionColumns {
  txColumn: string;
  idColumn: string;
  txProperty: string;
  idProperty: string;
}

/**
 * A page in event-log order (transaction id, then id), which is commit order: only rows of
 * transactions below the horizon (every older transaction has ended, see events/reader.ts) are
 * shown, so a row that commits later always lies after a cursor already handed out and a reader
 * paging on can never skip it. The cost: a row stays invisible while an older transaction runs.
 */
export async function positionPage<T extends object>(
  em: Em,
  entity: new (...args: never[]) => T,
  where: FilterQuery<T>,
  columns: PositionColumns,
  args: PositionPageArgs,
): Promise<Page<T>> {
  const size = pageSize(args.first);
  const rows = size === 0 ? [] : await positionRows(em, entity, where, columns, args.after ?? null, size + 1);
  return {
    items: rows.slice(0, size),
    hasNextPage: rows.length > size,
    totalCount: () => em.count(entity, where),
  };
}

async function positionRows<T extends object>(
  em: Em,
  entity: new (...args: never[]) => T,
  where: FilterQuery<T>,
  columns: PositionColumns,
  after: LogPosition | null,
  limit: number,
): Promise<T[]> {
  const qb = em.createQueryBuilder(entity, 'p').where(where);
  const position = `p.${columns.txColumn}, p.${columns.idColumn}`;
  if (after !== null) {
    const start = afterPositionSql(em, position, after);
    qb.andWhere(start.sql, start.params);
  }
  if (databaseKindOf(em) === 'postgres') qb.andWhere(`p.${columns.txColumn} < ${POSTGRES_HORIZON_SQL}`);
  qb.orderBy({ [columns.txProperty]: 'asc', [columns.idProperty]: 'asc' } as never).limit(limit);
  // A page is a read-only answer: rows without the unit of work (see findRows).
  return rowsOf(em, entity, qb);
}
