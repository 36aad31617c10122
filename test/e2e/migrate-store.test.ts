import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabaseUrl } from '../helpers/databases.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  buildFleet,
  dumpTables,
  eventsAfter,
  type Fleet,
  type LoggedEvent,
  messagesAfter,
  runCli,
  sendMessage,
  TABLES,
} from '../helpers/store-copy.js';

/** From one machine to a cluster: a SQLite store copied into a fresh Postgres database. */
describe('flotilla migrate-store (SQLite → Postgres)', () => {
  let source: TestServer;
  let fleet: Fleet;
  let eventCursor: string;
  let messageCursor: string;
  let sourceEvents: LoggedEvent[];
  let sourceMessages: { cursor: string; body: string }[];
  let targetUrl: string;

  beforeAll(async () => {
    source = await startTestServer('sqlite');
    fleet = await buildFleet(source);
    const events = await eventsAfter(source, fleet.tenantId, null);
    eventCursor = events[events.length - 1].cursor;
    const messages = await messagesAfter(source, fleet.sandboxId, null);
    messageCursor = messages[messages.length - 1].cursor;
    for (let i = 0; i < 4; i++) await sendMessage(source, fleet.sandboxId, `after the cursors ${i}`);
    sourceEvents = await eventsAfter(source, fleet.tenantId, eventCursor);
    sourceMessages = await messagesAfter(source, fleet.sandboxId, messageCursor);
    expect(sourceEvents.length).toBeGreaterThanOrEqual(4);
    await source.close();
    targetUrl = await freshDatabaseUrl('postgres');
  });

  afterAll(async () => {
    await source?.close().catch(() => undefined);
  });

  it('copies every table with matching counts and checksums; cursors resume and new events sort after the copied ones', async () => {
    const from = source.databaseUrl;
    const result = await runCli(['migrate-store', '--from', from, '--to', targetUrl]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('every table');
    for (const table of TABLES) expect(result.stdout).toMatch(new RegExp(`\\n\\s+${table}\\s+\\d+ → \\d+ .* ok\\n`));
    expect(result.stdout).not.toContain('DIFFERS');

    // Read independently of the tool: the same rows on both sides.
    const sqlite = await dumpTables(source.databaseUrl);
    const postgres = await dumpTables(targetUrl);
    for (const table of TABLES) {
      expect(postgres[table].length, table).toBe(sqlite[table].length);
      expect(postgres[table], table).toEqual(sqlite[table]);
    }

    const cluster = await startTestServer('postgres', { databaseUrl: targetUrl, adminToken: source.adminToken });
    try {
      // A client that held cursors on SQLite resumes on Postgres at exactly the next event and message.
      expect(await eventsAfter(cluster, fleet.tenantId, eventCursor, fleet.operatorToken)).toEqual(sourceEvents);
      expect(await messagesAfter(cluster, fleet.sandboxId, messageCursor)).toEqual(sourceMessages);

      // New events written on Postgres come after every copied one.
      await sendMessage(cluster, fleet.sandboxId, 'on the cluster', fleet.operatorToken);
      const resumed = await eventsAfter(cluster, fleet.tenantId, eventCursor, fleet.operatorToken);
      expect(resumed.slice(0, sourceEvents.length)).toEqual(sourceEvents);
      expect(resumed.length).toBe(sourceEvents.length + 1);
      const newest = resumed[resumed.length - 1];
      expect(newest.type).toBe('MESSAGE_POSTED');
      expect(sourceEvents.map((e) => e.cursor)).not.toContain(newest.cursor);
      // …also for a client whose cursor is the last copied event.
      const lastCopied = sourceEvents[sourceEvents.length - 1].cursor;
      expect(await eventsAfter(cluster, fleet.tenantId, lastCopied, fleet.operatorToken)).toEqual([newest]);
      const messages = await messagesAfter(cluster, fleet.sandboxId, messageCursor);
      expect(messages.map((m) => m.body)).toEqual([...sourceMessages.map((m) => m.body), 'on the cluster']);
    } finally {
      await cluster.close();
    }
  });

  it('refuses a Postgres database that holds data unless --force, leaving it untouched', async () => {
    const from = source.databaseUrl;
    const holding = await dumpTables(targetUrl);
    const refused = await runCli(['migrate-store', '--from', from, '--to', targetUrl]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('NOT_EMPTY');
    expect(await dumpTables(targetUrl)).toEqual(holding);

    const forced = await runCli(['migrate-store', '--from', from, '--to', targetUrl, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    // The cluster's own message is gone: the target is now exactly the SQLite store again.
    expect(await dumpTables(targetUrl)).toEqual(await dumpTables(source.databaseUrl));
  });

  it('refuses a source that is not SQLite or a target that is not Postgres', async () => {
    const wrongSource = await runCli(['migrate-store', '--from', targetUrl, '--to', targetUrl]);
    expect(wrongSource.code).toBe(1);
    expect(wrongSource.stderr).toContain('--from must name a SQLite file');
    const wrongTarget = await runCli(['migrate-store', '--from', source.databaseUrl, '--to', source.databaseUrl]);
    expect(wrongTarget.code).toBe(1);
    expect(wrongTarget.stderr).toContain('--to must be a Postgres URL');
    const missing = await runCli(['migrate-store', '--from', source.databaseUrl]);
    expect(missing.code).toBe(2);
    const help = await runCli(['--help']);
    for (const command of ['backup --out FILE', 'restore --from FILE', 'migrate-store --from sqlite:PATH'])
      expect(help.stdout).toContain(command);
  });
});
