import { once } from 'node:events';
import {
  closeSync,
  copyFileSync,
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { type DatabaseTarget, describeDatabase } from '../config/index.js';
import { POSTGRES_MIGRATIONS } from '../db/migrations/postgres/index.js';
import { SQLITE_MIGRATIONS } from '../db/migrations/sqlite/index.js';
import { MIGRATIONS_TABLE, migrate, type Orm, openOrm } from '../db/orm.js';
import { probeWriterLock } from '../db/writer-lock.js';
import {
  advanceTransactionIdsPast,
  connectPostgres,
  EVENT_TX_COLUMN,
  EVENTS_TABLE,
  insertPortableRows,
  postgresQuery,
  restoreSequences,
  sequenceHighWater,
} from './postgres-store.js';
import { onlineBackup, sqliteQuery } from './sqlite-store.js';
import { StoreOperationError } from './store-errors.js';
import {
  appliedMigrations,
  COPY_BATCH_ROWS,
  columnsOf,
  portableRow,
  type StoreTable,
  storeTables,
  summarizeTables,
  TableChecksum,
  type TableSummary,
  tableRows,
  tablesWithRows,
} from './store-tables.js';

/**
 * `flotilla backup` and `flotilla restore` (docs/operations.md, "Backup and restore").
 *
 * SQLite: the backup is a SQLite file made with the online backup API, plus a `flotilla_backup`
 * table holding its manifest (format, applied migrations, per-table counts and checksums).
 * Postgres: a gzip'd NDJSON logical export read in one repeatable-read, read-only snapshot: a
 * header line (format, migrations, tables, sequence marks), one line per row, and a summary line
 * with each table's count and checksum. Restore checks everything before it touches the target.
 */

export const BACKUP_FORMAT = 'flotilla-backup';
export const BACKUP_FORMAT_VERSION = 1;
/** The table inside a SQLite backup that holds its manifest; restore drops it. */
export const SQLITE_MANIFEST_TABLE = 'flotilla_backup';

export interface BackupManifest {
  format: typeof BACKUP_FORMAT;
  version: number;
  driver: 'sqlite' | 'postgres';
  method: 'sqlite-online-backup' | 'logical-export';
  createdAt: string;
  /** The schema version: the migrations applied to the database the backup was taken from. */
  migrations: string[];
  tables: string[];
  /** Postgres: how far each sequence had handed out values. */
  sequences?: Record<string, string>;
}

export interface BackupReport {
  file: string;
  manifest: BackupManifest;
  summaries: Record<string, TableSummary>;
}

export interface RestoreReport {
  /** Where the replaced contents were kept (null when there was nothing to replace). */
  safetyCopy: string | null;
  migrations: string[];
  summaries: Record<string, TableSummary>;
  /** Postgres: transaction ids burned so that new events sort after the restored ones. */
  transactionIdsAdvanced?: bigint;
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, 'Z');
}

function migrationNames(kind: 'sqlite' | 'postgres'): string[] {
  return (kind === 'sqlite' ? SQLITE_MIGRATIONS : POSTGRES_MIGRATIONS).map((m) => m.name);
}

function checkSchemaVersion(kind: 'sqlite' | 'postgres', found: string[], what: string): void {
  const expected = migrationNames(kind);
  if (found.length === expected.length && found.every((name, i) => name === expected[i])) return;
  const last = (list: string[]) => list[list.length - 1] ?? 'none';
  throw new StoreOperationError(
    'SCHEMA_MISMATCH',
    `${what} is at schema version ${last(found)} (${found.length} migrations) but this Flotilla expects ${last(expected)} (${expected.length}); restore it with the Flotilla version that wrote it, then upgrade with \`flotilla migrate\``,
  );
}

function sqliteLocation(target: DatabaseTarget): string {
  if (target.location === ':memory:')
    throw new StoreOperationError('UNSUPPORTED', 'an in-memory SQLite database cannot be backed up or restored');
  return resolve(target.location);
}

// ---------------------------------------------------------------------------------------------
// backup

export async function backupStore(target: DatabaseTarget, out: string): Promise<BackupReport> {
  const file = resolve(out);
  if (target.kind === 'sqlite' && file === resolve(target.location))
    throw new StoreOperationError('UNSUPPORTED', 'the backup must not be written over the database itself');
  mkdirSync(dirname(file), { recursive: true });
  const partial = `${file}.partial-${process.pid}`;
  try {
    const report =
      target.kind === 'sqlite' ? await backupSqlite(target, partial) : await exportPostgres(target, partial);
    renameSync(partial, file);
    return { ...report, file };
  } finally {
    rmSync(partial, { force: true });
  }
}

