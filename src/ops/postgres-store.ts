import pg from 'pg';
import { StoreOperationError } from './store-errors.js';
import type { Query } from './store-tables.js';

/**
 * Postgres-side steps of restore and migrate-store: a plain client (one session, so one
 * transaction spans every statement), typed inserts from portable rows, sequences and the
 * transaction-id counter that event positions are built from.
 */

/** The event log's table and the column holding the writing transaction's id (src/events/reader.ts). */
export const EVENTS_TABLE = 'events';
export const EVENT_TX_COLUMN = 'tx_id';

/**
 * The most transaction ids restore will burn to move a cluster's counter past the newest copied
 * event (about a minute's work); beyond it the operator is asked to restore into a cluster that has
 * already run at least as many transactions (see docs/operations.md).
 */
export const MAX_TRANSACTION_ID_ADVANCE = 5_000_000n;

export async function connectPostgres(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

export function postgresQuery(client: pg.Client): Query {
  return async (sql, params) => (await client.query(sql, params as unknown[])).rows as Record<string, unknown>[];
}

/** Inserts portable rows (src/ops/store-tables.ts) into a table; Postgres converts each field to its column's type. */
export async function insertPortableRows(query: Query, table: string, rows: Record<string, unknown>[]): Promise<void> {
  if (rows.length === 0) return;
  await query(`insert into "${table}" select * from json_populate_recordset(null::"${table}", $1::json)`, [
    JSON.stringify(rows),
  ]);
}

/** The columns filled from a sequence (serial / identity), as `table.column`. */
export async function sequenceColumns(query: Query, tables: readonly string[]): Promise<string[]> {
  const rows = await query(
    `select table_name as "table", column_name as "column" from information_schema.columns
     where table_schema = current_schema() and table_name = any($1) and column_default like 'nextval(%'
     order by table_name, column_name`,
    [tables],
  );
  return rows.map((r) => `${String(r.table)}.${String(r.column)}`);
}

/** How far each sequence has handed out values (ids burned by rolled-back transactions included). */
export async function sequenceHighWater(query: Query, tables: readonly string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const key of await sequenceColumns(query, tables)) {
    const [table, column] = key.split('.');
    const seq = await query('select pg_get_serial_sequence($1, $2) as "name"', [`"${table}"`, column]);
    const rows = await query(`select case when is_called then last_value else 0 end as "value" from ${seq[0].name}`);
    out[key] = String(rows[0]?.value ?? 0);
  }
  return out;
}

/**
 * Sets every sequence past both the copied rows and the source's own high-water mark, so new ids
 * never collide and cursors naming a burned id of the source still count as handed out.
 */
export async function restoreSequences(
  query: Query,
  tables: readonly string[],
  highWater: Record<string, string>,
): Promise<void> {
  for (const key of await sequenceColumns(query, tables)) {
    const [table, column] = key.split('.');
    const max = await query(`select coalesce(max("${column}"), 0)::text as "value" from "${table}"`);
    const high = [BigInt(String(max[0].value)), BigInt(highWater[key] ?? '0')].reduce((a, b) => (a > b ? a : b));
    const seq = (await query('select pg_get_serial_sequence($1, $2) as "name"', [`"${table}"`, column]))[0].name;
    if (high > 0n) await query('select setval($1, $2::bigint, true)', [seq, high.toString()]);
    else await query('select setval($1, 1, false)', [seq]);
  }
}

/** The transaction id the cluster will hand out next (64-bit, epoch included, as event positions store it). */
export async function nextTransactionId(query: Query): Promise<bigint> {
  const rows = await query(`select pg_snapshot_xmax(pg_current_snapshot())::text as "next"`);
  return BigInt(String(rows[0].next));
}

/**
 * Makes sure every transaction id the cluster hands out from now on is above `newest`, the largest
 * transaction id among copied events: new events must sort after every copied one, and a copied
 * event's cursor must not look "never handed out" (resolveCursor). Transaction ids are shared by
 * every database of a cluster, so restoring into the cluster a backup was taken on needs nothing;
 * a younger cluster burns the difference, one committed transaction per id, inside one DO block.
 * Must run outside a transaction block.
 */
export async function advanceTransactionIdsPast(client: pg.Client, newest: bigint): Promise<bigint> {
  const query = postgresQuery(client);
  const gap = newest + 1n - (await nextTransactionId(query));
  if (gap <= 0n) return 0n;
  if (gap > MAX_TRANSACTION_ID_ADVANCE)
    throw new StoreOperationError(
      'UNSUPPORTED',
      `the copied events were written by transaction ids up to ${newest}, but this Postgres cluster has only reached ${newest + 1n - gap}; restore into a cluster that has run at least that many transactions (or into the cluster the backup came from)`,
    );
  await client.query(
    `do $$ begin for i in 1..${gap.toString()} loop perform pg_current_xact_id(); commit; end loop; end $$`,
  );
  return gap;
}
