import { LockMode } from '@mikro-orm/core';
import { databaseKindOf, type Em } from '../db/orm.js';

/**
 * Row locks and raw statements inside the caller's transaction. On Postgres a row is locked
 * with SELECT … FOR UPDATE; SQLite serialises writers (one connection per process, and a
 * write transaction per database), so there the lock is the transaction itself.
 */

export type LockedTable = 'tenants' | 'sandboxes' | 'workers';

export async function lockRow(em: Em, table: LockedTable, id: string): Promise<boolean> {
  if (databaseKindOf(em) !== 'postgres') return true;
  const rows = await runSql<{ id: string }[]>(em, `select id from ${table} where id = ? for update`, [id]);
  return rows.length > 0;
}

/** Options for em.findOne that lock the row on Postgres and always re-read it. */
export function lockedRead(em: Em): { refresh: true; lockMode?: LockMode } {
  return databaseKindOf(em) === 'postgres'
    ? { refresh: true, lockMode: LockMode.PESSIMISTIC_WRITE }
    : { refresh: true };
}

/** A raw statement in the caller's transaction (or outside one). */
export async function runSql<T>(em: Em, sql: string, params: unknown[], method: 'all' | 'run' = 'all'): Promise<T> {
  return (await em.getConnection().execute(sql, params as never[], method, em.getTransactionContext())) as T;
}

/** Rows changed by a `run` statement, on either driver. */
export async function runUpdate(em: Em, sql: string, params: unknown[]): Promise<number> {
  const result = await runSql<{ affectedRows?: number; changes?: number }>(em, sql, params, 'run');
  return Number(result.affectedRows ?? result.changes ?? 0);
}