async function backupSqlite(target: DatabaseTarget, out: string): Promise<Omit<BackupReport, 'file'>> {
  const location = sqliteLocation(target);
  if (!existsSync(location)) throw new StoreOperationError('UNSUPPORTED', `there is no SQLite database at ${location}`);
  rmSync(out, { force: true });
  // The backup holds the signing keys: readable by its owner only, from the start.
  closeSync(openSync(out, 'w', 0o600));
  const source = await openOrm(target);
  try {
    await onlineBackup(source, out);
  } finally {
    await source.close(true);
  }
  // The manifest is computed from the copy, so it describes exactly the snapshot taken.
  const copy = await openOrm({ kind: 'sqlite', url: `sqlite:${out}`, location: out });
  try {
    const query = sqliteQuery(copy);
    const tables = storeTables(copy);
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      version: BACKUP_FORMAT_VERSION,
      driver: 'sqlite',
      method: 'sqlite-online-backup',
      createdAt: new Date().toISOString(),
      migrations: await appliedMigrations(query, 'sqlite', MIGRATIONS_TABLE),
      tables: tables.map((t) => t.name),
    };
    const summaries = await summarizeTables(query, 'sqlite', tables);
    await query(`create table "${SQLITE_MANIFEST_TABLE}" ("key" text primary key, "value" text not null)`);
    await query(`insert into "${SQLITE_MANIFEST_TABLE}" ("key", "value") values ('manifest', ?), ('tables', ?)`, [
      JSON.stringify(manifest),
      JSON.stringify(summaries),
    ]);
    // One self-contained file: no -wal beside it.
    await query('pragma journal_mode = delete');
    return { manifest, summaries };
  } finally {
    await copy.close(true);
  }
}

/** Writes a logical export of a Postgres database to `out` (used for backups and for restore's safety copy). */
async function exportPostgres(target: DatabaseTarget, out: string): Promise<Omit<BackupReport, 'file'>> {
  const tables = await tablesOf(target);
  const client = await connectPostgres(target.location);
  const gzip = createGzip();
  const sink = createWriteStream(out, { mode: 0o600 });
  const written = pipeline(gzip, sink);
  const write = async (value: unknown) => {
    if (!gzip.write(`${JSON.stringify(value)}\n`)) await once(gzip, 'drain');
  };
  try {
    const query = postgresQuery(client);
    await query('begin transaction isolation level repeatable read read only');
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      version: BACKUP_FORMAT_VERSION,
      driver: 'postgres',
      method: 'logical-export',
      createdAt: new Date().toISOString(),
      migrations: await appliedMigrations(query, 'postgres', MIGRATIONS_TABLE),
      tables: tables.map((t) => t.name),
      sequences: await sequenceHighWater(
        query,
        tables.map((t) => t.name),
      ),
    };
    await write(manifest);
    const summaries: Record<string, TableSummary> = {};
    for (const table of tables) {
      const columns = await columnsOf(query, 'postgres', table.name);
      const sum = new TableChecksum();
      for await (const batch of tableRows(query, 'postgres', table)) {
        for (const row of batch) {
          const portable = portableRow(row, columns);
          sum.add(portable);
          await write({ t: table.name, r: portable });
        }
      }
      summaries[table.name] = { rows: sum.rows, checksum: sum.hex };
    }
    await query('commit');
    await write({ end: true, tables: summaries });
    gzip.end();
    await written;
    return { manifest, summaries };
  } catch (err) {
    gzip.destroy();
    await written.catch(() => undefined);
    throw err;
  } finally {
    await client.end();
  }
}

/** The store's tables from the ORM's entities (no connection needed). */
async function tablesOf(target: DatabaseTarget): Promise<StoreTable[]> {
  const orm = await openOrm(target, { connect: false });
  try {
    return storeTables(orm);
  } finally {
    await orm.close(true);
  }
}

// ---------------------------------------------------------------------------------------------
// restore

export interface RestoreOptions {
  /** Replace a database that holds data (a safety copy of it is kept first). */
  force?: boolean;
}

