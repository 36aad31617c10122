import { existsSync, readFileSync, statSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { importJWK, type JWK } from 'jose';
import pg from 'pg';
import sqlite3 from 'sqlite3';
import { SIGNING_ALG } from '../auth/keys.js';
import {
  type Config,
  ConfigError,
  type DatabaseTarget,
  describeDatabase,
  ENV_NAMES,
  loadConfig,
} from '../config/index.js';
import { POSTGRES_MIGRATIONS } from '../db/migrations/postgres/index.js';
import { SQLITE_MIGRATIONS } from '../db/migrations/sqlite/index.js';
import { MIGRATIONS_TABLE } from '../db/orm.js';
import { probeWriterLock } from '../db/writer-lock.js';
import { POSTGRES_HORIZON_SQL } from '../events/reader.js';

/**
 * `flotilla doctor`: looks at a Flotilla installation the way its server would, without changing
 * it (SQLite is opened read-only; Postgres sees only reads, one LISTEN and one NOTIFY on a channel
 * of its own), and prints one line per check with a hint on what to do about a warning or a
 * failure. With `--production` it also lints the configuration for a production deployment.
 */

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  /** What was checked, e.g. "migrations" or "production:csrf". */
  check: string;
  status: CheckStatus;
  detail: string;
  /** What to do about it (warn and fail only). */
  hint?: string;
}

export interface DoctorThresholds {
  /** Free space below this (MiB) in the SQLite file's directory is a warning. */
  diskWarnMb: number;
  /** ... and below this, a failure. */
  diskFailMb: number;
  /** A difference between this host's clock and the database's above this (ms) is a warning. */
  maxClockSkewMs: number;
  /** Committed events held back by a transaction open longer than this (s) is a warning. */
  maxEventLagSeconds: number;
}

export const DOCTOR_DEFAULTS: DoctorThresholds = {
  diskWarnMb: 1024,
  diskFailMb: 100,
  maxClockSkewMs: 1_000,
  maxEventLagSeconds: 60,
};

/** Oldest SQLite Flotilla supports (`returning`, used by the ORM, came in 3.35). */
export const MIN_SQLITE_VERSION = '3.35.0';
/** Oldest Postgres Flotilla supports (`pg_current_snapshot`, which the event log's horizon reads, came in 13). */
export const MIN_POSTGRES_VERSION = 13;
/** How long connecting to Postgres, and a LISTEN round trip, may take before the check fails. */
export const DOCTOR_TIMEOUT_MS = 5_000;
/** The channel of the LISTEN round trip: the doctor's own, so no server's event hub wakes up. */
export const DOCTOR_CHANNEL = 'flotilla_doctor';

export const DOCTOR_HELP = `flotilla doctor [--production] [--json] [--disk-warn-mb N] [--disk-fail-mb N]
                [--max-clock-skew-ms N] [--max-event-lag-seconds N]

Checks the configuration, the database (reachable, version, migrations, LISTEN on Postgres, clock
skew, signing keys, free disk for SQLite, event-log lag, the SQLite writer lock) and prints one line
per check with a hint. Exits 1 when any check fails. --production also lints the configuration
for production (CSRF, introspection, key file, sign-in, rate limits, admin token file).
`;

/** Runs the command: parses its flags, prints the report, returns the exit code. */
export async function runDoctor(
  args: string[],
  env: NodeJS.ProcessEnv,
  out: (text: string) => void = (text) => process.stdout.write(text),
  err: (text: string) => void = (text) => process.stderr.write(text),
): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        production: { type: 'boolean' },
        json: { type: 'boolean' },
        'disk-warn-mb': { type: 'string' },
        'disk-fail-mb': { type: 'string' },
        'max-clock-skew-ms': { type: 'string' },
        'max-event-lag-seconds': { type: 'string' },
      },
    }));
  } catch (e) {
    err(`${(e as Error).message}\n\n${DOCTOR_HELP}`);
    return 2;
  }
  if (values.help) {
    out(DOCTOR_HELP);
    return 0;
  }
  const thresholds = { ...DOCTOR_DEFAULTS };
  for (const [flag, key] of [
    ['disk-warn-mb', 'diskWarnMb'],
    ['disk-fail-mb', 'diskFailMb'],
    ['max-clock-skew-ms', 'maxClockSkewMs'],
    ['max-event-lag-seconds', 'maxEventLagSeconds'],
  ] as const) {
    const raw = values[flag];
    if (raw === undefined) continue;
    const value = Number(raw);
    if (typeof raw !== 'string' || !Number.isFinite(value) || value < 0) {
      err(`flotilla doctor: --${flag} must be a number of at least 0, got "${String(raw)}"\n`);
      return 2;
    }
    thresholds[key] = value;
  }
  const results = await diagnose(env, { production: values.production === true, thresholds });
  out(values.json ? `${JSON.stringify(results, null, 2)}\n` : formatReport(results));
  return results.some((r) => r.status === 'fail') ? 1 : 0;
}

