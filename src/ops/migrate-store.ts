import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { type DatabaseTarget, describeDatabase, parseDatabaseUrl } from '../config/index.js';
import { POSTGRES_MIGRATIONS } from '../db/migrations/postgres/index.js';
import { SQLITE_MIGRATIONS } from '../db/migrations/sqlite/index.js';
import { MIGRATIONS_TABLE, migrate, openOrm } from '../db/orm.js';
import {
  advanceTransactionIdsPast,
  connectPostgres,
  EVENT_TX_COLUMN,
  EVENTS_TABLE,
  insertPortableRows,
  postgresQuery,
  restoreSequences,
} from './postgres-store.js';
import { sqliteQuery } from './sqlite-store.js';
import { StoreOperationError } from './store-errors.js';
import {
  appliedMigrations,
  columnsOf,
  portableRow,
  storeTables,
  summarizeTables,
  TableChecksum,
  type TableSummary,
  tableRows,
  tablesWithRows,
} from './store-tables.js';

/**
 * `flotilla migrate-store --from sqlite:PATH --to postgres://…`: copies every table of a SQLite
 * store into a Postgres database in one Postgres transaction, then reads it back and compares
 * each table's count and checksum with the source's before committing.
 *
 * Event positions are (transaction id, id). SQLite's events all have transaction id 0 and ids in
 * commit order; they are copied unchanged, so a SQLite cursor (`evt:<id>`, position (0, id)) means
 * the same event on Postgres. Every event written on Postgres afterwards carries its writing
 * transaction's id, which is at least 3 (Postgres' first normal transaction id) and so sorts
 * after every copied event; the id sequence is set past SQLite's own high-water mark, so ids of
 * the source (burned ones included) are never handed out again. Message cursors are the same
 * positions (messages keep their event's position) and resume too.
 */

export interface MigrateStoreOptions {
  /** Replace a Postgres database that holds data. */
  force?: boolean;
}

export interface MigrateStoreReport {
  source: string;
  target: string;
  tables: Record<string, { source: TableSummary; target: TableSummary }>;
}

export function parseStoreUrls(from: string, to: string): { source: DatabaseTarget; target: DatabaseTarget } {
  const parse = (url: string, flag: string) => {
    try {
      return parseDatabaseUrl(url);
    } catch (err) {
      throw new StoreOperationError('UNSUPPORTED', `${flag}: ${(err as Error).message}`);
    }
  };
  const source = parse(from, '--from');
  const target = parse(to, '--to');
  if (source.kind !== 'sqlite' || source.location === ':memory:')
    throw new StoreOperationError('UNSUPPORTED', '--from must name a SQLite file (sqlite:PATH)');
  if (target.kind !== 'postgres')
    throw new StoreOperationError('UNSUPPORTED', '--to must be a Postgres URL (postgres://user:password@host/db)');
  return { source, target };
}

export async function migrateStore(
  source: DatabaseTarget,
  target: DatabaseTarget,
  options: MigrateStoreOptions = {},
): Promise<MigrateStoreReport> {
  const file = resolve(source.location);
  if (!existsSync(file)) throw new StoreOperationError('UNSUPPORTED', `there is no SQLite database at ${file}`);
  const from = await openOrm({ ...source, location: file });
  try {
    const read = sqliteQuery(from);
    const applied = await appliedMigrations(read, 'sqlite', MIGRATIONS_TABLE);
    const expected = SQLITE_MIGRATIONS.map((m) => m.name);
    if (applied.join() !== expected.join())
      throw new StoreOperationError(
        'SCHEMA_MISMATCH',
        `the SQLite store has ${applied.length} of this Flotilla's ${expected.length} migrations applied${applied.some((n, i) => expected[i] !== n) ? ' (and some it does not know)' : ''}; bring it to the same version first (\`flotilla migrate\` with FLOTILLA_DATABASE_URL=${source.url})`,
      );
    const tables = storeTables(from);
    const names = tables.map((t) => t.name);

    const client = await connectPostgres(target.location);
    try {
      const write = postgresQuery(client);
      const current = await appliedMigrations(write, 'postgres', MIGRATIONS_TABLE);
      if (current.some((name, i) => POSTGRES_MIGRATIONS[i]?.name !== name))
        throw new StoreOperationError(
          'SCHEMA_MISMATCH',
          `${describeDatabase(target)} has migrations this Flotilla does not know`,
        );
      const filled = await tablesWithRows(write, 'postgres', tables);
      if (filled.length > 0 && !options.force)
        throw new StoreOperationError(
          'NOT_EMPTY',
          `${describeDatabase(target)} holds data (${filled.join(', ')}); pass --force to replace it`,
        );
      const to = await openOrm(target);
      try {
        await migrate(to);
      } finally {
        await to.close(true);
      }

      const newest = await read(`select coalesce(max("${EVENT_TX_COLUMN}"), 0) as "tx" from "${EVENTS_TABLE}"`);
      await advanceTransactionIdsPast(client, BigInt(String(newest[0]?.tx ?? 0)));

      // One read transaction on SQLite (a consistent snapshot) and one write transaction on Postgres.
      await read('begin');
      await write('begin');
      try {
        const sourceSums: Record<string, TableSummary> = {};
        await write(`truncate table ${names.map((n) => `"${n}"`).join(', ')}`);
        for (const table of tables) {
          const columns = await columnsOf(write, 'postgres', table.name);
          const sum = new TableChecksum();
          for await (const batch of tableRows(read, 'sqlite', table)) {
            const rows = batch.map((row) => portableRow(row, columns));
            for (const row of rows) sum.add(row);
            await insertPortableRows(write, table.name, rows);
          }
          sourceSums[table.name] = { rows: sum.rows, checksum: sum.hex };
        }
        const sequences = await read(`select "name", "seq" from sqlite_sequence`).catch(() => []);
        const highWater: Record<string, string> = {};
        for (const row of sequences) {
          const table = tables.find((t) => t.name === row.name);
          if (table) highWater[`${table.name}.${table.primaryKey}`] = String(row.seq);
        }
        await restoreSequences(write, names, highWater);

        const targetSums = await summarizeTables(write, 'postgres', tables);
        const report: MigrateStoreReport = { source: source.url, target: describeDatabase(target), tables: {} };
        const differing: string[] = [];
        for (const name of names) {
          report.tables[name] = { source: sourceSums[name], target: targetSums[name] };
          if (
            sourceSums[name].rows !== targetSums[name].rows ||
            sourceSums[name].checksum !== targetSums[name].checksum
          )
            differing.push(name);
        }
        if (differing.length)
          throw new StoreOperationError(
            'VERIFY_FAILED',
            `the copy of ${differing.join(', ')} reads back differently from the source; nothing was committed`,
          );
        await write('commit');
        return report;
      } catch (err) {
        await write('rollback').catch(() => undefined);
        if (err instanceof StoreOperationError) throw err;
        throw new StoreOperationError(
          'ROLLED_BACK',
          `copying failed and was rolled back, nothing was committed: ${(err as Error).message}`,
        );
      } finally {
        await read('commit').catch(() => undefined);
      }
    } finally {
      await client.end();
    }
  } finally {
    await from.close(true);
  }
}
