import { copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, parseDatabaseUrl } from '../../src/config/index.js';
import { openOrm } from '../../src/db/orm.js';
import { encodeEventCursor, logPosition } from '../../src/events/reader.js';
import { backupStore } from '../../src/ops/backup.js';
import { restoreCommand } from '../../src/ops/store-commands.js';
import { TableChecksum } from '../../src/ops/store-tables.js';
import { DRIVERS, freshDatabaseUrl, tempDir } from '../helpers/databases.js';
import { dataOf } from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  buildFleet,
  type CliResult,
  dumpTables,
  eventsAfter,
  type Fleet,
  runCli,
  sendMessage,
  TABLES,
  type TableName,
} from '../helpers/store-copy.js';

/** Tables the write loop (sendMessage) adds rows to; every other table is not written during the backup. */
const GROWING: readonly TableName[] = ['messages', 'events', 'audit_entries'];
/** Columns a request may touch on the side (token use is recorded, throttled). */
const VOLATILE = /"(last_used_at|updated_at)",[^\]]*\]/g;

function stable(lines: string[]): string[] {
  return lines.map((l) => l.replace(VOLATILE, '')).sort();
}

describe.each(DRIVERS)('flotilla backup and restore on %s', (kind) => {
  const dir = tempDir('flotilla-backup-');
  const backupFile = join(dir, kind === 'sqlite' ? 'fleet.db' : 'fleet.ndjson.gz');
  let source: TestServer;
  let fleet: Fleet;
  let cursorBefore: string;
  let restoredUrl: string;
  let sentDuringBackup = 0;

  beforeAll(async () => {
    source = await startTestServer(kind);
    fleet = await buildFleet(source);
    const seen = await eventsAfter(source, fleet.tenantId, null);
    cursorBefore = seen[seen.length - 1].cursor;
    // Events after the cursor that the backup is sure to hold.
    for (let i = 0; i < 3; i++) await sendMessage(source, fleet.sandboxId, `after cursor ${i}`);
  });

  afterAll(async () => {
    await source?.close();
  });

  it('backs up while writes continue, and restores into an empty database: same rows, tokens authenticate, cursors resume', async () => {
    const before = await dumpTables(source.databaseUrl);

    let writing = true;
    let sent = 0;
    const loop = (async () => {
      while (writing) {
        await sendMessage(source, fleet.sandboxId, `loop ${sent}`);
        sent++;
      }
    })();
    const sentAtStart = sent;
    const backup = await runCli(['backup', '--out', backupFile], { FLOTILLA_DATABASE_URL: source.databaseUrl });
    sentDuringBackup = sent - sentAtStart;
    writing = false;
    await loop;
    expect(backup.code, backup.stderr).toBe(0);
    expect(backup.stdout).toContain(kind === 'sqlite' ? 'sqlite-online-backup' : 'logical-export');
    expect(sentDuringBackup).toBeGreaterThan(0);
    // It holds the signing keys: readable by its owner only.
    expect(statSync(backupFile).mode & 0o777).toBe(0o600);
    const after = await dumpTables(source.databaseUrl);

    restoredUrl = await freshDatabaseUrl(kind);
    const restore = await runCli(['restore', '--from', backupFile], { FLOTILLA_DATABASE_URL: restoredUrl });
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.stdout).not.toContain('safety copy');
    const restored = await dumpTables(restoredUrl);

    // The snapshot: tables the loop does not write are as they were; the growing ones hold
    // everything written before the backup began and nothing that was never written.
    for (const table of TABLES) {
      if (GROWING.includes(table)) {
        expect(restored[table].length, table).toBeGreaterThanOrEqual(before[table].length);
        for (const row of before[table]) expect(restored[table], table).toContain(row);
        for (const row of restored[table]) expect(after[table], table).toContain(row);
      } else {
        expect(stable(restored[table]), table).toEqual(stable(after[table]));
      }
    }
    // Consistent: a message is there exactly when its MESSAGE_POSTED event is.
    const messageIds = restored.messages.map((m) => JSON.parse(m).find((e: [string]) => e[0] === 'id')[1]).sort();
    const posted = restored.events
      .map((e) => Object.fromEntries(JSON.parse(e)))
      .filter((e) => e.type === 'MESSAGE_POSTED')
      .map((e) => e.message_id)
      .sort();
    expect(posted).toEqual(messageIds);

    const server = await startTestServer(kind, { databaseUrl: restoredUrl, adminToken: source.adminToken });
    try {
      // An API token minted before the backup still authenticates (and the admin token too).
      const tenant = await server.gql<{ tenant: { id: string } | null }>(
        'query($id: ID!) { tenant(id: $id) { id } }',
        { id: fleet.tenantId },
        fleet.operatorToken,
      );
      expect(dataOf(tenant).tenant?.id).toBe(fleet.tenantId);
      const viewer = await server.gql('{ tenants(first: 5) { edges { node { id } } } }');
      expect(viewer.status).toBe(200);
      expect(viewer.body.errors).toBeUndefined();

      // The cursor taken before the backup resumes with exactly the next events.
      const sourceNext = await eventsAfter(source, fleet.tenantId, cursorBefore);
      const restoredNext = await eventsAfter(server, fleet.tenantId, cursorBefore, fleet.operatorToken);
      expect(restoredNext.length).toBeGreaterThanOrEqual(3);
      expect(restoredNext).toEqual(sourceNext.slice(0, restoredNext.length));

      // New events on the restored database come after every restored one.
      await sendMessage(server, fleet.sandboxId, 'after restore');
      const resumed = await eventsAfter(server, fleet.tenantId, cursorBefore, fleet.operatorToken);
      expect(resumed.slice(0, restoredNext.length)).toEqual(restoredNext);
      expect(resumed.length).toBe(restoredNext.length + 1);
      expect(resumed[resumed.length - 1].type).toBe('MESSAGE_POSTED');
    } finally {
      await server.close();
    }
  });

  it('refuses a database that holds data unless --force, and then keeps a safety copy of what it replaced', async () => {
    expect(restoredUrl).toBeTruthy();
    const holding = await dumpTables(restoredUrl);
    const refused = await runCli(['restore', '--from', backupFile], { FLOTILLA_DATABASE_URL: restoredUrl });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('NOT_EMPTY');
    expect(refused.stderr).toContain('--force');
    expect(await dumpTables(restoredUrl)).toEqual(holding);

    const forced = await runCli(['restore', '--from', backupFile, '--force'], { FLOTILLA_DATABASE_URL: restoredUrl });
    expect(forced.code, forced.stderr).toBe(0);
    const safetyCopy = /safety copy of the replaced contents: (\S+)/.exec(forced.stdout)?.[1];
    expect(safetyCopy, forced.stdout).toBeTruthy();
    expect(existsSync(safetyCopy as string)).toBe(true);
    // The forced restore dropped the message written after the first restore…
    const replaced = await dumpTables(restoredUrl);
    expect(replaced.messages.length).toBe(holding.messages.length - 1);
    // …and the safety copy holds it: restoring the copy gives back exactly what was replaced.
    const fromCopy = await freshDatabaseUrl(kind);
    const back = await runCli(['restore', '--from', safetyCopy as string], { FLOTILLA_DATABASE_URL: fromCopy });
    expect(back.code, back.stderr).toBe(0);
    expect(await dumpTables(fromCopy)).toEqual(holding);
  });

  it('refuses a corrupted file and a wrong schema version before touching the database', async () => {
    expect(restoredUrl).toBeTruthy();
    const holding = await dumpTables(restoredUrl);
    const damaged = await damagedCopies(kind, backupFile, dir);
    for (const [i, [what, file, failure]] of damaged.entries()) {
      // The first through the real CLI; the rest through the same command in-process (each CLI start costs seconds).
      const args = ['restore', '--from', file, '--force'];
      const result =
        i === 0
          ? await runCli(args, { FLOTILLA_DATABASE_URL: restoredUrl })
          : await restoreInProcess(restoredUrl, file);
      expect(result.code, `${what}: ${result.stdout}`).toBe(1);
      expect(result.stderr, what).toContain(failure);
      expect(result.stdout, what).not.toContain('safety copy');
      expect(await dumpTables(restoredUrl), what).toEqual(holding);
    }
  });
});

