import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { migrate, type Orm, openOrm } from '../../src/db/orm.js';
import { InProcessBus } from '../../src/events/bus.js';
import { InvalidCursorError, SubscriberTooSlowError, SubscriptionEndedError } from '../../src/events/errors.js';
import { EventHub, type EventHubOptions } from '../../src/events/hub.js';
import { appendEvent } from '../../src/events/log.js';
import {
  decodeEventCursor,
  encodeEventCursor,
  LOG_START,
  type LogPosition,
  logPosition,
  readEventsAfter,
  resolveCursor,
} from '../../src/events/reader.js';
import { EventSweeper } from '../../src/events/sweeper.js';
import { DRIVERS, freshDatabaseUrl } from '../helpers/databases.js';
import { appendCommitted, byPosition, positions } from '../helpers/events.js';
import { take } from '../helpers/streams.js';

/** The event log and hub contract: the same behaviour on each driver. */
describe.each(DRIVERS)('event log and hub on %s', (kind) => {
  let orm: Orm;
  let statements: string[] = [];
  const hubs: EventHub[] = [];

  beforeAll(async () => {
    orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)), { onQuery: (sql) => statements.push(sql) });
    await migrate(orm);
  });
  afterEach(async () => {
    await Promise.all(hubs.splice(0).map((h) => h.close()));
  });
  afterAll(async () => {
    await orm?.close(true);
  });

  /** A hub woken by an in-process bus only (no periodic reads), as on SQLite. */
  async function startHub(options: EventHubOptions = {}): Promise<{ hub: EventHub; bus: InProcessBus }> {
    const hub = new EventHub(orm, { pollIntervalMs: 0, ...options });
    await hub.start();
    hubs.push(hub);
    const bus = new InProcessBus();
    bus.onCommitted(() => hub.wake());
    return { hub, bus };
  }

  const sandboxEvent = (tenantId: string, sandboxId: string, n = 0) =>
    ({ type: 'SANDBOX_STATUS_CHANGED', tenantId, sandboxId, data: { n } }) as const;

  it('cursors are opaque, round-trip, and reject what is not a cursor', async () => {
    const position = logPosition(987654321, 12345);
    const cursor = encodeEventCursor(position);
    expect(cursor).not.toContain('12345');
    expect(decodeEventCursor(cursor)).toBe(position);
    // A cursor from before positions had a transaction id still decodes, as (0, id).
    const old = Buffer.from('evt:12345').toString('base64url');
    expect(decodeEventCursor(old)).toBe(logPosition(0, 12345));
    expect(encodeEventCursor(logPosition(0, 12345))).toBe(old);
    const text = (t: string) => Buffer.from(t).toString('base64url');
    for (const bad of [
      '',
      'abc',
      '12345',
      text('evt:-1'),
      text('evt:1.5'),
      text('evt:99999999999999999999'),
      text('evt:99999999999999999999:1'),
      text('evt:1:2:3'),
      text('evt::2'),
      'ev t',
    ]) {
      expect(() => decodeEventCursor(bad), bad).toThrow(InvalidCursorError);
    }
    try {
      decodeEventCursor('nope');
    } catch (err) {
      expect((err as InvalidCursorError).code).toBe('INVALID_CURSOR');
      expect((err as InvalidCursorError).reason).toBe('MALFORMED');
    }
  });

  it('a cursor the log never reached is unknown; the newest one resolves', async () => {
    const tenant = randomUUID();
    const [last] = (await appendCommitted(orm, null, [sandboxEvent(tenant, randomUUID())])).slice(-1);
    await expect(resolveCursor(orm.em.fork(), encodeEventCursor(last))).resolves.toBe(last);
    const future = encodeEventCursor(last + 1000n);
    await expect(resolveCursor(orm.em.fork(), future)).rejects.toMatchObject({
      code: 'INVALID_CURSOR',
      reason: 'UNKNOWN',
    });
  });

  it('reads events after a cursor in commit order, filtered by tenant, sandbox and type', async () => {
    const tenant = randomUUID();
    const sandbox = randomUUID();
    const written = await appendCommitted(orm, null, [
      sandboxEvent(tenant, sandbox, 1),
      { type: 'MESSAGE_POSTED', tenantId: tenant, sandboxId: sandbox },
      sandboxEvent(tenant, randomUUID(), 2),
      sandboxEvent(randomUUID(), sandbox, 3),
    ]);
    const before = written[0] - 1n;
    expect(positions(await readEventsAfter(orm.em.fork(), before, 100, { tenantId: tenant }))).toEqual(
      written.slice(0, 3),
    );
    expect(
      positions(await readEventsAfter(orm.em.fork(), before, 100, { tenantId: tenant, sandboxId: sandbox })),
    ).toEqual(written.slice(0, 2));
    expect(
      positions(await readEventsAfter(orm.em.fork(), before, 100, { tenantId: tenant, types: ['MESSAGE_POSTED'] })),
    ).toEqual([written[1]]);
    expect(positions(await readEventsAfter(orm.em.fork(), written[0], 2, { tenantId: tenant }))).toEqual(
      written.slice(1, 3),
    );
  });

  it('fans each new batch out to every matching, authorised subscriber with one read, not one per subscriber', async () => {
    const { hub, bus } = await startHub();
    const tenantA = randomUUID();
    const tenantB = randomUUID();
    // 10,000 subscribers in all: one event must still cost one read, not 10,000.
    const subscribersPerTenant = 5000;
    const subsA = await Promise.all(
      Array.from({ length: subscribersPerTenant }, () => hub.subscribe({ match: { tenantId: tenantA } })),
    );
    const subsB = await Promise.all(
      Array.from({ length: subscribersPerTenant }, () => hub.subscribe({ match: { tenantId: tenantB } })),
    );
    // Authorised for tenant A only, whatever it asks for.
    const narrow = await hub.subscribe({ match: {}, authorize: (e) => e.tenantId === tenantA });

    statements = [];
    const written = await appendCommitted(orm, bus, [
      sandboxEvent(tenantA, randomUUID(), 1),
      sandboxEvent(tenantB, randomUUID(), 2),
      sandboxEvent(tenantA, randomUUID(), 3),
    ]);
    await hub.settle();
    const eventReads = statements.filter((sql) => /from [`"]events[`"]/i.test(sql) && /^select/i.test(sql.trim()));
    // Re-reads for events an older transaction held back (another database's, on a shared server) are extra.
    expect(eventReads.length).toBeLessThanOrEqual(2 + hub.horizonRechecks);

    const receivedA = await Promise.all(subsA.map((sub) => take(sub, 2)));
    const receivedB = await Promise.all(subsB.map((sub) => take(sub, 1)));
    expect(receivedA.every((got) => positions(got).join() === [written[0], written[2]].join())).toBe(true);
    expect(receivedB.every((got) => positions(got).join() === String(written[1]))).toBe(true);
    expect(positions(await take(narrow, 2))).toEqual([written[0], written[2]]);
    await Promise.all([...subsA, ...subsB, narrow].map((s) => s.return?.()));
    expect(hub.subscriberCount).toBe(0);
  });

  it('delivers an event whose data is far over 8000 bytes whole', async () => {
    const { hub, bus } = await startHub();
    const tenant = randomUUID();
    const sub = await hub.subscribe({ match: { tenantId: tenant } });
    const big = 'x'.repeat(64 * 1024);
    await appendCommitted(orm, bus, [{ type: 'MESSAGE_POSTED', tenantId: tenant, data: { body: big } }]);
    const [event] = await take(sub, 1);
    expect(event.data.body).toBe(big);
    await sub.return?.();
  });

  it('replays after a cursor and then goes live with no gap and no duplicate while writers keep writing', async () => {
    const { hub, bus } = await startHub({ replayPageSize: 7, queueLimit: 40 });
    const tenant = randomUUID();
    const sandbox = randomUUID();
    const [start] = await appendCommitted(orm, bus, [sandboxEvent(tenant, sandbox, 0)]);
    const history = await appendCommitted(
      orm,
      bus,
      Array.from({ length: 60 }, (_, i) => sandboxEvent(tenant, sandbox, i + 1)),
    );
    // Noise from another tenant that must never show up.
    await appendCommitted(orm, bus, [sandboxEvent(randomUUID(), sandbox)]);

    const writers = 3;
    const perWriter = 40;
    const expected = [...history];
    const writing = Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        for (let i = 0; i < perWriter; i++) {
          const [id] = await appendCommitted(orm, bus, [sandboxEvent(tenant, sandbox, 1000 * (w + 1) + i)]);
          expected.push(id);
          await appendCommitted(orm, bus, [sandboxEvent(randomUUID(), randomUUID())]);
        }
      }),
    );
    const sub = await hub.subscribe({
      match: { tenantId: tenant, sandboxId: sandbox },
      after: encodeEventCursor(start),
    });
    const got = await take(sub, history.length + writers * perWriter);
    await writing;
    expected.sort(byPosition);
    expect(positions(got)).toEqual(expected);
    // A sentinel written afterwards is the very next event: nothing was duplicated past the end.
    const [sentinel] = await appendCommitted(orm, bus, [sandboxEvent(tenant, sandbox, -1)]);
    expect(positions(await take(sub, 1))).toEqual([sentinel]);
    expect(sub.lastCursor).toBe(encodeEventCursor(sentinel));
    await sub.return?.();
  });

  // Parity picks which replay reads let the hub catch up afterwards, so that in one of the two runs
  // the last replay read returns an event the hub has not fanned out yet at the switch.
  // A burst larger than the queue limit overflows the live events held for the switch, which must
  // then be read from the log instead.
  it.each([
    [0, 1],
    [1, 1],
    [1, 15],
  ])(
    'switches from replay to live exactly: events committed around each replay read arrive once, in order (parity %i, burst %i)',
    async (parity, burst) => {
      const tenant = randomUUID();
      const hooks = {
        before: async (): Promise<void> => undefined,
        after: async (_returned: number): Promise<void> => undefined,
      };
      // The hub's own ORM, with replay reads (those filtered by tenant) held between the query and its result.
      const gated = {
        em: {
          fork: () => {
            const em = orm.em.fork();
            const getConnection = em.getConnection.bind(em);
            em.getConnection = ((...args: Parameters<typeof getConnection>) => {
              const conn = getConnection(...args);
              const execute = conn.execute.bind(conn);
              return new Proxy(conn, {
                get: (target, key, receiver) =>
                  key !== 'execute'
                    ? Reflect.get(target, key, receiver)
                    : async (...call: Parameters<typeof execute>) => {
                        const replayRead = /from "events" where .*"tenant_id" = \?/.test(String(call[0]));
                        if (replayRead) await hooks.before();
                        const rows = await execute(...call);
                        if (replayRead) await hooks.after((rows as unknown[]).length);
                        return rows;
                      },
              });
            }) as typeof em.getConnection;
            return em;
          },
        },
      } as unknown as Orm;
      const hub = new EventHub(gated, { pollIntervalMs: 0, replayPageSize: 5, queueLimit: 12 });
      await hub.start();
      hubs.push(hub);
      const bus = new InProcessBus();
      bus.onCommitted(() => hub.wake());

      const [start] = await appendCommitted(orm, bus, [sandboxEvent(tenant, randomUUID())]);
      const expected = await appendCommitted(
        orm,
        bus,
        Array.from({ length: 12 }, (_, i) => sandboxEvent(tenant, randomUUID(), i)),
      );
      await hub.settle();
      let reads = 0;
      // Before each read: a commit the hub has not read yet (the replay query sees it, the hub later too).
      hooks.before = async () => {
        expected.push(...(await appendCommitted(orm, null, [sandboxEvent(tenant, randomUUID(), 100 + reads)])));
      };
      // After a read: commits the query cannot see, which the hub reads and fans out meanwhile.
      let bursts = 0;
      hooks.after = async (returned) => {
        reads++;
        // A burst right after a short (would-be final) read, twice at most so the replay can finish.
        const overflow = burst > 1 && returned < 5 && bursts < 2;
        if (!overflow && reads % 2 === parity) return;
        const count = overflow ? burst : 1;
        if (overflow) bursts++;
        const mine = Array.from({ length: count }, (_, i) => sandboxEvent(tenant, randomUUID(), 200 + i));
        expected.push(
          ...(await appendCommitted(orm, bus, [...mine, sandboxEvent(randomUUID(), randomUUID())])).slice(0, count),
        );
        await hub.settle();
      };
      const sub = await hub.subscribe({ match: { tenantId: tenant }, after: encodeEventCursor(start) });
      expect(sub.live).toBe(false);
      const got: LogPosition[] = [];
      // Each replay read returns at least the event committed just before it, so this never waits in vain.
      while (!sub.live) got.push(...positions(await take(sub, 1)));
      hooks.before = async () => undefined;
      hooks.after = async () => undefined;
      if (burst > 1) expect(bursts).toBe(2);
      const [sentinel] = await appendCommitted(orm, bus, [sandboxEvent(tenant, randomUUID(), -1)]);
      expected.push(sentinel);
      while (got[got.length - 1] !== sentinel) got.push(...positions(await take(sub, 1)));
      expect(reads).toBeGreaterThanOrEqual(3);
      expect(got).toEqual(expected);
      await sub.return?.();
    },
  );

  it('closes a subscriber that falls behind with its last delivered cursor; others are unaffected and it can resume', async () => {
    const queueLimit = 10;
    const { hub, bus } = await startHub({ queueLimit });
    const tenant = randomUUID();
    const slow = await hub.subscribe({ match: { tenantId: tenant } });
    const fast = await hub.subscribe({ match: { tenantId: tenant } });
    const first = await appendCommitted(orm, bus, [
      sandboxEvent(tenant, randomUUID(), 1),
      sandboxEvent(tenant, randomUUID(), 2),
    ]);
    expect(positions(await take(slow, 2))).toEqual(first);
    expect(positions(await take(fast, 2))).toEqual(first);

    const burst: LogPosition[] = [];
    const fastGot: LogPosition[] = [];
    for (let i = 0; i < 5; i++) {
      const written = await appendCommitted(
        orm,
        bus,
        Array.from({ length: queueLimit }, (_, n) => sandboxEvent(tenant, randomUUID(), n)),
      );
      burst.push(...written);
      await hub.settle();
      fastGot.push(...positions(await take(fast, written.length)));
    }
    expect(fastGot).toEqual(burst);

    const closed = await slow.next().then(
      () => null,
      (err: unknown) => err,
    );
    expect(closed).toBeInstanceOf(SubscriberTooSlowError);
    expect((closed as SubscriberTooSlowError).code).toBe('SUBSCRIBER_TOO_SLOW');
    expect((closed as SubscriberTooSlowError).lastCursor).toBe(encodeEventCursor(first[1]));
    expect((await slow.next()).done).toBe(true);
    // Bounded: the slow one is gone from the hub, the fast one remains.
    expect(hub.subscriberCount).toBe(1);
    expect(hub.slowClosed).toBe(1);

    const resumed = await hub.subscribe({
      match: { tenantId: tenant },
      after: (closed as SubscriberTooSlowError).lastCursor,
    });
    expect(positions(await take(resumed, burst.length))).toEqual(burst);
    await resumed.return?.();
    await fast.return?.();
  });

  it('paces a replay to its consumer (never closing it) and catches up through heavy live traffic with bounded memory', async () => {
    const queueLimit = 20;
    const { hub, bus } = await startHub({ queueLimit, replayPageSize: 8 });
    const tenant = randomUUID();
    const [start] = await appendCommitted(orm, bus, [sandboxEvent(tenant, randomUUID())]);
    const backlog = await appendCommitted(
      orm,
      bus,
      Array.from({ length: 200 }, (_, i) => sandboxEvent(tenant, randomUUID(), i)),
    );
    const sub = await hub.subscribe({ match: { tenantId: tenant }, after: encodeEventCursor(start) });
    const got: LogPosition[] = [];
    const live: LogPosition[] = [];
    let maxQueued = 0;
    // The consumer reads slowly while live events pour in, far more than a queue holds.
    for (let round = 0; round < 10; round++) {
      live.push(
        ...(await appendCommitted(
          orm,
          bus,
          Array.from({ length: 30 }, (_, i) => sandboxEvent(tenant, randomUUID(), 1000 + i)),
        )),
      );
      await hub.settle();
      maxQueued = Math.max(maxQueued, sub.queued);
      got.push(...positions(await take(sub, 15)));
    }
    const expected = [...backlog, ...live];
    got.push(...positions(await take(sub, expected.length - got.length)));
    expect(got).toEqual(expected);
    expect(maxQueued).toBeLessThanOrEqual(queueLimit);
    expect(hub.slowClosed).toBe(0);
    await sub.return?.();
  });

  it('ends the streams of a principal (revoked token) with a clear error and leaves the others', async () => {
    const { hub, bus } = await startHub();
    const tenant = randomUUID();
    const revoked = await hub.subscribe({
      match: { tenantId: tenant },
      principal: { subject: 'api:ci', tokenId: 'jti-1' },
    });
    const kept = await hub.subscribe({
      match: { tenantId: tenant },
      principal: { subject: 'api:ops', tokenId: 'jti-2' },
    });
    const [id] = await appendCommitted(orm, bus, [sandboxEvent(tenant, randomUUID())]);
    expect(positions(await take(revoked, 1))).toEqual([id]);
    const pending = revoked.next();
    expect(hub.endWhere((p) => p?.tokenId === 'jti-1', 'the token was revoked')).toBe(1);
    const err = await pending.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SubscriptionEndedError);
    expect((err as SubscriptionEndedError).code).toBe('SUBSCRIPTION_ENDED');
    expect((err as SubscriptionEndedError).lastCursor).toBe(encodeEventCursor(id));
    const [later] = await appendCommitted(orm, bus, [sandboxEvent(tenant, randomUUID())]);
    expect(positions(await take(kept, 2))).toEqual([id, later]);
    await kept.return?.();
  });

  it('answers overlapping next() calls in order, and a closed hub ends streams and refuses new ones', async () => {
    const { hub, bus } = await startHub();
    const tenant = randomUUID();
    const sub = await hub.subscribe({ match: { tenantId: tenant } });
    const calls = [sub.next(), sub.next(), sub.next()];
    const written = await appendCommitted(orm, bus, [
      sandboxEvent(tenant, randomUUID(), 1),
      sandboxEvent(tenant, randomUUID(), 2),
    ]);
    const [first, second] = await Promise.all(calls.slice(0, 2));
    expect([first.value?.position, second.value?.position]).toEqual(written);
    const third = calls[2].then(
      () => null,
      (err: unknown) => err,
    );
    await hub.close();
    expect(await third).toBeInstanceOf(SubscriptionEndedError);
    expect((await sub.next()).done).toBe(true);
    await expect(hub.subscribe({ match: {} })).rejects.toBeInstanceOf(SubscriptionEndedError);
  });

  it('rejects a malformed or unknown cursor at subscribe time', async () => {
    const { hub } = await startHub();
    await expect(hub.subscribe({ match: {}, after: 'garbage!' })).rejects.toMatchObject({
      code: 'INVALID_CURSOR',
      reason: 'MALFORMED',
    });
    await expect(hub.subscribe({ match: {}, after: encodeEventCursor(999999999n) })).rejects.toMatchObject({
      code: 'INVALID_CURSOR',
      reason: 'UNKNOWN',
    });
    expect(hub.subscriberCount).toBe(0);
  });

  it('prunes events past retention in batches; a cursor before the horizon is expired, one after it resumes', async () => {
    const retentionSeconds = 3600;
    let now = new Date('2030-01-01T00:00:00Z');
    const clock = { now: () => now };
    const tenant = randomUUID();
    const old = await appendCommitted(
      orm,
      null,
      Array.from({ length: 25 }, (_, i) => sandboxEvent(tenant, randomUUID(), i)),
      new Date(now.getTime() - 2 * retentionSeconds * 1000),
    );
    const recent = await appendCommitted(
      orm,
      null,
      Array.from({ length: 5 }, (_, i) => sandboxEvent(tenant, randomUUID(), i)),
      now,
    );
    const sweeper = new EventSweeper(orm, { retentionSeconds, clock, batchSize: 4 });

    const result = await sweeper.sweepOnce();
    expect(result.elected).toBe(true);
    expect(result.deleted).toBeGreaterThanOrEqual(old.length);
    const remaining = positions(await readEventsAfter(orm.em.fork(), LOG_START, 1000, { tenantId: tenant }));
    expect(remaining).toEqual(recent);

    const { hub } = await startHub();
    await expect(
      hub.subscribe({ match: { tenantId: tenant }, after: encodeEventCursor(old[3]) }),
    ).rejects.toMatchObject({
      code: 'INVALID_CURSOR',
      reason: 'EXPIRED',
    });
    // The newest pruned event's cursor still resumes: nothing after it is gone.
    const resumed = await hub.subscribe({ match: { tenantId: tenant }, after: encodeEventCursor(old[old.length - 1]) });
    expect(positions(await take(resumed, recent.length))).toEqual(recent);
    await resumed.return?.();

    // Time passes: the recent ones expire too, and nothing newer is touched.
    now = new Date(now.getTime() + 2 * retentionSeconds * 1000);
    const fresh = await appendCommitted(orm, null, [sandboxEvent(tenant, randomUUID())], now);
    expect((await sweeper.sweepOnce()).deleted).toBeGreaterThanOrEqual(recent.length);
    expect(positions(await readEventsAfter(orm.em.fork(), LOG_START, 1000, { tenantId: tenant }))).toEqual(fresh);
    expect((await sweeper.sweepOnce()).deleted).toBe(0);
    await sweeper.stop();
  });
  it('never calls a cursor expired because ids were burned by rolled-back writes: only a prune past it expires it', async () => {
    const retentionSeconds = 3600;
    const now = new Date('2032-01-01T00:00:00Z');
    const tenant = randomUUID();
    await appendCommitted(orm, null, [sandboxEvent(tenant, randomUUID())], new Date(now.getTime() - 7200_000));
    // Rolled-back writes burn the ids right after it.
    for (let i = 0; i < 3; i++)
      await orm.em
        .fork()
        .transactional(async (tx) => {
          await appendEvent(tx, sandboxEvent(tenant, randomUUID(), i), now);
          throw new Error('roll back');
        })
        .catch(() => undefined);
    await appendCommitted(orm, null, [sandboxEvent(tenant, randomUUID(), 1)], now);
    const [old, recent] = await readEventsAfter(orm.em.fork(), LOG_START, 1000, { tenantId: tenant });
    const sweeper = new EventSweeper(orm, { retentionSeconds, clock: { now: () => now } });
    expect((await sweeper.sweepOnce()).deleted).toBeGreaterThanOrEqual(1);
    await sweeper.stop();

    // The pruned event's own cursor lost nothing after it: the burned ids never held events.
    const { hub } = await startHub();
    const resumed = await hub.subscribe({ match: { tenantId: tenant }, after: old.cursor });
    expect(positions(await take(resumed, 1))).toEqual([recent.position]);
    await resumed.return?.();
  });

  it('ends a replay with EXPIRED when the sweeper prunes past it between pages, instead of skipping', async () => {
    const retentionSeconds = 3600;
    const now = new Date('2033-01-01T00:00:00Z');
    const clock = { now: () => now };
    const tenant = randomUUID();
    const old = await appendCommitted(
      orm,
      null,
      Array.from({ length: 20 }, (_, i) => sandboxEvent(tenant, randomUUID(), i)),
      new Date(now.getTime() - 7200_000),
    );
    const recent = await appendCommitted(orm, null, [sandboxEvent(tenant, randomUUID(), 99)], now);
    // Pages of 3 into a queue of 6: the replay reads ahead two pages at most, then waits for the consumer.
    const { hub } = await startHub({ replayPageSize: 3, queueLimit: 6 });
    const sub = await hub.subscribe({ match: { tenantId: tenant }, after: encodeEventCursor(old[0]) });
    const got = positions(await take(sub, 2));
    const sweeper = new EventSweeper(orm, { retentionSeconds, clock });
    expect((await sweeper.sweepOnce()).deleted).toBeGreaterThanOrEqual(old.length);
    await sweeper.stop();

    let ended: unknown = null;
    try {
      for (;;) {
        const step = await sub.next();
        if (step.done) break;
        got.push(step.value.position);
        // Reaching the recent event means the pruned ones were skipped over.
        if (step.value.position === recent[0]) break;
      }
    } catch (err) {
      ended = err;
    }
    expect(ended).toBeInstanceOf(InvalidCursorError);
    expect(ended).toMatchObject({ code: 'INVALID_CURSOR', reason: 'EXPIRED' });
    // Whatever it delivered is a gap-free run from the start: nothing pruned was skipped over.
    expect(got).toEqual(old.slice(1, 1 + got.length));
    expect(got).not.toContain(recent[0]);
  });
});