/** One line per check: status, what, and the hint on warn/fail. */
export function formatReport(results: CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.check.length));
  const lines = results.map(
    (r) =>
      `${r.status.toUpperCase().padEnd(4)}  ${r.check.padEnd(width)}  ${r.detail}${r.hint ? `  — fix: ${r.hint}` : ''}`,
  );
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  lines.push('', `${failed} failed, ${warned} warning(s), ${results.length - failed - warned} ok`);
  return `${lines.join('\n')}\n`;
}

/** Every check, in order. Never throws: a check that cannot run is a failed check. */
export async function diagnose(
  env: NodeJS.ProcessEnv,
  options: { production: boolean; thresholds: DoctorThresholds },
): Promise<CheckResult[]> {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (e) {
    const problems = e instanceof ConfigError ? e.problems : [(e as Error).message];
    return [
      {
        check: 'config',
        status: 'fail',
        detail: `the configuration does not load: ${problems.join('; ')}`,
        hint: 'correct the settings named (FLOTILLA_* variables or FLOTILLA_CONFIG_FILE; see README, "Configuration")',
      },
    ];
  }
  const results: CheckResult[] = [
    { check: 'config', status: 'ok', detail: `loaded (database ${describeDatabase(config.databaseUrl)})` },
  ];
  const add = async (check: string, run: () => Promise<CheckResult | CheckResult[] | null>) => {
    try {
      const result = await run();
      if (result) results.push(...(Array.isArray(result) ? result : [result]));
    } catch (e) {
      results.push({
        check,
        status: 'fail',
        detail: `the check could not run: ${(e as Error).message}`,
        hint: 'see the message; run again with the database reachable',
      });
    }
  };

  const target = config.databaseUrl;
  let store: Store | null = null;
  await add('database', async () => {
    const opened = await openStore(target);
    if ('failure' in opened) return opened.failure;
    store = opened.store;
    return checkVersion(store, target);
  });
  const connected = store as Store | null;
  try {
    if (connected) {
      await add('migrations', () => checkMigrations(connected));
      if (target.kind === 'postgres') {
        await add('listen', () => checkListen(connected, config.eventListenUrl ?? target));
        await add('clock-skew', () => checkClockSkew(connected, options.thresholds));
      }
      await add('signing-keys', () => checkSigningKeys(connected, config, options.production));
      await add('event-log', () => checkEventLog(connected, options.thresholds));
    } else if (config.signingKeyFile) {
      await add('signing-keys', () => checkKeyFile(config.signingKeyFile as string, options.production));
    }
    if (target.kind === 'sqlite' && target.location !== ':memory:') {
      await add('disk-space', () => checkDisk(target.location, options.thresholds));
      await add('writer-lock', () => checkWriterLock(target));
    }
    if (options.production) await add('production', () => productionLint(config, env, connected));
  } finally {
    await connected?.close().catch(() => undefined);
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// The store, read through the plain drivers (not the ORM, which would set pragmas and create its
// migrations table): SQLite read-only, Postgres one connection.

type Row = Record<string, unknown>;

interface Store {
  kind: DatabaseTarget['kind'];
  /** Runs a statement; `?` placeholders on both drivers. */
  all(sql: string, params?: unknown[]): Promise<Row[]>;
  hasTable(name: string): Promise<boolean>;
  close(): Promise<void>;
}

async function openStore(target: DatabaseTarget): Promise<{ store: Store } | { failure: CheckResult }> {
  const where = describeDatabase(target);
  if (target.kind === 'sqlite') {
    if (target.location !== ':memory:' && !existsSync(target.location)) {
      return {
        failure: {
          check: 'database',
          status: 'fail',
          detail: `no SQLite database at ${resolve(target.location)}`,
          hint: 'run `flotilla migrate` (or start `flotilla serve`) to create it, or point FLOTILLA_DATABASE_URL at the existing file',
        },
      };
    }
    try {
      return { store: await openSqlite(target.location) };
    } catch (e) {
      return {
        failure: {
          check: 'database',
          status: 'fail',
          detail: `cannot open ${where}: ${(e as Error).message}`,
          hint: 'check the path and its permissions',
        },
      };
    }
  }
  const client = new pg.Client({
    connectionString: target.location,
    connectionTimeoutMillis: DOCTOR_TIMEOUT_MS,
    application_name: 'flotilla-doctor',
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => undefined);
    return {
      failure: {
        check: 'database',
        status: 'fail',
        detail: `cannot reach ${where}: ${(e as Error).message || (e as { code?: string }).code}`,
        hint: 'check FLOTILLA_DATABASE_URL (host, port, credentials, database name) and that Postgres is running and reachable from here',
      },
    };
  }
  return {
    store: {
      kind: 'postgres',
      async all(sql, params = []) {
        let n = 0;
        const text = sql.replace(/\?/g, () => `$${++n}`);
        return (await client.query(text, params)).rows as Row[];
      },
      async hasTable(name) {
        const rows = (await client.query('select to_regclass($1) is not null as "present"', [name])).rows;
        return rows[0]?.present === true;
      },
      close: () => client.end(),
    },
  };
}

function openSqlite(location: string): Promise<Store> {
  return new Promise((done, fail) => {
    const connection = new sqlite3.Database(location, sqlite3.OPEN_READONLY, (e) => {
      if (e) return fail(e);
      connection.configure('busyTimeout', DOCTOR_TIMEOUT_MS);
      const all = (sql: string, params: unknown[] = []) =>
        new Promise<Row[]>((ok, no) => connection.all(sql, params, (err, rows) => (err ? no(err) : ok(rows as Row[]))));
      done({
        kind: 'sqlite',
        all,
        async hasTable(name) {
          return (await all(`select 1 from sqlite_master where type = 'table' and name = ?`, [name])).length > 0;
        },
        close: () => new Promise<void>((ok) => connection.close(() => ok())),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The checks.

async function checkVersion(store: Store, target: DatabaseTarget): Promise<CheckResult> {
  const where = describeDatabase(target);
  if (store.kind === 'sqlite') {
    const version = String((await store.all('select sqlite_version() as "v"'))[0]?.v);
    const ok = compareVersions(version, MIN_SQLITE_VERSION) >= 0;
    return {
      check: 'database',
      status: ok ? 'ok' : 'fail',
      detail: `${where}: SQLite ${version} (minimum ${MIN_SQLITE_VERSION})`,
      hint: ok ? undefined : 'reinstall Flotilla so its SQLite binding is current (npm ci)',
    };
  }
  const rows = await store.all(
    `select current_setting('server_version') as "version", current_setting('server_version_num')::int as "num"`,
  );
  const major = Math.floor(Number(rows[0]?.num) / 10_000);
  const ok = major >= MIN_POSTGRES_VERSION;
  return {
    check: 'database',
    status: ok ? 'ok' : 'fail',
    detail: `${where}: Postgres ${String(rows[0]?.version)} (minimum ${MIN_POSTGRES_VERSION})`,
    hint: ok ? undefined : `upgrade Postgres to ${MIN_POSTGRES_VERSION} or later`,
  };
}

async function checkMigrations(store: Store): Promise<CheckResult> {
  const known = (store.kind === 'sqlite' ? SQLITE_MIGRATIONS : POSTGRES_MIGRATIONS).map((m) => m.name);
  const applied = (await store.hasTable(MIGRATIONS_TABLE))
    ? (await store.all(`select "name" from "${MIGRATIONS_TABLE}"`)).map((r) => String(r.name))
    : [];
  const pending = known.filter((name) => !applied.includes(name));
  const unknown = applied.filter((name) => !known.includes(name));
  if (pending.length > 0) {
    return {
      check: 'migrations',
      status: 'fail',
      detail: `${pending.length} of ${known.length} migration(s) pending (${pending.join(', ')})`,
      hint: 'run `flotilla migrate` (or start `flotilla serve` without --no-migrate)',
    };
  }
  if (unknown.length > 0) {
    return {
      check: 'migrations',
      status: 'warn',
      detail: `the database has ${unknown.length} migration(s) this build does not know (${unknown.join(', ')})`,
      hint: 'a newer Flotilla migrated this database: run that version, or restore a backup made for this one',
    };
  }
  return { check: 'migrations', status: 'ok', detail: `all ${known.length} applied` };
}

/** LISTEN on a dedicated connection (the way a replica listens), NOTIFY from the other, wait for it. */
async function checkListen(store: Store, listenTarget: DatabaseTarget): Promise<CheckResult> {
  const hint =
    'LISTEN needs a direct session: point FLOTILLA_EVENT_LISTEN_URL at Postgres itself (or a session-mode pooler), not at a transaction-mode pooler';
  const listener = new pg.Client({
    connectionString: listenTarget.location,
    connectionTimeoutMillis: DOCTOR_TIMEOUT_MS,
    application_name: 'flotilla-doctor-listen',
  });
  listener.on('error', () => undefined);
  try {
    await listener.connect();
  } catch (e) {
    await listener.end().catch(() => undefined);
    return {
      check: 'listen',
      status: 'fail',
      detail: `cannot open the LISTEN connection to ${describeDatabase(listenTarget)}: ${(e as Error).message}`,
      hint,
    };
  }
  try {
    const payload = `${process.pid}-${Math.random().toString(36).slice(2)}`;
    const heard = new Promise<boolean>((done) => {
      const timer = setTimeout(() => done(false), DOCTOR_TIMEOUT_MS);
      listener.on('notification', (msg) => {
        if (msg.channel === DOCTOR_CHANNEL && msg.payload === payload) {
          clearTimeout(timer);
          done(true);
        }
      });
    });
    await listener.query(`listen ${DOCTOR_CHANNEL}`);
    await store.all('select pg_notify(?, ?)', [DOCTOR_CHANNEL, payload]);
    if (!(await heard)) {
      return {
        check: 'listen',
        status: 'fail',
        detail: `LISTEN on ${describeDatabase(listenTarget)} heard no NOTIFY within ${DOCTOR_TIMEOUT_MS} ms`,
        hint,
      };
    }
    return { check: 'listen', status: 'ok', detail: `a NOTIFY reached the LISTEN connection` };
  } finally {
    await listener.end().catch(() => undefined);
  }
}

async function checkClockSkew(store: Store, thresholds: DoctorThresholds): Promise<CheckResult> {
  const before = Date.now();
  const rows = await store.all(`select (extract(epoch from clock_timestamp()) * 1000)::float8 as "ms"`);
  const after = Date.now();
  const skew = Math.round(Number(rows[0]?.ms) - (before + after) / 2);
  const detail = `this host's clock is ${Math.abs(skew)} ms ${skew > 0 ? 'behind' : 'ahead of'} the database's (±${after - before} ms round trip; warning above ${thresholds.maxClockSkewMs} ms)`;
  if (Math.abs(skew) > thresholds.maxClockSkewMs) {
    return {
      check: 'clock-skew',
      status: 'warn',
      detail,
      hint: 'synchronise this host and the database server with NTP: tokens, events and audit entries are dated by the replicas’ clocks',
    };
  }
  return { check: 'clock-skew', status: 'ok', detail };
}

async function checkSigningKeys(store: Store, config: Config, production: boolean): Promise<CheckResult> {
  if (config.signingKeyFile) return checkKeyFile(config.signingKeyFile, production);
  if (!(await store.hasTable('signing_keys'))) {
    return {
      check: 'signing-keys',
      status: 'warn',
      detail: 'no signing-key table yet',
      hint: 'run `flotilla migrate`; the first `flotilla serve` then creates a key',
    };
  }
  const rows = await store.all('select "id", "alg", "private_jwk", "retired_at" from "signing_keys"');
  return judgeKeys(
    rows.map((r) => ({
      kid: String(r.id),
      alg: String(r.alg),
      privateJwk: (typeof r.private_jwk === 'string' ? JSON.parse(r.private_jwk) : r.private_jwk) as JWK,
      retired: r.retired_at !== null && r.retired_at !== undefined,
    })),
    'in the database',
  );
}

async function checkKeyFile(file: string, production: boolean): Promise<CheckResult> {
  if (!existsSync(file)) {
    return {
      check: 'signing-keys',
      status: 'warn',
      detail: `the key file ${file} does not exist yet`,
      hint: 'start `flotilla serve` once (or run `flotilla keys rotate`): it creates the file, mode 0600',
    };
  }
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) {
    return {
      check: 'signing-keys',
      status: production ? 'fail' : 'warn',
      detail: `the key file ${file} is readable by other users (mode ${mode.toString(8).padStart(4, '0')}): whoever reads it can mint tokens`,
      hint: `chmod 600 ${file} (and make the server's user its owner)`,
    };
  }
  let parsed: { keys?: { kid: string; alg: string; privateJwk: JWK; retiredAt: string | null }[] };
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as typeof parsed;
  } catch (e) {
    return {
      check: 'signing-keys',
      status: 'fail',
      detail: `the key file ${file} is not valid JSON: ${(e as Error).message}`,
      hint: 'restore the file from a backup, or move it away and rotate (tokens it signed stop verifying)',
    };
  }
  if (!Array.isArray(parsed.keys)) {
    return {
      check: 'signing-keys',
      status: 'fail',
      detail: `the key file ${file} has no "keys" array`,
      hint: 'restore the file from a backup, or move it away and rotate (tokens it signed stop verifying)',
    };
  }
  return judgeKeys(
    parsed.keys.map((k) => ({ kid: k.kid, alg: k.alg, privateJwk: k.privateJwk, retired: Boolean(k.retiredAt) })),
    `in ${file} (mode ${mode.toString(8).padStart(4, '0')})`,
  );
}

async function judgeKeys(
  keys: { kid: string; alg: string; privateJwk: JWK; retired: boolean }[],
  where: string,
): Promise<CheckResult> {
  const active = keys.filter((k) => !k.retired);
  if (active.length === 0) {
    return {
      check: 'signing-keys',
      status: 'warn',
      detail: `no active signing key ${where}`,
      hint: 'start `flotilla serve` once or run `flotilla keys rotate` to create one',
    };
  }
  const broken: string[] = [];
  for (const key of keys) {
    try {
      await importJWK(key.privateJwk, key.alg || SIGNING_ALG);
    } catch (e) {
      broken.push(`${key.kid} (${(e as Error).message})`);
    }
  }
  if (broken.length > 0) {
    return {
      check: 'signing-keys',
      status: 'fail',
      detail: `${broken.length} key(s) ${where} do not load: ${broken.join(', ')}`,
      hint: 'restore the keys from a backup, or `flotilla keys rotate` and `flotilla keys remove KID` the broken ones (their tokens stop verifying)',
    };
  }
  return { check: 'signing-keys', status: 'ok', detail: `${keys.length} key(s) ${where}, all load; one signs` };
}

async function checkEventLog(store: Store, thresholds: DoctorThresholds): Promise<CheckResult | null> {
  if (!(await store.hasTable('events')) || !(await store.hasTable('event_log_state'))) return null;
  const newest = await store.all('select "tx_id", "id" from "events" order by "tx_id" desc, "id" desc limit 1');
  const pruned = await store.all('select "pruned_tx_id", "pruned_id" from "event_log_state"');
  const position = (tx: unknown, id: unknown) =>
    store.kind === 'postgres' ? `${String(tx)}/${String(id)}` : String(id);
  const summary = `newest event ${newest[0] ? position(newest[0].tx_id, newest[0].id) : 'none'}, pruned through ${pruned[0] ? position(pruned[0].pruned_tx_id, pruned[0].pruned_id) : 'nothing'}`;
  if (store.kind === 'sqlite') return { check: 'event-log', status: 'ok', detail: `${summary} (one writer: no lag)` };
  // Events committed at or above the horizon wait for an older transaction still open in this database.
  const held = await store.all(`select count(*)::int as "n" from "events" where "tx_id" >= ${POSTGRES_HORIZON_SQL}`);
  const oldest = await store.all(
    `select "pid", extract(epoch from (clock_timestamp() - "xact_start"))::float8 as "age", "state"
     from pg_stat_activity
     where "datname" = current_database() and "backend_xid" is not null and "pid" <> pg_backend_pid()
     order by "xact_start" limit 1`,
  );
  const heldBack = Number(held[0]?.n ?? 0);
  const age = oldest[0] ? Number(oldest[0].age) : 0;
  if (heldBack > 0 && age > thresholds.maxEventLagSeconds) {
    return {
      check: 'event-log',
      status: 'warn',
      detail: `${summary}; ${heldBack} committed event(s) held back by a transaction open for ${Math.round(age)} s (pid ${String(oldest[0]?.pid)}, ${String(oldest[0]?.state)}): live streams wait for it`,
      hint: `end that session (select pg_terminate_backend(${String(oldest[0]?.pid)})) and set idle_in_transaction_session_timeout (e.g. 60s) so a forgotten session cannot hold streams back`,
    };
  }
  return {
    check: 'event-log',
    status: 'ok',
    detail: `${summary}; ${heldBack} event(s) held back${oldest[0] ? `, oldest writing transaction open ${Math.round(age)} s` : ''}`,
  };
}

async function checkDisk(location: string, thresholds: DoctorThresholds): Promise<CheckResult> {
  let dir = dirname(resolve(location));
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  const stats = await statfs(dir);
  const freeMb = Math.floor((Number(stats.bavail) * Number(stats.bsize)) / (1024 * 1024));
  const detail = `${freeMb} MiB free in ${dir} (warning below ${thresholds.diskWarnMb} MiB, failure below ${thresholds.diskFailMb} MiB)`;
  const hint =
    'free space there (old backups, logs), move the database to a bigger disk, or move to Postgres; SQLite stops writing when the disk is full';
  if (freeMb < thresholds.diskFailMb) return { check: 'disk-space', status: 'fail', detail, hint };
  if (freeMb < thresholds.diskWarnMb) return { check: 'disk-space', status: 'warn', detail, hint };
  return { check: 'disk-space', status: 'ok', detail };
}

async function checkWriterLock(target: DatabaseTarget): Promise<CheckResult | null> {
  const lock = await probeWriterLock(target);
  if (!lock) return null;
  if (lock.state === 'free') {
    return { check: 'writer-lock', status: 'ok', detail: `free: no process writes ${resolve(target.location)}` };
  }
  return {
    check: 'writer-lock',
    status: 'ok',
    detail: `held by ${lock.holderPid ? `pid ${lock.holderPid}` : 'another process'} (${lock.file}): a second serve, migrate or demo on this file is refused while it runs`,
  };
}

/** What a production deployment must not leave to defaults. */
async function productionLint(config: Config, env: NodeJS.ProcessEnv, store: Store | null): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  results.push(
    config.csrfPrevention
      ? { check: 'production:csrf', status: 'ok', detail: 'CSRF prevention is on' }
      : {
          check: 'production:csrf',
          status: 'fail',
          detail:
            'CSRF prevention is off (FLOTILLA_CSRF_PREVENTION=false): a browser on another site can send operations with a visitor’s cookies or credentials',
          hint: 'unset FLOTILLA_CSRF_PREVENTION (it defaults to true)',
        },
  );
  results.push(
    isExplicit(env, 'introspection')
      ? {
          check: 'production:introspection',
          status: 'ok',
          detail: `introspection is explicitly ${config.introspection ? 'on' : 'off'}`,
        }
      : {
          check: 'production:introspection',
          status: 'fail',
          detail: 'introspection is on by default, not by decision',
          hint: 'set FLOTILLA_INTROSPECTION=false (or =true if clients need the schema at run time)',
        },
  );
  if (config.signingKeyFile && existsSync(config.signingKeyFile)) {
    const mode = statSync(config.signingKeyFile).mode & 0o777;
    results.push(
      mode & 0o077
        ? {
            check: 'production:signing-key-file',
            status: 'fail',
            detail: `${config.signingKeyFile} is readable by other users (mode ${mode.toString(8).padStart(4, '0')})`,
            hint: `chmod 600 ${config.signingKeyFile}`,
          }
        : {
            check: 'production:signing-key-file',
            status: 'ok',
            detail: `${config.signingKeyFile} is private (mode ${mode.toString(8).padStart(4, '0')})`,
          },
    );
  }
  const issuers = config.oidcIssuers.length + config.hs256Issuers.length;
  const apiTokens = store ? await activeApiTokens(store) : 0;
  results.push(
    issuers + apiTokens > 0
      ? {
          check: 'production:authentication',
          status: 'ok',
          detail: `${config.oidcIssuers.length} OIDC issuer(s), ${config.hs256Issuers.length} HS256 issuer(s), ${apiTokens} active API token(s)`,
        }
      : {
          check: 'production:authentication',
          status: 'fail',
          detail:
            'no OIDC (or HS256) issuer is configured and no API token exists: only the bootstrap admin token signs in',
          hint: 'configure FLOTILLA_OIDC_ISSUERS for people and mint API tokens (createApiToken) for automation',
        },
  );
  results.push(
    config.rateLimitPerMinute > 0
      ? {
          check: 'production:rate-limit',
          status: 'ok',
          detail: `${config.rateLimitPerMinute} operations per token per minute`,
        }
      : {
          check: 'production:rate-limit',
          status: 'fail',
          detail: 'rate limiting is off (FLOTILLA_RATE_LIMIT_PER_MINUTE=0)',
          hint: 'unset FLOTILLA_RATE_LIMIT_PER_MINUTE (600 by default) or set a positive limit',
        },
  );
  const adminTokenFile = join(config.dataDir, 'admin.token');
  if (existsSync(adminTokenFile)) {
    const mode = statSync(adminTokenFile).mode & 0o777;
    results.push({
      check: 'production:admin-token-file',
      status: mode & 0o077 ? 'fail' : 'warn',
      detail: `the bootstrap platform-admin token is still on disk at ${adminTokenFile} (mode ${mode.toString(8).padStart(4, '0')})`,
      hint: `store it in your secret manager, then delete ${adminTokenFile}`,
    });
  }
  if (config.logLevel === 'trace' || config.logLevel === 'debug') {
    results.push({
      check: 'production:log-level',
      status: 'warn',
      detail: `FLOTILLA_LOG_LEVEL=${config.logLevel} logs every SQL statement or request detail`,
      hint: 'use info (the default) or warn in production',
    });
  }
  return results;
}

/** Whether the operator set this setting (environment or config file), rather than taking its default. */
function isExplicit(env: NodeJS.ProcessEnv, key: keyof typeof ENV_NAMES): boolean {
  const fromEnv = env[ENV_NAMES[key]];
  if (fromEnv !== undefined && fromEnv !== '') return true;
  const file = env.FLOTILLA_CONFIG_FILE;
  if (!file) return false;
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>)[key] !== undefined;
  } catch {
    return false;
  }
}

async function activeApiTokens(store: Store): Promise<number> {
  if (!(await store.hasTable('api_tokens'))) return 0;
  const rows = await store.all(`select "expires_at" from "api_tokens" where "kind" = 'API' and "revoked_at" is null`);
  const now = Date.now();
  return rows.filter((r) => r.expires_at === null || toMillis(r.expires_at) > now).length;
}

function toMillis(value: unknown): number {
  if (value instanceof Date) return value.getTime();
  if (typeof value === 'number') return value;
  const parsed = Date.parse(String(value));
  return Number.isNaN(parsed) ? Number(value) : parsed;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
