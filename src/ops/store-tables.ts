import { createHash } from 'node:crypto';
import { ReferenceKind } from '@mikro-orm/core';
import type { DatabaseKind } from '../config/index.js';
import type { Orm } from '../db/orm.js';

/**
 * What backup, restore and migrate-store share: the list of Flotilla's tables in an order that
 * satisfies their foreign keys, a driver-neutral ("portable") form of a row, and a checksum of a
 * table's rows that is the same on SQLite and Postgres for the same data.
 */

/** One statement's rows; `?` placeholders on SQLite, `$n` on Postgres. */
export type Query = (sql: string, params?: unknown[]) => Promise<Record<string, unknown>[]>;

export interface StoreTable {
  name: string;
  /** The single-column primary key (every Flotilla table has one); rows are read in its order. */
  primaryKey: string;
}

/** The event log's bookkeeping row is written by a migration: it does not make a database "non-empty". */
export const BOOKKEEPING_TABLES: readonly string[] = ['event_log_state'];

/** Rows read per statement when a table is copied or exported. */
export const COPY_BATCH_ROWS = 1000;

/** Every table of the ORM's entities, each after the tables its foreign keys point to. */
export function storeTables(orm: Orm): StoreTable[] {
  const metadata = orm.getMetadata();
  const metas = Object.values(metadata.getAll()).filter((m) => !m.abstract && !m.embeddable && !m.virtual);
  const byName = new Map(metas.map((m) => [m.className, m]));
  const ordered: StoreTable[] = [];
  const placed = new Set<string>();
  const visit = (className: string, path: Set<string>) => {
    const meta = byName.get(className);
    if (!meta || placed.has(meta.tableName)) return;
    if (path.has(className)) throw new Error(`foreign keys form a cycle through ${meta.tableName}`);
    path.add(className);
    for (const prop of meta.props) {
      const owning = prop.kind === ReferenceKind.MANY_TO_ONE || (prop.kind === ReferenceKind.ONE_TO_ONE && prop.owner);
      if (owning && prop.type !== className) visit(prop.type, path);
    }
    path.delete(className);
    const keys = meta.primaryKeys.map((k) => meta.properties[k]?.fieldNames?.[0] ?? String(k));
    if (keys.length !== 1) throw new Error(`${meta.tableName} has no single-column primary key`);
    ordered.push({ name: meta.tableName, primaryKey: keys[0] });
    placed.add(meta.tableName);
  };
  for (const meta of [...metas].sort((a, b) => a.tableName.localeCompare(b.tableName)))
    visit(meta.className, new Set());
  return ordered;
}

/** How a column's values are compared and carried between drivers. */
export type ColumnClass = 'timestamp' | 'json' | 'boolean' | 'integer' | 'number' | 'text';

/** The class of a declared column type, as SQLite (`pragma table_info`) or Postgres (information_schema) names it. */
export function columnClassOf(declared: string): ColumnClass {
  const type = declared.toLowerCase();
  if (/timestamp|datetime|^date/.test(type)) return 'timestamp';
  if (/json/.test(type)) return 'json';
  if (/bool/.test(type)) return 'boolean';
  if (/^(big|small)?int|integer/.test(type)) return 'integer';
  if (/real|double|numeric|decimal|float/.test(type)) return 'number';
  return 'text';
}

/** The columns of a table with their classes, in the table's own order (empty when the table does not exist). */
export async function columnsOf(query: Query, kind: DatabaseKind, table: string): Promise<Map<string, ColumnClass>> {
  const rows =
    kind === 'sqlite'
      ? await query(`select "name", "type" from pragma_table_info(?) order by "cid"`, [table])
      : await query(
          `select column_name as "name", data_type as "type" from information_schema.columns
           where table_schema = current_schema() and table_name = $1 order by ordinal_position`,
          [table],
        );
  return new Map(rows.map((r) => [String(r.name), columnClassOf(String(r.type))]));
}

/**
 * A row as plain JSON that means the same on both drivers: timestamps as ISO strings (SQLite keeps
 * epoch milliseconds), JSON columns parsed, 64-bit integers as decimal strings (they may exceed
 * 2^53), booleans as booleans. Postgres turns it back into typed columns with json_populate_recordset.
 */
export function portableRow(row: Record<string, unknown>, columns: Map<string, ColumnClass>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, cls] of columns) out[name] = portableValue(cls, row[name]);
  return out;
}