/** Broken variants of a good backup: [description, file, the failure restore must report]. */
async function damagedCopies(kind: string, good: string, dir: string): Promise<[string, string, string][]> {
  const out: [string, string, string][] = [];
  if (kind === 'sqlite') {
    // A row changed inside an otherwise well-formed file: only the manifest's checksums notice.
    const tampered = join(dir, 'tampered.db');
    copyFileSync(good, tampered);
    await editSqlite(tampered, [
      `update "messages" set "body" = 'forged' where rowid = (select min(rowid) from "messages")`,
    ]);
    out.push(['a tampered row', tampered, 'CORRUPT']);
    // Bytes overwritten in the middle of the file.
    const scribbled = join(dir, 'scribbled.db');
    const bytes = readFileSync(good);
    bytes.fill(0xa5, Math.floor(bytes.length / 2) - 4096, Math.floor(bytes.length / 2) + 4096);
    writeFileSync(scribbled, bytes);
    out.push(['overwritten pages', scribbled, 'CORRUPT']);
    // A truncated file.
    const truncated = join(dir, 'truncated.db');
    writeFileSync(truncated, readFileSync(good).subarray(0, 3000));
    out.push(['a truncated file', truncated, 'CORRUPT']);
    // A backup taken by a newer Flotilla (one more migration, consistently recorded).
    const newer = join(dir, 'newer.db');
    copyFileSync(good, newer);
    await editSqlite(newer, [
      `insert into "flotilla_migrations" ("name", "executed_at") values ('Migration29990101000000_future', '2999-01-01 00:00:00')`,
      `update "flotilla_backup" set "value" = json_set("value", '$.migrations[#]', 'Migration29990101000000_future') where "key" = 'manifest'`,
    ]);
    out.push(['a newer schema version', newer, 'SCHEMA_MISMATCH']);
    return out;
  }
  const lines = gunzipSync(readFileSync(good)).toString('utf8').trimEnd().split('\n');
  const rewrite = (name: string, edit: (lines: string[]) => string[]) => {
    const file = join(dir, name);
    writeFileSync(file, gzipSync(`${edit([...lines]).join('\n')}\n`));
    return file;
  };
  out.push([
    'a tampered row',
    rewrite('tampered.ndjson.gz', (l) => {
      const i = l.findIndex((x) => x.startsWith('{"t":"messages"'));
      l[i] = l[i].replace(/"body":"[^"]*"/, '"body":"forged"');
      return l;
    }),
    'CORRUPT',
  ]);
  out.push(['a missing row', rewrite('missing.ndjson.gz', (l) => l.filter((_, i) => i !== 2)), 'CORRUPT']);
  out.push(['a truncated export', rewrite('truncated.ndjson.gz', (l) => l.slice(0, -1)), 'CORRUPT']);
  // Well-formed and consistent, but one row twice: the insert fails inside the transaction.
  out.push([
    'a row that breaks a unique key',
    rewrite('duplicate.ndjson.gz', (l) => {
      const i = l.findIndex((x) => x.startsWith('{"t":"messages"'));
      l.splice(i, 0, l[i]);
      const summary = JSON.parse(l[l.length - 1]);
      const sum = new TableChecksum();
      for (const line of l) if (line.startsWith('{"t":"messages"')) sum.add(JSON.parse(line).r);
      summary.tables.messages = { rows: sum.rows, checksum: sum.hex };
      l[l.length - 1] = JSON.stringify(summary);
      return l;
    }),
    'ROLLED_BACK',
  ]);
  const flipped = join(dir, 'flipped.ndjson.gz');
  const bytes = readFileSync(good);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  writeFileSync(flipped, bytes);
  out.push(['a flipped byte', flipped, 'CORRUPT']);
  out.push([
    'a newer schema version',
    rewrite('newer.ndjson.gz', (l) => {
      const header = JSON.parse(l[0]);
      header.migrations.push('Migration29990101000000_future');
      l[0] = JSON.stringify(header);
      return l;
    }),
    'SCHEMA_MISMATCH',
  ]);
  return out;
}