export async function restoreStore(
  target: DatabaseTarget,
  from: string,
  options: RestoreOptions = {},
): Promise<RestoreReport> {
  const file = resolve(from);
  if (!existsSync(file)) throw new StoreOperationError('CORRUPT', `there is no backup file at ${file}`);
  const kind = fileKind(file);
  if (kind !== target.kind)
    throw new StoreOperationError(
      'UNSUPPORTED',
      `${file} is ${kind === 'unknown' ? 'not a Flotilla backup' : `a ${kind} backup`}, but the database is ${target.kind} (${describeDatabase(target)}); to move SQLite data to Postgres use \`flotilla migrate-store\``,
    );
  return target.kind === 'sqlite' ? restoreSqlite(target, file, options) : restorePostgres(target, file, options);
}

const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

function fileKind(file: string): 'sqlite' | 'postgres' | 'unknown' {
  const head = Buffer.alloc(16);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, head, 0, 16, 0);
  } finally {
    closeSync(fd);
  }
  if (head.equals(SQLITE_MAGIC)) return 'sqlite';
  if (head[0] === 0x1f && head[1] === 0x8b) return 'postgres';
  return 'unknown';
}

function corrupt(file: string, why: string): StoreOperationError {
  return new StoreOperationError('CORRUPT', `${file} cannot be restored: ${why}`);
}

async function restoreSqlite(target: DatabaseTarget, file: string, options: RestoreOptions): Promise<RestoreReport> {
  const location = sqliteLocation(target);
  // A running `flotilla serve` (or migrate, demo) holds the file's writer lock (db/writer-lock.ts).
  const lock = await probeWriterLock(target);
  if (lock?.state === 'held')
    throw new StoreOperationError(
      'IN_USE',
      `another process${lock.holderPid ? ` (pid ${lock.holderPid})` : ''} has ${location} open for writing (a running flotilla serve?); stop it before restoring`,
    );
  mkdirSync(dirname(location), { recursive: true });
  const stamp = timestamp();
  // Verified and prepared beside the target, then renamed over it: the target is untouched until then.
  const staged = `${location}.restore-${stamp}-${process.pid}`;
  let renamed = false;
  try {
    copyFileSync(file, staged);
    const { migrations, summaries } = await verifySqliteBackup(staged, file);

    let safetyCopy: string | null = null;
    if (existsSync(location)) {
      const current = await openOrm(target);
      try {
        const filled = await tablesWithRows(sqliteQuery(current), 'sqlite', storeTables(current));
        if (filled.length > 0 && !options.force)
          throw new StoreOperationError(
            'NOT_EMPTY',
            `the database ${location} holds data (${filled.join(', ')}); pass --force to replace it (a safety copy is kept)`,
          );
      } finally {
        await current.close(true);
      }
      // The last connection to close removes the WAL; one left means another process has the file open.
      const inUse = () => {
        if (existsSync(`${location}-wal`))
          throw new StoreOperationError(
            'IN_USE',
            `another process has ${location} open (a running flotilla serve?); stop it before restoring`,
          );
      };
      inUse();
      // A backup like any other (manifest included), so `flotilla restore` takes it back.
      safetyCopy = `${location}.pre-restore-${stamp}.db`;
      await backupStore(target, safetyCopy);
      inUse();
    }
    renameSync(staged, location);
    renamed = true;
    rmSync(`${location}-shm`, { force: true });
    return { safetyCopy, migrations, summaries };
  } finally {
    if (!renamed) rmSync(staged, { force: true });
    rmSync(`${staged}-wal`, { force: true });
    rmSync(`${staged}-shm`, { force: true });
  }
}

