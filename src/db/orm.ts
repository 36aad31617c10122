import { MikroORM, type Options } from '@mikro-orm/core';
import type { AbstractSqlDriver, EntityManager } from '@mikro-orm/knex';
import { Migrator } from '@mikro-orm/migrations';
import { PostgreSqlDriver } from '@mikro-orm/postgresql';
import { SqliteDriver } from '@mikro-orm/sqlite';
import type { DatabaseKind, DatabaseTarget } from '../config/index.js';
import { ENTITY_SCHEMAS } from './entities/index.js';
import { POSTGRES_MIGRATIONS } from './migrations/postgres/index.js';
import { SQLITE_MIGRATIONS } from './migrations/sqlite/index.js';
import { TimestampSubscriber } from './timestamps.js';

export type Orm = MikroORM<AbstractSqlDriver>;
export type Em = EntityManager;

export const MIGRATIONS_TABLE = 'flotilla_migrations';

/** How many connections one process keeps to Postgres (the LISTEN connection is extra). */
export const POSTGRES_POOL_MAX = 10;

export interface OpenOrmOptions {
  /** Connect now (default). With false the caller connects later, e.g. to retry. */
  connect?: boolean;
  /** Receives every SQL statement the ORM issues (used by tests to count statements). */
  onQuery?: (sql: string) => void;
  /** Where `migration:create` writes new migration files. */
  migrationsPath?: string;
  /** The clock that stamps `updatedAt` (default: the system clock). */
  now?: () => Date;
}

export function ormOptions(target: DatabaseTarget, options: OpenOrmOptions = {}): Options<AbstractSqlDriver> {
  const common = {
    entities: ENTITY_SCHEMAS,
    extensions: [Migrator],
    discovery: { warnWhenNoEntities: true },
    subscribers: [new TimestampSubscriber(options.now ?? (() => new Date()))],
    // Soft-delete filters (see SOFT_DELETE_FILTER) apply to the queried entity and to relations a
    // query's conditions join; a loaded row's references are never nulled behind the caller's back.
    autoJoinRefsForFilters: false,
    forceUtcTimezone: true,
    allowGlobalContext: false,
    debug: options.onQuery ? (['query'] as const) : false,
    logger: options.onQuery ?? (() => undefined),
    // Queries use the raw SQL text as the "message"; strip the ORM's decorations in the logger.
    colors: false,
    connect: options.connect ?? true,
    migrations: {
      tableName: MIGRATIONS_TABLE,
      path: options.migrationsPath,
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      emit: 'ts' as const,
      migrationsList: target.kind === 'sqlite' ? SQLITE_MIGRATIONS : POSTGRES_MIGRATIONS,
    },
  };
  if (target.kind === 'sqlite') {
    return {
      ...common,
      driver: SqliteDriver,
      dbName: target.location,
      // One connection: SQLite serialises writers anyway, and ':memory:' lives in it.
      pool: { min: 1, max: 1, idleTimeoutMillis: 2 ** 31 - 1 },
    } as Options<AbstractSqlDriver>;
  }
  return {
    ...common,
    driver: PostgreSqlDriver,
    clientUrl: target.location,
    pool: { min: 0, max: POSTGRES_POOL_MAX },
  } as Options<AbstractSqlDriver>;
}

export async function openOrm(target: DatabaseTarget, options: OpenOrmOptions = {}): Promise<Orm> {
  const orm = await MikroORM.init<AbstractSqlDriver>(ormOptions(target, options));
  if (options.connect !== false) await prepareConnection(orm, target.kind);
  return orm;
}

/** Per-connection settings that the driver does not set itself. */
export async function prepareConnection(orm: Orm, kind: DatabaseKind): Promise<void> {
  if (kind === 'sqlite') {
    const conn = orm.em.getConnection();
    await conn.execute('pragma busy_timeout = 5000');
    await conn.execute('pragma foreign_keys = on');
    const dbName = orm.config.get('dbName');
    if (dbName && dbName !== ':memory:') await conn.execute('pragma journal_mode = wal');
  }
}

export function databaseKind(orm: Orm): DatabaseKind {
  return orm.config.get('driver') === PostgreSqlDriver ? 'postgres' : 'sqlite';
}

export function databaseKindOf(em: Em): DatabaseKind {
  return em.getDriver() instanceof PostgreSqlDriver ? 'postgres' : 'sqlite';
}

/** Applies pending migrations; returns the names applied. */
export async function migrate(orm: Orm): Promise<string[]> {
  const applied = await orm.getMigrator().up();
  return applied.map((m) => m.name);
}

export async function pendingMigrations(orm: Orm): Promise<string[]> {
  const pending = await orm.getMigrator().getPendingMigrations();
  return pending.map((m) => m.name);
}
