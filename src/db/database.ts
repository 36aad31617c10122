import type { DatabaseTarget } from '../config/index.js';
import { describeDatabase } from '../config/index.js';
import { UnavailableError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import { migrate, type Orm, openOrm, pendingMigrations, prepareConnection } from './orm.js';
import { acquireWriterLock, type WriterLock } from './writer-lock.js';

/** Retry delays while the database cannot be reached at start (ms). */
export const CONNECT_BACKOFF_MS = { initial: 500, max: 10_000 };

export interface DatabaseOptions {
  /** Apply pending migrations when connecting; when false, pending migrations are an error. */
  migrate: boolean;
  logger: Logger;
  /** Runs once the database is connected and migrated (e.g. to load keys). */
  onReady?: (orm: Orm) => Promise<void>;
  /** Receives every SQL statement (tests count them). */
  onQuery?: (sql: string) => void;
  /** The clock that stamps `updatedAt`. */
  now?: () => Date;
}

export class PendingMigrationsError extends Error {
  constructor(readonly pending: string[]) {
    super(
      `the database has ${pending.length} pending migration(s) (${pending.join(', ')}); run \`flotilla migrate\` first`,
    );
  }
}

/**
 * The store as the server sees it: it connects (retrying with backoff while the database is
 * down), migrates, and then serves. Until then every request is refused as unavailable and
 * readiness is false; once connected, readiness follows whether the database answers.
 */
export class Database {
  private ormInstance: Orm | null = null;
  private ready = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private writerLock: WriterLock | null = null;
  lastError: string | null = null;

  constructor(
    readonly target: DatabaseTarget,
    private readonly options: DatabaseOptions,
  ) {}

  /**
   * Tries to connect once. On a connection failure it keeps retrying in the background and
   * resolves false; on pending migrations with migrate=false it throws PendingMigrationsError.
   * A SQLite file that another process writes is refused at once (WriterLockError).
   */
  async start(): Promise<boolean> {
    this.writerLock = await acquireWriterLock(this.target);
    let ok: boolean;
    try {
      ok = await this.attempt();
    } catch (err) {
      await this.writerLock?.release();
      this.writerLock = null;
      throw err;
    }
    if (!ok) this.scheduleRetry(CONNECT_BACKOFF_MS.initial);
    return ok;
  }

  /** Resolves once the database is connected and migrated. */
  async whenReady(): Promise<Orm> {
    while (!this.ready) {
      if (this.stopped) throw new UnavailableError('the server is shutting down');
      await new Promise((r) => setTimeout(r, 100));
    }
    return this.ormInstance as Orm;
  }

  get orm(): Orm {
    if (!this.ready || !this.ormInstance) throw new UnavailableError('the database is not available yet');
    return this.ormInstance;
  }

  isStarted(): boolean {
    return this.ready;
  }

  /** Readiness: connected, migrated, and answering right now. */
  async check(): Promise<{ ok: boolean; reason?: string }> {
    if (!this.ready || !this.ormInstance) return { ok: false, reason: this.lastError ?? 'connecting' };
    const result = await this.ormInstance.checkConnection();
    return result.ok ? { ok: true } : { ok: false, reason: result.reason };
  }

  async close(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.ormInstance) await this.ormInstance.close(true);
    this.ready = false;
    await this.writerLock?.release();
    this.writerLock = null;
  }

  private async attempt(): Promise<boolean> {
    const { logger } = this.options;
    let orm: Orm | null = null;
    try {
      orm = await openOrm(this.target, { connect: false, onQuery: this.options.onQuery, now: this.options.now });
      await orm.connect();
      const check = await orm.checkConnection();
      if (!check.ok) throw new Error(check.reason);
      await prepareConnection(orm, this.target.kind);
      const pending = await pendingMigrations(orm);
      if (pending.length > 0) {
        if (!this.options.migrate) throw new PendingMigrationsError(pending);
        const applied = await migrate(orm);
        logger.info({ applied }, 'applied migrations');
      }
      await this.options.onReady?.(orm);
      this.ormInstance = orm;
      this.ready = true;
      this.lastError = null;
      logger.info({ database: describeDatabase(this.target) }, 'database ready');
      return true;
    } catch (err) {
      await orm?.close(true).catch(() => undefined);
      if (err instanceof PendingMigrationsError) throw err;
      this.lastError = (err as Error).message;
      logger.error({ database: describeDatabase(this.target), err: this.lastError }, 'database unavailable; retrying');
      return false;
    }
  }

  private scheduleRetry(delay: number): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => {
      void this.attempt().then(
        (ok) => {
          if (!ok) this.scheduleRetry(Math.min(delay * 2, CONNECT_BACKOFF_MS.max));
        },
        (err: Error) => {
          this.lastError = err.message;
          this.options.logger.fatal({ err: err.message }, 'database cannot be used');
        },
      );
    }, delay);
    this.retryTimer.unref();
  }
}
