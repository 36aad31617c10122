import type { Orm } from '../db/orm.js';
import type { Query } from './store-tables.js';

/** The parts of the `sqlite3` driver's Database and Backup objects that the online backup uses. */
interface SqliteBackupHandle {
  step(pages: number, callback: (err: Error | null) => void): void;
  finish(callback?: (err: Error | null) => void): void;
  readonly completed: boolean;
  readonly failed: boolean;
}
interface SqliteDatabaseHandle {
  backup(destination: string, callback: (err: Error | null) => void): SqliteBackupHandle;
}
interface KnexClient {
  acquireConnection(): Promise<unknown>;
  releaseConnection(connection: unknown): Promise<unknown>;
}

/** Attempts of a backup step that met a busy or locked source before giving up. */
const BACKUP_BUSY_RETRIES = 50;
const BACKUP_BUSY_WAIT_MS = 100;

export function sqliteQuery(orm: Orm): Query {
  const conn = orm.em.getConnection();
  return async (sql, params) =>
    (await conn.execute(sql, (params ?? []) as unknown[], 'all')) as Record<string, unknown>[];
}

/**
 * Copies a live SQLite database to `destination` with SQLite's online backup API (the `sqlite3`
 * driver's `Database#backup`, reached through the ORM's own connection). All pages are copied in
 * one step under one read transaction, so the copy is a consistent snapshot even while a server
 * keeps writing (in WAL mode writers do not wait for it).
 */
export async function onlineBackup(orm: Orm, destination: string): Promise<void> {
  const client = orm.em.getConnection().getKnex().client as unknown as KnexClient;
  const db = (await client.acquireConnection()) as SqliteDatabaseHandle;
  try {
    const backup = await new Promise<SqliteBackupHandle>((resolve, reject) => {
      const handle = db.backup(destination, (err) => (err ? reject(err) : resolve(handle)));
    });
    try {
      for (let attempt = 0; !backup.completed; attempt++) {
        try {
          await new Promise<void>((resolve, reject) => backup.step(-1, (err) => (err ? reject(err) : resolve())));
        } catch (err) {
          const busy = /SQLITE_(BUSY|LOCKED)/.test(String((err as Error).message));
          if (!busy || attempt >= BACKUP_BUSY_RETRIES || backup.failed) throw err;
          await new Promise((r) => setTimeout(r, BACKUP_BUSY_WAIT_MS));
        }
      }
    } finally {
      await new Promise<void>((resolve) => backup.finish(() => resolve()));
    }
  } finally {
    await client.releaseConnection(db);
  }
}