/** Checks a staged SQLite backup (integrity, manifest, checksums, schema version) and strips its manifest. */
async function verifySqliteBackup(
  staged: string,
  file: string,
): Promise<{ migrations: string[]; summaries: Record<string, TableSummary> }> {
  let orm: Orm;
  try {
    orm = await openOrm({ kind: 'sqlite', url: `sqlite:${staged}`, location: staged });
  } catch (err) {
    throw corrupt(file, (err as Error).message);
  }
  try {
    const query = sqliteQuery(orm);
    let manifest: BackupManifest;
    let recorded: Record<string, TableSummary>;
    try {
      const check = await query('pragma integrity_check');
      const verdict = check.map((r) => String(Object.values(r)[0])).join('; ');
      if (verdict !== 'ok') throw corrupt(file, `integrity check failed: ${verdict.slice(0, 300)}`);
      const present = await query(`select 1 from sqlite_master where type = 'table' and name = ?`, [
        SQLITE_MANIFEST_TABLE,
      ]);
      const rows = present.length ? await query(`select "key", "value" from "${SQLITE_MANIFEST_TABLE}"`) : [];
      const byKey = new Map(rows.map((r) => [String(r.key), String(r.value)]));
      if (!byKey.has('manifest') || !byKey.has('tables'))
        throw corrupt(file, 'it has no Flotilla manifest (make backups with `flotilla backup`)');
      manifest = JSON.parse(byKey.get('manifest') as string) as BackupManifest;
      recorded = JSON.parse(byKey.get('tables') as string) as Record<string, TableSummary>;
      if (manifest.format !== BACKUP_FORMAT || manifest.version !== BACKUP_FORMAT_VERSION)
        throw corrupt(file, `unknown backup format ${manifest.format} ${manifest.version}`);
    } catch (err) {
      if (err instanceof StoreOperationError) throw err;
      throw corrupt(file, (err as Error).message);
    }
    const migrations = await appliedMigrations(query, 'sqlite', MIGRATIONS_TABLE);
    if (migrations.join() !== manifest.migrations.join())
      throw corrupt(file, 'its applied migrations differ from its manifest');
    checkSchemaVersion('sqlite', migrations, `the backup ${file}`);
    let summaries: Record<string, TableSummary>;
    try {
      summaries = await summarizeTables(query, 'sqlite', storeTables(orm));
    } catch (err) {
      throw corrupt(file, (err as Error).message);
    }
    for (const [table, expected] of Object.entries(recorded)) {
      const found = summaries[table];
      if (!found || found.rows !== expected.rows || found.checksum !== expected.checksum)
        throw corrupt(
          file,
          `table ${table} does not match its manifest (${found?.rows ?? 0} rows, expected ${expected.rows}; checksum ${found?.checksum.slice(0, 16)}… expected ${expected.checksum.slice(0, 16)}…)`,
        );
    }
    await query(`drop table "${SQLITE_MANIFEST_TABLE}"`);
    return { migrations, summaries };
  } finally {
    await orm.close(true);
  }
}

interface PostgresExportContents {
  manifest: BackupManifest;
  summaries: Record<string, TableSummary>;
  /** The largest transaction id among the exported events. */
  newestTxId: bigint;
}

/** Reads a logical export line by line; rejects when the gzip stream or a line is damaged. */
async function* exportLines(file: string): AsyncGenerator<Record<string, unknown>> {
  const input = createReadStream(file).pipe(createGunzip());
  let failure: Error | null = null;
  input.on('error', (err) => {
    failure = err;
  });
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  try {
    for await (const line of lines) {
      if (failure) throw failure;
      yield JSON.parse(line) as Record<string, unknown>;
    }
  } finally {
    lines.close();
    input.destroy();
  }
  // A damaged gzip trailer (or any stream error after the last line) still fails the read.
  if (failure) throw failure;
}

/** Pass one of a Postgres restore: every line parses, the summary is there and every table's count and checksum match. */
async function verifyPostgresExport(file: string): Promise<PostgresExportContents> {
  let manifest: BackupManifest | null = null;
  let summaries: Record<string, TableSummary> | null = null;
  const sums = new Map<string, TableChecksum>();
  let newestTxId = 0n;
  try {
    for await (const line of exportLines(file)) {
      if (summaries) throw corrupt(file, 'it has lines after its summary');
      if (!manifest) {
        manifest = line as unknown as BackupManifest;
        if (manifest.format !== BACKUP_FORMAT || manifest.version !== BACKUP_FORMAT_VERSION)
          throw corrupt(file, 'it does not start with a Flotilla backup header');
        for (const table of manifest.tables) sums.set(table, new TableChecksum());
        continue;
      }
      if (line.end === true) {
        summaries = line.tables as Record<string, TableSummary>;
        continue;
      }
      const sum = sums.get(String(line.t));
      if (!sum || typeof line.r !== 'object' || line.r === null) throw corrupt(file, 'it has a malformed row line');
      const row = line.r as Record<string, unknown>;
      sum.add(row);
      if (line.t === EVENTS_TABLE && row[EVENT_TX_COLUMN] !== null && row[EVENT_TX_COLUMN] !== undefined) {
        const tx = BigInt(String(row[EVENT_TX_COLUMN]));
        if (tx > newestTxId) newestTxId = tx;
      }
    }
  } catch (err) {
    if (err instanceof StoreOperationError) throw err;
    throw corrupt(file, (err as Error).message);
  }
  if (!manifest) throw corrupt(file, 'it is empty');
  if (!summaries) throw corrupt(file, 'it is truncated (no summary line)');
  for (const [table, sum] of sums) {
    const expected = summaries[table];
    if (!expected || expected.rows !== sum.rows || expected.checksum !== sum.hex)
      throw corrupt(
        file,
        `table ${table} does not match the summary (${sum.rows} rows, expected ${expected?.rows ?? '?'}; checksum ${sum.hex.slice(0, 16)}… expected ${expected?.checksum.slice(0, 16) ?? '?'}…)`,
      );
  }
  return { manifest, summaries, newestTxId };
}