/** `flotilla restore --from FILE --force` as the CLI runs it (src/ops/store-commands.ts), without a new process. */
async function restoreInProcess(databaseUrl: string, file: string): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const config = loadConfig({ FLOTILLA_DATABASE_URL: databaseUrl, FLOTILLA_DATA_DIR: tempDir('flotilla-cli-') });
  const code = await restoreCommand(config, file, true, {
    out: (line) => (stdout += `${line}\n`),
    err: (line) => (stderr += `${line}\n`),
  });
  return { code, stdout, stderr };
}

async function editSqlite(file: string, statements: string[]): Promise<void> {
  const orm = await openOrm(parseDatabaseUrl(`sqlite:${file}`));
  try {
    for (const sql of statements) await orm.em.getConnection().execute(sql);
    await orm.em.getConnection().execute('pragma journal_mode = delete');
  } finally {
    await orm.close(true);
  }
}

describe('flotilla restore into a Postgres cluster younger than the backup', () => {
  it('moves the transaction ids past the newest restored event, so its cursor resolves and new events sort after it', async () => {
    const source = await startTestServer('postgres');
    const dir = tempDir('flotilla-backup-');
    const good = join(dir, 'fleet.ndjson.gz');
    let fleet: Fleet;
    try {
      fleet = await buildFleet(source, 1);
      const backup = await runCli(['backup', '--out', good], { FLOTILLA_DATABASE_URL: source.databaseUrl });
      expect(backup.code, backup.stderr).toBe(0);
    } finally {
      await source.close();
    }

    // As if written on a cluster that has run more transactions than this one: the newest event's
    // transaction id lies ahead of this cluster's counter (its checksum is recomputed to match).
    const client = new pg.Client({ connectionString: source.databaseUrl });
    await client.connect();
    const next = BigInt(
      (await client.query(`select pg_snapshot_xmax(pg_current_snapshot())::text as n`)).rows[0].n as string,
    );
    await client.end();
    const ahead = next + 100_000n;
    const lines = gunzipSync(readFileSync(good))
      .toString('utf8')
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    const events = lines.filter((l) => l.t === 'events').map((l) => l.r as Record<string, unknown>);
    const newest = events.reduce((a, b) =>
      logPosition(String(a.tx_id), String(a.id)) > logPosition(String(b.tx_id), String(b.id)) ? a : b,
    );
    newest.tx_id = ahead.toString();
    const sum = new TableChecksum();
    for (const row of events) sum.add(row);
    lines[lines.length - 1].tables.events.checksum = sum.hex;
    const shifted = join(dir, 'shifted.ndjson.gz');
    writeFileSync(shifted, gzipSync(`${lines.map((l) => JSON.stringify(l)).join('\n')}\n`));
    const newestCursor = encodeEventCursor(logPosition(ahead, String(newest.id)));

    const targetUrl = await freshDatabaseUrl('postgres');
    const restore = await runCli(['restore', '--from', shifted], { FLOTILLA_DATABASE_URL: targetUrl });
    expect(restore.code, restore.stderr).toBe(0);
    const advanced = /advanced the cluster's transaction ids by (\d+)/.exec(restore.stdout)?.[1];
    expect(Number(advanced)).toBeGreaterThan(0);

    const server = await startTestServer('postgres', { databaseUrl: targetUrl, adminToken: source.adminToken });
    try {
      expect(await eventsAfter(server, fleet.tenantId, newestCursor)).toEqual([]);
      await sendMessage(server, fleet.sandboxId, 'after the move');
      const after = await eventsAfter(server, fleet.tenantId, newestCursor);
      expect(after.map((e) => e.type)).toEqual(['MESSAGE_POSTED']);
    } finally {
      await server.close();
    }
  });
});

describe('flotilla restore on SQLite while a server has the file open', () => {
  it('refuses with IN_USE and leaves the database as it was', async () => {
    const server = await startTestServer('sqlite');
    try {
      await buildFleet(server, 1);
      const file = join(tempDir('flotilla-backup-'), 'fleet.db');
      await backupStore(parseDatabaseUrl(server.databaseUrl), file);
      await sendMessage(server, (await buildFleet(server, 0)).sandboxId, 'after the backup');
      const holding = await dumpTables(server.databaseUrl);
      const result = await restoreInProcess(server.databaseUrl, file);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('IN_USE');
      expect(await dumpTables(server.databaseUrl)).toEqual(holding);
      // The server still works on it.
      await sendMessage(server, (await buildFleet(server, 0)).sandboxId, 'still serving');
    } finally {
      await server.close();
    }
  });
});
