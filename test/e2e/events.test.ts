import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SubscriptionEndedError } from '../../src/events/errors.js';
import { DRIVERS } from '../helpers/databases.js';
import { appendCommitted, positions } from '../helpers/events.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { take } from '../helpers/streams.js';

describe.each(DRIVERS)('event stream of a running server on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('delivers events committed through the server bus and reports the stream in /metrics and /readyz', async () => {
    const tenant = randomUUID();
    const sub = await server.app.events().subscribe({ match: { tenantId: tenant } });
    const written = await appendCommitted(server.app.db.orm, server.app.bus, [
      { type: 'SANDBOX_STATUS_CHANGED', tenantId: tenant, data: { to: 'RUNNING' } },
      { type: 'MESSAGE_POSTED', tenantId: tenant },
    ]);
    expect(positions(await take(sub, 2))).toEqual(written);

    const metrics = await (await fetch(`${server.app.url}/metrics`)).text();
    expect(metrics).toMatch(/^flotilla_event_listener_ready 1$/m);
    expect(metrics).toMatch(/^flotilla_event_subscribers 1$/m);
    expect(metrics).toMatch(/^flotilla_event_subscribers_closed_slow 0$/m);
    const ready = await fetch(`${server.app.url}/readyz`);
    expect(ready.status).toBe(200);
    await sub.return?.();
  });

  if (kind === 'postgres') {
    it('is not ready while its LISTEN connection is down, and catches up once it is back', async () => {
      const tenant = randomUUID();
      const sub = await server.app.events().subscribe({ match: { tenantId: tenant } });
      const maintenance = new URL(server.databaseUrl);
      const db = maintenance.pathname.slice(1);
      maintenance.pathname = '/postgres';
      const admin = new pg.Client({ connectionString: maintenance.toString() });
      await admin.connect();
      try {
        // Refuse new connections to this database so the listener stays down while we look
        // (the server's pool keeps the connections it already has).
        await admin.query(`alter database ${db} with allow_connections false`);
        await admin.query(
          `select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name = 'flotilla-listen'`,
          [db],
        );
        await vi.waitFor(async () => {
          const res = await fetch(`${server.app.url}/readyz`);
          expect(res.status).toBe(503);
          expect(((await res.json()) as { reason: string }).reason).toMatch(/LISTEN/);
        });
        const metrics = await (await fetch(`${server.app.url}/metrics`)).text();
        expect(metrics).toMatch(/^flotilla_event_listener_ready 0$/m);
        // Written by another replica (no local bus): only NOTIFY or the reconnect catch-up can deliver it.
        const written = await appendCommitted(server.app.db.orm, null, [{ type: 'LEASE_CHANGED', tenantId: tenant }]);
        await admin.query(`alter database ${db} with allow_connections true`);
        expect(positions(await take(sub, 1))).toEqual(written);
        await vi.waitFor(async () => expect((await fetch(`${server.app.url}/readyz`)).status).toBe(200), {
          timeout: 10_000,
        });
      } finally {
        await admin.query(`alter database ${db} with allow_connections true`);
        await admin.end();
        await sub.return?.();
      }
    });
  }

  if (kind === 'postgres') {
    it('opens its LISTEN connection on FLOTILLA_EVENT_LISTEN_URL when set, and is not ready while that fails', async () => {
      const unreachable = new URL(server.databaseUrl);
      unreachable.pathname = '/flotilla_listen_target_missing';
      const other = await startTestServer(kind, { env: { FLOTILLA_EVENT_LISTEN_URL: unreachable.toString() } });
      try {
        const res = await fetch(`${other.app.url}/readyz`);
        expect(res.status).toBe(503);
        expect(((await res.json()) as { reason: string }).reason).toMatch(/LISTEN.*flotilla_listen_target_missing/);
        // Queries and writes still work: only live fan-out between replicas depends on it.
        expect((await other.gql('{ viewer { subject } }')).body.data).toEqual({
          viewer: { subject: 'platform-admin' },
        });
      } finally {
        await other.close();
      }
    });
  }

  it('ends open subscriptions with a resumable error when the server closes', async () => {
    const other = await startTestServer(kind);
    const sub = await other.app.events().subscribe({ match: {} });
    const next = sub.next().then(
      () => null,
      (err: unknown) => err,
    );
    await other.close();
    const err = await next;
    expect(err).toBeInstanceOf(SubscriptionEndedError);
    expect((err as SubscriptionEndedError).lastCursor).toBe(sub.lastCursor);
  });
});
