import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanEnv, runCli } from '../helpers/cli.js';
import { freshDatabaseUrl, tempDir } from '../helpers/databases.js';
import { BIN, killChildren, spawnChild } from '../helpers/processes.js';
import { type ReplicaProcess, startReplicaProcess } from '../helpers/replica.js';
import { startTestServer } from '../helpers/server.js';

/**
 * One process at a time writes a SQLite file: a second `flotilla serve` (or migrate, or demo) on
 * it is refused with the file and the holder's pid; the lock dies with its process, even on
 * SIGKILL. Postgres replicas are unaffected.
 */

const SERVING = /serving GraphiQL at/;

function serveOn(dataDir: string, file: string) {
  return spawnChild([BIN, 'serve'], {
    ...cleanEnv(),
    FLOTILLA_DATABASE_URL: `sqlite:${file}`,
    FLOTILLA_DATA_DIR: dataDir,
    FLOTILLA_PORT: '0',
    FLOTILLA_LOG_LEVEL: 'warn',
  });
}

afterEach(async () => {
  await killChildren();
});

describe('the single-writer guard on SQLite', () => {
  it('refuses a second serve, migrate and demo on the same file, naming it and the holder, and is not stale after SIGKILL', async () => {
    const dataDir = tempDir('flotilla-writer-');
    const file = join(dataDir, 'demo.db'); // the file `flotilla demo` uses in this data directory
    const env = { FLOTILLA_DATABASE_URL: `sqlite:${file}`, FLOTILLA_DATA_DIR: dataDir, FLOTILLA_PORT: '0' };
    const first = serveOn(dataDir, file);
    await first.waitForLine(SERVING, 90_000);
    const holder = first.process.pid as number;

    const second = await runCli(['serve'], { ...env, FLOTILLA_LOG_LEVEL: 'warn' });
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`another process (pid ${holder}) has the SQLite database ${file} open for writing`);
    expect(second.stdout).not.toMatch(SERVING);
    expect(second.stderr).not.toMatch(/\n\s+at /);

    const migrate = await runCli(['migrate'], env);
    expect(migrate.code).toBe(1);
    expect(migrate.stderr).toContain(`(pid ${holder}) has the SQLite database ${file}`);

    const demo = await runCli(['demo'], { FLOTILLA_DATA_DIR: dataDir, FLOTILLA_PORT: '0' });
    expect(demo.code).toBe(1);
    expect(demo.stderr).toContain(`(pid ${holder}) has the SQLite database ${file}`);

    // The doctor reports the holder and takes nothing: the server keeps its lock.
    const held = await runCli(['doctor', '--json'], env);
    const lock = (JSON.parse(held.stdout) as { check: string; detail: string }[]).find(
      (c) => c.check === 'writer-lock',
    );
    expect(lock?.detail).toContain(`held by pid ${holder}`);

    await first.kill('SIGKILL');
    const third = serveOn(dataDir, file);
    await third.waitForLine(SERVING, 90_000);
    await third.kill('SIGTERM');
    expect((await third.exited).code).toBe(0);

    const free = await runCli(['doctor'], env);
    expect(free.stdout).toMatch(/^OK\s+writer-lock\s+free: no process writes/m);
  }, 300_000);

  it('lets several servers of one process share the file, and frees it when the last one closes', async () => {
    const url = await freshDatabaseUrl('sqlite');
    const a = await startTestServer('sqlite', { databaseUrl: url });
    const b = await startTestServer('sqlite', { databaseUrl: url, adminToken: a.adminToken });
    const refused = await runCli(['migrate'], { FLOTILLA_DATABASE_URL: url });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`(pid ${process.pid})`);
    await a.close();
    // Still held by b.
    expect((await runCli(['migrate'], { FLOTILLA_DATABASE_URL: url })).code).toBe(1);
    await b.close();
    const migrated = await runCli(['migrate'], { FLOTILLA_DATABASE_URL: url });
    expect(migrated.stderr).toBe('');
    expect(migrated.code).toBe(0);
  }, 180_000);
});

describe('Postgres replicas', () => {
  it('still start together on one database', async () => {
    const url = await freshDatabaseUrl('postgres');
    const replicas: ReplicaProcess[] = [];
    try {
      replicas.push(await startReplicaProcess(url));
      replicas.push(await startReplicaProcess(url));
      for (const replica of replicas) {
        const res = await fetch(replica.url.replace(/\/graphql$/, '/readyz'));
        expect(res.status).toBe(200);
      }
    } finally {
      for (const replica of replicas) replica.child.kill('SIGKILL');
    }
  }, 180_000);
});
