import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import sqlite3 from 'sqlite3';
import type { DatabaseTarget } from '../config/index.js';
import { UnavailableError } from '../kernel/errors.js';

/**
 * The single-writer guard of a SQLite store. One process at a time may open a SQLite file for
 * writing (serve, migrate, demo): it holds an exclusive SQLite lock on a sibling lock database,
 * `<file>.lock`, for as long as it runs. The operating system drops that lock when the process
 * ends, however it ends (kill -9 included), so the guard never goes stale; a pid file beside it,
 * `<file>.lock.pid`, only names the holder in the refusal. Postgres needs no guard: replicas
 * share it by design.
 *
 * Within one process the lock is shared (counted), so several servers of one process (tests) may
 * use the same file; it is released when the last of them closes.
 */

/** How long an acquisition waits for a momentary holder (e.g. `flotilla doctor` peeking) before refusing. */
export const WRITER_LOCK_WAIT_MS = 1_000;

export class WriterLockError extends UnavailableError {
  constructor(
    /** The SQLite file another process writes. */
    readonly file: string,
    /** That process's pid, when its pid file says. */
    readonly holderPid: number | null,
  ) {
    super(
      `another process${holderPid ? ` (pid ${holderPid})` : ''} has the SQLite database ${file} open for writing; ` +
        'only one Flotilla process may write a SQLite file (stop it first, or move to Postgres to run several replicas)',
    );
  }
}

export interface WriterLock {
  /** The lock database's path. */
  readonly file: string;
  release(): Promise<void>;
}

export type WriterLockState =
  | { state: 'free'; file: string }
  | { state: 'held'; file: string; holderPid: number | null };

interface Held {
  count: number;
  connection: Promise<sqlite3.Database>;
}

const held = new Map<string, Held>();

/** The lock database of a SQLite file (absolute). */
export function writerLockFile(location: string): string {
  return `${resolve(location)}.lock`;
}

/** Whether this target needs the guard: a SQLite file (not `:memory:`, not Postgres). */
export function needsWriterLock(target: DatabaseTarget): boolean {
  return target.kind === 'sqlite' && target.location !== ':memory:' && !target.location.startsWith('file::memory:');
}

/**
 * Takes the writer lock of a SQLite file for this process's life (until `release`), or throws
 * WriterLockError when another process holds it. Returns null where no guard applies.
 */
export async function acquireWriterLock(target: DatabaseTarget): Promise<WriterLock | null> {
  if (!needsWriterLock(target)) return null;
  const file = writerLockFile(target.location);
  let entry = held.get(file);
  if (entry) entry.count++;
  else {
    entry = { count: 1, connection: lockExclusively(file, resolve(target.location)) };
    held.set(file, entry);
  }
  const mine = entry;
  try {
    await mine.connection;
  } catch (err) {
    if (held.get(file) === mine) held.delete(file);
    throw err;
  }
  let released = false;
  return {
    file,
    async release() {
      if (released) return;
      released = true;
      mine.count--;
      if (mine.count > 0) return;
      if (held.get(file) === mine) held.delete(file);
      const connection = await mine.connection;
      // The pid file goes first: once the lock is free, a new holder writes its own.
      rmSync(pidFile(file), { force: true });
      await run(connection, 'rollback').catch(() => undefined);
      await new Promise<void>((done) => connection.close(() => done()));
    },
  };
}

/**
 * Whether another process holds the writer lock of a SQLite file, without taking it (a shared
 * lock for one read, the way `flotilla doctor` looks). Null where no guard applies.
 */
export async function probeWriterLock(target: DatabaseTarget): Promise<WriterLockState | null> {
  if (!needsWriterLock(target)) return null;
  const file = writerLockFile(target.location);
  let connection: sqlite3.Database;
  try {
    connection = await open(file, sqlite3.OPEN_READONLY);
  } catch {
    return { state: 'free', file }; // no lock database: nobody ever took it
  }
  try {
    connection.configure('busyTimeout', 0);
    await run(connection, 'select count(*) from "holder"');
    return { state: 'free', file };
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_BUSY') return { state: 'held', file, holderPid: readPid(file) };
    throw err;
  } finally {
    await new Promise<void>((done) => connection.close(() => done()));
  }
}

async function lockExclusively(file: string, store: string): Promise<sqlite3.Database> {
  mkdirSync(dirname(file), { recursive: true });
  const connection = await open(file, sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE);
  try {
    connection.configure('busyTimeout', WRITER_LOCK_WAIT_MS);
    // A rollback journal: there, an exclusive transaction keeps every other connection out, readers too.
    await run(connection, 'pragma journal_mode = delete');
    await run(connection, 'create table if not exists "holder" ("note" text)');
    await run(connection, 'begin exclusive');
  } catch (err) {
    await new Promise<void>((done) => connection.close(() => done()));
    if ((err as { code?: string }).code === 'SQLITE_BUSY') throw new WriterLockError(store, readPid(file));
    throw err;
  }
  writeFileSync(pidFile(file), `${process.pid}\n`);
  return connection;
}

function pidFile(lockFile: string): string {
  return `${lockFile}.pid`;
}

function readPid(lockFile: string): number | null {
  try {
    const pid = Number(readFileSync(pidFile(lockFile), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function open(file: string, mode: number): Promise<sqlite3.Database> {
  return new Promise((done, fail) => {
    const connection = new sqlite3.Database(file, mode, (err) => (err ? fail(err) : done(connection)));
  });
}

function run(connection: sqlite3.Database, sql: string): Promise<void> {
  return new Promise((done, fail) => connection.run(sql, (err) => (err ? fail(err) : done())));
}
