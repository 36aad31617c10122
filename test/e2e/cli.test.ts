import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DRIVERS, freshDatabaseUrl, tempDir } from '../helpers/databases.js';

const BIN = resolve('bin/flotilla.js');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...cleanEnv(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

/** The child sees only what a user's shell would give it, not the test runner's FLOTILLA_* settings. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('FLOTILLA_')) env[k] = v;
  return env;
}

/** Starts `flotilla serve` and resolves once it has printed the GraphiQL URL. */
function serve(
  env: Record<string, string>,
  args: string[] = [],
): Promise<{ child: ChildProcess; output: () => string; url: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', ...args], {
      env: { ...cleanEnv(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const match = /serving GraphiQL at (http:\/\/\S+)/.exec(out);
      if (match) resolvePromise({ child, output: () => out, url: match[1] });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('close', (code) => reject(new Error(`serve exited with ${code}: ${out}`)));
  });
}

describe('flotilla CLI', () => {
  it('prints help', async () => {
    const result = await run(['--help']);
    expect(result.code).toBe(0);
    for (const word of ['serve', 'migrate', 'token admin', 'keys rotate-secrets', 'keys list-secrets'])
      expect(result.stdout).toContain(word);
  });

  it('manages the secrets keys: a generated key file, rotate-secrets adds one, list-secrets shows them, remove-secrets removes an unused one', async () => {
    const env = {
      FLOTILLA_DATABASE_URL: await freshDatabaseUrl('sqlite'),
      FLOTILLA_DATA_DIR: tempDir('flotilla-cli-'),
    };
    // The first command creates the key file; rotating adds a second key, first in the file.
    const rotated = await run(['keys', 'rotate-secrets'], env);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(statSync(join(env.FLOTILLA_DATA_DIR, 'secrets.keys.json')).mode & 0o777).toBe(0o600);
    const fresh = /new secrets key (\S+)/.exec(rotated.stderr)?.[1];
    expect(rotated.stdout.trim()).toBe(`re-encrypted 0 secret(s) under key ${fresh}`);
    const listed = await run(['keys', 'list-secrets'], env);
    const lines = listed.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe(`${fresh}  0 secret(s)  ENCRYPTING`);
    const original = lines[1].split(/\s+/)[0];
    expect(original).not.toBe(fresh);
    const removed = await run(['keys', 'remove-secrets', original], env);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stderr).toContain(`removed secrets key ${original}`);
  }, 120_000);

  it('refuses a bad configuration, naming every variable at once, and exits non-zero', async () => {
    const result = await run(['migrate'], {
      FLOTILLA_DATABASE_URL: 'mysql://localhost/fleet',
      FLOTILLA_PORT: 'eighty',
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('FLOTILLA_DATABASE_URL: unknown database scheme "mysql:"');
    expect(result.stderr).toContain('FLOTILLA_PORT:');
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('refuses an unknown command', async () => {
    const result = await run(['launch']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown command "launch"');
  });

  it.each(DRIVERS)('migrates a %s database once, then reports it up to date', async (kind) => {
    const env = { FLOTILLA_DATABASE_URL: await freshDatabaseUrl(kind) };
    const first = await run(['migrate'], env);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/applied \d+ migration\(s\)/);
    const second = await run(['migrate'], env);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain('up to date');
  });

  it('refuses to serve a database with pending migrations when told not to migrate', async () => {
    const result = await run(['serve', '--no-migrate', '--port', '0'], {
      FLOTILLA_DATABASE_URL: await freshDatabaseUrl('sqlite'),
      FLOTILLA_LOG_LEVEL: 'silent',
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('pending migration');
  });

  it('serves GraphiQL on first start with a printed admin token, mints more, and stops cleanly on SIGTERM', async () => {
    const dataDir = tempDir('flotilla-cli-');
    const env = {
      FLOTILLA_DATABASE_URL: `sqlite:${join(dataDir, 'flotilla.db')}`,
      FLOTILLA_DATA_DIR: dataDir,
      FLOTILLA_PORT: '0',
      FLOTILLA_LOG_LEVEL: 'warn',
    };
    const { child, output, url } = await serve(env);
    try {
      const tokenFile = join(dataDir, 'admin.token');
      expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
      const token = readFileSync(tokenFile, 'utf8').trim();
      expect(output()).toContain(`Bearer ${token}`);

      const page = await fetch(url, { headers: { accept: 'text/html' } });
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('GraphiQL');

      const viewer = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: '{ viewer { platformAdmin } }' }),
      });
      expect(await viewer.json()).toEqual({ data: { viewer: { platformAdmin: true } } });

      // `token admin` mints another working token against the same database.
      const minted = await run(['token', 'admin'], env);
      expect(minted.code).toBe(0);
      const second = minted.stdout.trim();
      expect(second).not.toBe(token);
      const check = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${second}` },
        body: JSON.stringify({ query: '{ viewer { subject } }' }),
      });
      expect(((await check.json()) as { data: { viewer: { subject: string } } }).data.viewer.subject).toBe(
        'platform-admin',
      );

      const socket = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
      await new Promise<void>((r) => socket.on('open', () => r()));
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
      await new Promise<void>((r) => socket.once('message', () => r()));
      const closeCode = new Promise<number>((r) => socket.on('close', (code) => r(code)));
      const exitCode = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await closeCode).toBe(1001);
      expect(await exitCode).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }

    // A second start finds the admin token and mints none.
    const again = await serve(env);
    const exited = new Promise<number | null>((r) => again.child.on('close', (code) => r(code)));
    again.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(again.output()).not.toContain('First start');
  });
});
