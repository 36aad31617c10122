import { chmodSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { DatabaseKind } from '../../src/config/index.js';
import { type CliResult, runCli } from '../helpers/cli.js';
import { DRIVERS, freshDatabaseUrl, tempDir } from '../helpers/databases.js';
import { createTenant, registerWorker, uniqueName } from '../helpers/fleet.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';

/**
 * `flotilla doctor` as an operator runs it: the real CLI in its own process. Each check is broken
 * on purpose and its line must say FAIL (or WARN) with a fix, and the exit code must follow.
 */

// Every test runs the CLI several times, each a process of its own.
vi.setConfig({ testTimeout: 180_000 });

interface Check {
  check: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
  hint?: string;
}

const doctor = (env: Record<string, string>, args: string[] = [], nodeFlags?: string[]) =>
  runCli(['doctor', ...args], { FLOTILLA_LOG_LEVEL: 'warn', ...env }, { nodeFlags });

/** The report's line for one check (text output), or undefined. */
function lineOf(result: CliResult, check: string): string | undefined {
  return result.stdout.split('\n').find((line) => new RegExp(`^(OK|WARN|FAIL)\\s+${check}\\s`).test(line));
}

function parsed(result: CliResult): Check[] {
  return JSON.parse(result.stdout) as Check[];
}

function checkOf(result: CliResult, check: string): Check | undefined {
  return parsed(result).find((c) => c.check === check);
}

/** A transaction that, having written, stays open (an operator's forgotten session). */
async function openWritingTransaction(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('begin');
  await client.query('select pg_current_xact_id()');
  return client;
}

describe('flotilla doctor', () => {
  it('turns a configuration that does not load into a failed check with the variables named, not a stack trace', async () => {
    const text = await doctor({ FLOTILLA_PORT: 'eighty', FLOTILLA_DATABASE_URL: 'mysql://localhost/fleet' });
    expect(text.code).toBe(1);
    const line = lineOf(text, 'config');
    expect(line).toMatch(/^FAIL/);
    expect(line).toContain('FLOTILLA_PORT');
    expect(line).toContain('FLOTILLA_DATABASE_URL');
    expect(line).toContain('fix:');
    expect(`${text.stdout}${text.stderr}`).not.toMatch(/\n\s+at /);

    const json = await doctor({ FLOTILLA_PORT: 'eighty' }, ['--json']);
    expect(json.code).toBe(1);
    expect(parsed(json)).toEqual([expect.objectContaining({ check: 'config', status: 'fail' })]);
  });

  it('is listed by flotilla --help and refuses a bad threshold', async () => {
    const help = await runCli(['--help']);
    expect(help.stdout).toContain('flotilla doctor [--production] [--json]');
    const bad = await doctor({}, ['--disk-fail-mb', 'lots']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--disk-fail-mb');
  });
});

describe.each(DRIVERS)('flotilla doctor on %s', (kind: DatabaseKind) => {
  let server: TestServer;
  let dataDir: string;
  let keyFile: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dataDir = tempDir('flotilla-doctor-');
    keyFile = join(dataDir, 'keys.json');
    server = await startTestServer(kind, {
      env: { FLOTILLA_DATA_DIR: dataDir, FLOTILLA_SIGNING_KEY_FILE: keyFile },
    });
    env = { FLOTILLA_DATABASE_URL: server.databaseUrl, FLOTILLA_DATA_DIR: dataDir, FLOTILLA_SIGNING_KEY_FILE: keyFile };
  });
  afterAll(async () => {
    await server?.close();
  });

  it('passes a healthy installation, one line per check, and --json parses', async () => {
    const text = await doctor(env);
    expect(text.code).toBe(0);
    for (const check of ['config', 'database', 'migrations', 'signing-keys', 'event-log'])
      expect(lineOf(text, check)).toMatch(/^OK/);
    expect(text.stdout).toMatch(/0 failed/);

    const json = await doctor(env, ['--json']);
    expect(json.code).toBe(0);
    const checks = parsed(json);
    expect(checks.every((c) => c.status === 'ok')).toBe(true);
    expect(checkOf(json, 'database')?.detail).toMatch(kind === 'sqlite' ? /SQLite 3\.\d+/ : /Postgres \d+/);
    if (kind === 'postgres') {
      expect(checkOf(json, 'listen')?.status).toBe('ok');
      expect(checkOf(json, 'clock-skew')?.status).toBe('ok');
      // Replicas share Postgres: there is no writer lock, and no local disk to watch.
      expect(checkOf(json, 'writer-lock')).toBeUndefined();
      expect(checkOf(json, 'disk-space')).toBeUndefined();
    } else {
      // The server of this test process writes the file: the doctor names it and takes nothing.
      expect(checkOf(json, 'writer-lock')?.detail).toContain(`held by pid ${process.pid}`);
      expect(checkOf(json, 'disk-space')?.status).toBe('ok');
      expect(checkOf(json, 'listen')).toBeUndefined();
    }
  });

  it('fails an unreachable database with a hint', async () => {
    const url =
      kind === 'sqlite'
        ? `sqlite:${join(tempDir(), 'missing', 'flotilla.db')}`
        : 'postgres://postgres:postgres@127.0.0.1:1/flotilla';
    const result = await doctor({ FLOTILLA_DATABASE_URL: url });
    expect(result.code).toBe(1);
    const line = lineOf(result, 'database');
    expect(line).toMatch(/^FAIL/);
    expect(line).toMatch(kind === 'sqlite' ? /no SQLite database at .*missing/ : /cannot reach postgres:/);
    expect(line).toContain('fix:');
    // Nothing that needs the database runs against it.
    expect(lineOf(result, 'migrations')).toBeUndefined();
  });

  it('fails pending migrations on a fresh empty database, and passes them once migrated', async () => {
    const url = await freshDatabaseUrl(kind);
    if (kind === 'sqlite') writeFileSync(url.slice('sqlite:'.length), ''); // an empty SQLite file
    const before = await doctor({ FLOTILLA_DATABASE_URL: url });
    expect(before.code).toBe(1);
    expect(lineOf(before, 'migrations')).toMatch(
      /^FAIL\s+migrations\s+\d+ of \d+ migration\(s\) pending .*fix: run `flotilla migrate`/,
    );
    expect(lineOf(before, 'database')).toMatch(/^OK/);

    expect((await runCli(['migrate'], { FLOTILLA_DATABASE_URL: url })).code).toBe(0);
    const after = await doctor({ FLOTILLA_DATABASE_URL: url });
    expect(lineOf(after, 'migrations')).toMatch(/^OK\s+migrations\s+all \d+ applied/);
    // No server has started yet: no signing key, a warning with its fix, not a failure.
    expect(lineOf(after, 'signing-keys')).toMatch(/^WARN.*no active signing key.*fix:/);
    expect(after.code).toBe(0);
  });

  it('warns about a signing-key file other users can read, fails it in production, and fails one that does not load', async () => {
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    chmodSync(keyFile, 0o644);
    try {
      const plain = await doctor(env);
      expect(lineOf(plain, 'signing-keys')).toMatch(/^WARN.*readable by other users \(mode 0644\).*fix: chmod 600/);
      expect(plain.code).toBe(0);
      const production = await doctor(env, ['--production', '--json']);
      expect(production.code).toBe(1);
      expect(checkOf(production, 'signing-keys')?.status).toBe('fail');
      expect(checkOf(production, 'production:signing-key-file')).toMatchObject({
        status: 'fail',
        hint: `chmod 600 ${keyFile}`,
      });
    } finally {
      chmodSync(keyFile, 0o600);
    }

    const broken = join(dataDir, 'broken-keys.json');
    writeFileSync(
      broken,
      JSON.stringify({ keys: [{ kid: 'k1', alg: 'ES256', privateJwk: { kty: 'EC' }, retiredAt: null }] }),
      {
        mode: 0o600,
      },
    );
    const result = await doctor({ ...env, FLOTILLA_SIGNING_KEY_FILE: broken });
    expect(result.code).toBe(1);
    expect(lineOf(result, 'signing-keys')).toMatch(/^FAIL.*1 key\(s\) .* do not load: k1.*fix:/);
  });

  it('fails each production lint that a deployment leaves dangerous, and passes them once decided', async () => {
    const risky = await doctor({ ...env, FLOTILLA_CSRF_PREVENTION: 'false', FLOTILLA_RATE_LIMIT_PER_MINUTE: '0' }, [
      '--production',
    ]);
    expect(risky.code).toBe(1);
    expect(lineOf(risky, 'production:csrf')).toMatch(
      /^FAIL.*CSRF prevention is off.*fix: unset FLOTILLA_CSRF_PREVENTION/,
    );
    expect(lineOf(risky, 'production:introspection')).toMatch(
      /^FAIL.*by default.*fix: set FLOTILLA_INTROSPECTION=false/,
    );
    expect(lineOf(risky, 'production:authentication')).toMatch(/^FAIL.*no OIDC.*fix: configure FLOTILLA_OIDC_ISSUERS/);
    expect(lineOf(risky, 'production:rate-limit')).toMatch(/^FAIL.*rate limiting is off.*fix:/);
    // The first start wrote the admin token (mode 0600): still on disk is a warning.
    expect(lineOf(risky, 'production:admin-token-file')).toMatch(/^WARN.*admin\.token \(mode 0600\).*fix:/);
    // Without --production none of these are judged.
    expect(lineOf(await doctor({ ...env, FLOTILLA_CSRF_PREVENTION: 'false' }), 'production:csrf')).toBeUndefined();

    await server.apiToken(localId(await createTenant(server, uniqueName('doc'))), 'VIEWER');
    const decided = await doctor({ ...env, FLOTILLA_INTROSPECTION: 'false' }, ['--production', '--json']);
    for (const check of ['csrf', 'introspection', 'authentication', 'rate-limit', 'signing-key-file'])
      expect(checkOf(decided, `production:${check}`)?.status).toBe('ok');
    expect(checkOf(decided, 'production:authentication')?.detail).toMatch(/[1-9]\d* active API token/);
    expect(decided.code).toBe(0);

    const tokenFile = join(dataDir, 'admin.token');
    chmodSync(tokenFile, 0o644);
    try {
      const readable = await doctor({ ...env, FLOTILLA_INTROSPECTION: 'false' }, ['--production', '--json']);
      expect(checkOf(readable, 'production:admin-token-file')).toMatchObject({ status: 'fail' });
      expect(readable.code).toBe(1);
    } finally {
      chmodSync(tokenFile, 0o600);
    }
  });

  if (kind === 'sqlite') {
    it('warns and fails on low free disk space by its thresholds', async () => {
      const warn = await doctor(env, ['--disk-warn-mb', '1000000000', '--disk-fail-mb', '0']);
      expect(lineOf(warn, 'disk-space')).toMatch(/^WARN\s+disk-space\s+\d+ MiB free in .*fix: free space/);
      expect(warn.code).toBe(0);
      const fail = await doctor(env, ['--disk-fail-mb', '1000000000']);
      expect(lineOf(fail, 'disk-space')).toMatch(/^FAIL\s+disk-space/);
      expect(fail.code).toBe(1);
    });
  }

  if (kind === 'postgres') {
    it('warns when this host’s clock differs from the database’s', async () => {
      const skew = 'const now = Date.now; Date.now = () => now() + 60000;';
      const result = await doctor(env, [], ['--import', `data:text/javascript,${encodeURIComponent(skew)}`]);
      expect(lineOf(result, 'clock-skew')).toMatch(
        /^WARN\s+clock-skew\s+this host's clock is \d+ ms ahead.*fix: synchronise/,
      );
      expect(result.code).toBe(0);
    });

    it('fails a LISTEN connection that cannot be opened', async () => {
      const result = await doctor({ ...env, FLOTILLA_EVENT_LISTEN_URL: 'postgres://postgres:postgres@127.0.0.1:1/x' });
      expect(result.code).toBe(1);
      expect(lineOf(result, 'listen')).toMatch(
        /^FAIL\s+listen\s+cannot open the LISTEN connection.*fix: .*FLOTILLA_EVENT_LISTEN_URL/,
      );
    });

    it('warns about events held back by a transaction left open, and clears once it ends', async () => {
      const forgotten = await openWritingTransaction(server.databaseUrl.replace(/\?.*$/, ''));
      try {
        await registerWorker(server, uniqueName('held')); // commits an event after the open transaction began
        const held = await doctor(env, ['--max-event-lag-seconds', '0', '--json']);
        const check = checkOf(held, 'event-log');
        expect(check?.status, JSON.stringify(check)).toBe('warn');
        expect(check?.detail).toMatch(/[1-9]\d* committed event\(s\) held back by a transaction open/);
        expect(check?.hint).toContain('pg_terminate_backend');
        expect(held.code).toBe(0);
      } finally {
        await forgotten.query('rollback');
        await forgotten.end();
      }
      const after = await doctor(env, ['--max-event-lag-seconds', '0', '--json']);
      expect(checkOf(after, 'event-log')).toMatchObject({
        status: 'ok',
        detail: expect.stringContaining('0 event(s) held back'),
      });
    });
  }
});