function portableValue(cls: ColumnClass, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (cls) {
    case 'timestamp': {
      const date =
        value instanceof Date
          ? value
          : new Date(typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : (value as string | number));
      if (Number.isNaN(date.getTime())) throw new Error(`not a timestamp: ${String(value)}`);
      return date.toISOString();
    }
    case 'json':
      return typeof value === 'string' ? JSON.parse(value) : value;
    case 'boolean':
      return value === true || value === 1 || value === '1' || value === 't' || value === 'true';
    case 'integer':
      return typeof value === 'bigint' ? value.toString() : String(value);
    case 'number':
      return Number(value);
    default:
      return Buffer.isBuffer(value) ? value.toString('base64') : String(value);
  }
}

/** JSON with object keys sorted at every level (Postgres' jsonb reorders keys). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value);
}

const SUM_MODULUS = 1n << 256n;

/**
 * A table's row count and checksum: the sum, modulo 2^256, of the SHA-256 of each row's
 * canonical portable form. A sum does not depend on the order rows are read in (uuid keys sort
 * differently on the two drivers), and any changed, missing or extra row changes it.
 */
export class TableChecksum {
  rows = 0;
  private sum = 0n;

  add(portable: Record<string, unknown>): void {
    const digest = createHash('sha256').update(canonicalJson(portable)).digest('hex');
    this.sum = (this.sum + BigInt(`0x${digest}`)) % SUM_MODULUS;
    this.rows++;
  }

  get hex(): string {
    return this.sum.toString(16).padStart(64, '0');
  }
}

export interface TableSummary {
  rows: number;
  checksum: string;
}

/** A table's rows in primary-key order, in batches of COPY_BATCH_ROWS statements' worth. */
export async function* tableRows(
  query: Query,
  kind: DatabaseKind,
  table: StoreTable,
): AsyncGenerator<Record<string, unknown>[]> {
  const pk = `"${table.primaryKey}"`;
  const [p1, p2] = kind === 'sqlite' ? ['?', '?'] : ['$1', '$2'];
  let last: unknown;
  for (;;) {
    const rows =
      last === undefined
        ? await query(`select * from "${table.name}" order by ${pk} limit ${p1}`, [COPY_BATCH_ROWS])
        : await query(`select * from "${table.name}" where ${pk} > ${p1} order by ${pk} limit ${p2}`, [
            last,
            COPY_BATCH_ROWS,
          ]);
    if (rows.length === 0) return;
    yield rows;
    if (rows.length < COPY_BATCH_ROWS) return;
    last = rows[rows.length - 1][table.primaryKey];
  }
}

/** Count and checksum of every table as stored (driver-neutral: compare SQLite with Postgres). */
export async function summarizeTables(
  query: Query,
  kind: DatabaseKind,
  tables: readonly StoreTable[],
): Promise<Record<string, TableSummary>> {
  const out: Record<string, TableSummary> = {};
  for (const table of tables) {
    const columns = await columnsOf(query, kind, table.name);
    const sum = new TableChecksum();
    if (columns.size > 0)
      for await (const batch of tableRows(query, kind, table))
        for (const row of batch) sum.add(portableRow(row, columns));
    out[table.name] = { rows: sum.rows, checksum: sum.hex };
  }
  return out;
}

/** The tables that hold rows (bookkeeping rows aside); a database where this is empty may be replaced. */
export async function tablesWithRows(
  query: Query,
  kind: DatabaseKind,
  tables: readonly StoreTable[],
): Promise<string[]> {
  const found: string[] = [];
  for (const table of tables) {
    if (BOOKKEEPING_TABLES.includes(table.name)) continue;
    const exists =
      kind === 'sqlite'
        ? await query(`select 1 from sqlite_master where type = 'table' and name = ?`, [table.name])
        : await query('select 1 where to_regclass($1) is not null', [`"${table.name}"`]);
    if (exists.length === 0) continue;
    if ((await query(`select 1 from "${table.name}" limit 1`)).length > 0) found.push(table.name);
  }
  return found;
}

/** The migrations applied to a database, in order (empty when it was never migrated). */
export async function appliedMigrations(query: Query, kind: DatabaseKind, table: string): Promise<string[]> {
  const exists =
    kind === 'sqlite'
      ? await query(`select 1 from sqlite_master where type = 'table' and name = ?`, [table])
      : await query('select 1 where to_regclass($1) is not null', [`"${table}"`]);
  if (exists.length === 0) return [];
  return (await query(`select "name" from "${table}" order by "id"`)).map((r) => String(r.name));
}

/** Lines for an operator: one per table, with its count and checksum. */
export function describeSummaries(summaries: Record<string, TableSummary>): string[] {
  const width = Math.max(...Object.keys(summaries).map((n) => n.length));
  return Object.entries(summaries).map(
    ([name, s]) => `  ${name.padEnd(width)}  ${String(s.rows).padStart(8)} rows  checksum ${s.checksum.slice(0, 16)}`,
  );
}