async function restorePostgres(target: DatabaseTarget, file: string, options: RestoreOptions): Promise<RestoreReport> {
  const contents = await verifyPostgresExport(file);
  checkSchemaVersion('postgres', contents.manifest.migrations, `the backup ${file}`);

  const tables = await tablesOf(target);
  const missing = tables.filter((t) => !contents.manifest.tables.includes(t.name)).map((t) => t.name);
  if (missing.length) throw corrupt(file, `it lacks the tables ${missing.join(', ')}`);
  const checker = await connectPostgres(target.location);
  let filled: string[];
  try {
    const query = postgresQuery(checker);
    const current = await appliedMigrations(query, 'postgres', MIGRATIONS_TABLE);
    const known = migrationNames('postgres');
    if (current.some((name, i) => known[i] !== name))
      throw new StoreOperationError(
        'SCHEMA_MISMATCH',
        `the database ${describeDatabase(target)} has migrations this Flotilla does not know; restore with the version that wrote it`,
      );
    filled = await tablesWithRows(query, 'postgres', tables);
  } finally {
    await checker.end();
  }
  if (filled.length > 0 && !options.force)
    throw new StoreOperationError(
      'NOT_EMPTY',
      `the database ${describeDatabase(target)} holds data (${filled.join(', ')}); pass --force to replace it (a safety copy is kept)`,
    );

  // Only now is the target changed: a fresh database gets the schema (the backup's, checked above).
  const orm = await openOrm(target);
  try {
    await migrate(orm);
  } finally {
    await orm.close(true);
  }
  let safetyCopy: string | null = null;
  if (filled.length > 0) {
    const name = new URL(target.location).pathname.slice(1) || 'postgres';
    safetyCopy = join(dirname(file), `${basename(name)}.pre-restore-${timestamp()}.flotilla.ndjson.gz`);
    await exportPostgres(target, safetyCopy);
  }

  const client = await connectPostgres(target.location);
  try {
    const transactionIdsAdvanced = await advanceTransactionIdsPast(client, contents.newestTxId);
    const query = postgresQuery(client);
    await query('begin');
    try {
      await query(`truncate table ${tables.map((t) => `"${t.name}"`).join(', ')}`);
      let batch: Record<string, unknown>[] = [];
      let batchTable = '';
      const flush = async () => {
        await insertPortableRows(query, batchTable, batch);
        batch = [];
      };
      let header = true;
      for await (const line of exportLines(file)) {
        if (header) {
          header = false;
          continue;
        }
        if (line.end === true) break;
        const table = String(line.t);
        if (table !== batchTable || batch.length >= COPY_BATCH_ROWS) await flush();
        batchTable = table;
        batch.push(line.r as Record<string, unknown>);
      }
      await flush();
      await restoreSequences(
        query,
        tables.map((t) => t.name),
        contents.manifest.sequences ?? {},
      );
      const summaries = await summarizeTables(query, 'postgres', tables);
      for (const [table, expected] of Object.entries(contents.summaries)) {
        const found = summaries[table];
        if (!found || found.rows !== expected.rows || found.checksum !== expected.checksum)
          throw new StoreOperationError(
            'VERIFY_FAILED',
            `table ${table} reads back differently (${found?.rows ?? 0} rows, expected ${expected.rows}); nothing was changed`,
          );
      }
      await query('commit');
      return { safetyCopy, migrations: contents.manifest.migrations, summaries, transactionIdsAdvanced };
    } catch (err) {
      await query('rollback').catch(() => undefined);
      if (err instanceof StoreOperationError) throw err;
      throw new StoreOperationError(
        'ROLLED_BACK',
        `restoring failed and was rolled back, the database is as it was: ${(err as Error).message}`,
      );
    }
  } finally {
    await client.end();
  }
}
