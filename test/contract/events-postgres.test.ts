import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { migrate, type Orm, openOrm } from '../../src/db/orm.js';
import { EventHub } from '../../src/events/hub.js';
import { appendEvent } from '../../src/events/log.js';
import { PgListener } from '../../src/events/pg-listener.js';
import { LOG_START, type LogPosition, logPosition, readEventsAfter } from '../../src/events/reader.js';
import { EventSweeper, SWEEPER_LOCK } from '../../src/events/sweeper.js';
import { freshDatabaseUrl } from '../helpers/databases.js';
import { appendCommitted, byPosition, positions } from '../helpers/events.js';
import { take } from '../helpers/streams.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What only Postgres has: concurrent writers in parallel transactions, NOTIFY, and a LISTEN connection to lose. */
describe('event log on postgres', () => {
  let url: string;
  let orm: Orm;
  let admin: pg.Client;

  beforeAll(async () => {
    url = await freshDatabaseUrl('postgres');
    orm = await openOrm(parseDatabaseUrl(url));
    await migrate(orm);
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
    await orm?.close(true);
  });

  it('a reader tailing by position sees every event of concurrent writers exactly once, in order, none skipped', async () => {
    const tenant = randomUUID();
    const writers = 12;
    const transactionsPerWriter = 25;
    let writing = true;
    const committed: LogPosition[] = [];

    const writerRuns = Array.from({ length: writers }, async (_, w) => {
      for (let t = 0; t < transactionsPerWriter; t++) {
        const rows = await orm.em.fork().transactional(async (tx) => {
          // Transactions of varying length, both before the append and after it, until commit.
          await pause((w * 7 + t * 3) % 6);
          const out: LogPosition[] = [];
          for (let n = 0; n <= (w + t) % 3; n++) {
            const { txId, id } = await appendEvent(
              tx,
              { type: 'SANDBOX_STATUS_CHANGED', tenantId: tenant, data: { w, t, n } },
              new Date(),
            );
            out.push(logPosition(txId, id));
          }
          await pause((w + t) % 3);
          return out;
        });
        committed.push(...rows);
      }
    });

    const seen: LogPosition[] = [];
    let cursor = LOG_START;
    let reads = 0;
    const reader = (async () => {
      for (;;) {
        const done = !writing;
        const batch = await readEventsAfter(orm.em.fork(), cursor, 50, { tenantId: tenant });
        reads++;
        for (const event of batch) seen.push(event.position);
        if (batch.length > 0) cursor = batch[batch.length - 1].position;
        // One more full pass after the writers finished, to read their last commits.
        if (done && batch.length === 0) return;
      }
    })();
    await Promise.all(writerRuns);
    writing = false;
    await reader;

    expect(reads).toBeGreaterThan(writers);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual([...seen].sort(byPosition));
    expect(seen).toEqual([...committed].sort(byPosition));
  });

  it('lets two writers be inside event-writing transactions at once: B commits while A, which appended first, is still open', async () => {
    const tenant = randomUUID();
    let appended!: () => void;
    const aAppended = new Promise<void>((resolve) => {
      appended = resolve;
    });
    let release!: () => void;
    const aReleased = new Promise<void>((resolve) => {
      release = resolve;
    });
    const a = orm.em.fork().transactional(async (tx) => {
      await appendEvent(tx, { type: 'SANDBOX_STATUS_CHANGED', tenantId: tenant, data: { writer: 'A' } }, new Date());
      appended();
      await aReleased;
    });
    await aAppended;
    let bDone = false;
    const b = appendCommitted(orm, null, [
      { type: 'SANDBOX_STATUS_CHANGED', tenantId: tenant, data: { writer: 'B' } },
    ]).then((positions) => {
      bDone = true;
      return positions;
    });
    // B must commit on its own; if it waits on a lock held by A (the old global append lock), that shows here.
    const waitingOnLocks = async () =>
      Number(
        (
          await admin.query(
            `select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
          )
        ).rows[0].n,
      );
    while (!bDone) {
      expect(await waitingOnLocks()).toBe(0);
      await pause(5);
    }
    const [bPosition] = await b;
    // B is committed but held back: A, older and still open, may yet commit before it in log order.
    expect(await readEventsAfter(orm.em.fork(), LOG_START, 1000, { tenantId: tenant })).toEqual([]);
    release();
    await a;
    const events = await readEventsAfter(orm.em.fork(), LOG_START, 1000, { tenantId: tenant });
    expect(events.map((e) => e.data.writer)).toEqual(['A', 'B']);
    expect(events[1].position).toBe(bPosition);
  });

  it('is not held back by a transaction running in another database on the same server', async () => {
    const tenant = randomUUID();
    const elsewhere = new pg.Client({ connectionString: inject('pgAdminUrl') });
    await elsewhere.connect();
    try {
      await elsewhere.query('begin');
      await elsewhere.query('select pg_current_xact_id()');
      const [position] = await appendCommitted(orm, null, [{ type: 'LEASE_CHANGED', tenantId: tenant }]);
      expect(
        (await readEventsAfter(orm.em.fork(), LOG_START, 10, { tenantId: tenant })).map((e) => e.position),
      ).toEqual([position]);
    } finally {
      await elsewhere.query('rollback');
      await elsewhere.end();
    }
  });

  it('keeps every subscriber complete and in order while its LISTEN connection is killed repeatedly during a burst', async () => {
    const tenant = randomUUID();
    const hub = new EventHub(orm, { pollIntervalMs: 0 });
    await hub.start();
    // Only NOTIFY and reconnects wake this hub: the writers play another replica (no shared bus).
    const listener = new PgListener({
      url,
      onNotify: () => hub.wake(),
      onListening: () => hub.wake(),
      backoffMs: { initial: 10, max: 100 },
    });
    expect(await listener.start()).toBe(true);
    expect(listener.ready).toBe(true);
    const subscribers = await Promise.all([
      hub.subscribe({ match: { tenantId: tenant } }),
      hub.subscribe({ match: { tenantId: tenant, types: ['SANDBOX_STATUS_CHANGED', 'MESSAGE_POSTED'] } }),
      hub.subscribe({ match: {}, authorize: (e) => e.tenantId === tenant }),
    ]);

    const writers = 4;
    const transactionsPerWriter = 60;
    const eventsPerTransaction = 10;
    const total = writers * transactionsPerWriter * eventsPerTransaction;
    // Consumers keep up (as clients do); a stalled one would be closed as too slow, tested elsewhere.
    const receiving = subscribers.map((sub) => take(sub, total, { timeoutMs: 40_000 }));
    const committed: LogPosition[] = [];
    let writing = true;
    const writerRuns = Array.from({ length: writers }, async () => {
      for (let t = 0; t < transactionsPerWriter; t++) {
        const events = Array.from({ length: eventsPerTransaction }, (_, n) => ({
          type: 'SANDBOX_STATUS_CHANGED' as const,
          tenantId: tenant,
          data: { t, n },
        }));
        committed.push(...(await appendCommitted(orm, null, events)));
      }
    });
    let kills = 0;
    let lastKilled: number | null = null;
    const killer = (async () => {
      while (writing) {
        // Kill each LISTEN connection once: until the listener has reconnected it still reports the old pid.
        const pid = listener.backendPid;
        if (pid !== null && pid !== lastKilled) {
          await admin.query('select pg_terminate_backend($1)', [pid]);
          lastKilled = pid;
          kills++;
        }
        await pause(25);
      }
    })();
    await Promise.all(writerRuns);
    writing = false;
    await killer;

    expect(committed.length).toBe(total);
    const expected = [...committed].sort(byPosition);
    for (const received of await Promise.all(receiving)) expect(positions(received)).toEqual(expected);
    expect(kills).toBeGreaterThanOrEqual(3);
    // Each kill is followed by a reconnect; the last one may still be under way.
    expect(listener.reconnects).toBeGreaterThanOrEqual(kills - 1);

    // Still listening afterwards, and nothing beyond the burst was delivered twice.
    const [sentinel] = await appendCommitted(orm, null, [{ type: 'MESSAGE_POSTED', tenantId: tenant }]);
    for (const sub of subscribers) expect(positions(await take(sub, 1))).toEqual([sentinel]);
    await vi.waitFor(() => expect(listener.ready).toBe(true));
    await listener.stop();
    await hub.close();
  });

  it('delivers an event far over the 8000-byte NOTIFY limit whole, woken by NOTIFY alone', async () => {
    const tenant = randomUUID();
    const hub = new EventHub(orm, { pollIntervalMs: 0 });
    await hub.start();
    const listener = new PgListener({ url, onNotify: () => hub.wake(), onListening: () => hub.wake() });
    await listener.start();
    const sub = await hub.subscribe({ match: { tenantId: tenant } });
    const body = 'ü'.repeat(50_000);
    const [id] = await appendCommitted(orm, null, [{ type: 'MESSAGE_POSTED', tenantId: tenant, data: { body } }]);
    const [event] = await take(sub, 1);
    expect(event.position).toBe(id);
    expect(event.data.body).toBe(body);
    expect(listener.notifications).toBeGreaterThanOrEqual(1);
    await listener.stop();
    await hub.close();
  });

  it('sweeps on one replica at a time: while another holds the sweeper lock, this one skips', async () => {
    const tenant = randomUUID();
    const now = new Date('2031-01-01T00:00:00Z');
    const retentionSeconds = 60;
    await appendCommitted(orm, null, [{ type: 'LEASE_CHANGED', tenantId: tenant }], new Date(now.getTime() - 3600_000));
    const sweeper = new EventSweeper(orm, { retentionSeconds, clock: { now: () => now } });
    await admin.query('select pg_advisory_lock($1)', [SWEEPER_LOCK]);
    try {
      expect(await sweeper.sweepOnce()).toEqual({ elected: false, deleted: 0 });
      expect(await readEventsAfter(orm.em.fork(), LOG_START, 10, { tenantId: tenant })).toHaveLength(1);
    } finally {
      await admin.query('select pg_advisory_unlock($1)', [SWEEPER_LOCK]);
    }
    const result = await sweeper.sweepOnce();
    expect(result.elected).toBe(true);
    expect(await readEventsAfter(orm.em.fork(), LOG_START, 10, { tenantId: tenant })).toHaveLength(0);
    await sweeper.stop();
  });

  it('reports not ready, with the reason, while the LISTEN connection cannot be established', async () => {
    const dead = new URL(url);
    dead.pathname = '/flotilla_no_such_database';
    const listener = new PgListener({
      url: dead.toString(),
      onNotify: () => undefined,
      onListening: () => undefined,
      backoffMs: { initial: 10, max: 20 },
    });
    expect(await listener.start()).toBe(false);
    expect(listener.ready).toBe(false);
    expect(listener.lastError).toMatch(/flotilla_no_such_database/);
    await listener.stop();
  });
});
