import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Clock } from '../../src/kernel/clock.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  getSandbox,
  heartbeat,
  registerWorker,
  releaseLease,
  renewLease,
  reportStatus,
  uniqueName,
} from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const SKEW_MS = 60_000;
const HEARTBEAT_TTL_SECONDS = 30;

/**
 * Two replicas on one Postgres whose clocks disagree: B's runs a minute ahead of A's (and of the
 * database's). Lease expiry and heartbeat age are judged on the database's clock, so B takes
 * nothing over and sweeps nothing early. (SQLite has one process, so one clock: nothing to skew.)
 */
describe('replicas with skewed clocks on postgres', () => {
  let a: TestServer;
  let b: TestServer;
  const ahead: Clock = { now: () => new Date(Date.now() + SKEW_MS) };
  const env = { FLOTILLA_HEARTBEAT_TTL_SECONDS: String(HEARTBEAT_TTL_SECONDS) };

  beforeAll(async () => {
    a = await startTestServer('postgres', { env });
    b = await startTestServer('postgres', {
      env,
      clock: ahead,
      databaseUrl: a.databaseUrl,
      adminToken: a.adminToken,
    });
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it('lets a replica whose clock runs ahead neither take a live lease nor sweep a live worker', async () => {
    const tenantId = await createTenant(a, uniqueName('skew'));
    const pool = uniqueName('pool');
    const holder = await registerWorker(a, uniqueName('holder'), { tenantId, labels: { pool } });
    const created = await createSandbox(a, tenantId, { placement: { workerLabels: { pool } } });
    const id = created.sandbox.id;
    expect(created.sandbox.worker?.id).toBe(holder.id);
    await heartbeat(a, holder);
    const lease = await acquireLease(a, holder, id, 30);
    expect(lease.lease.fencingToken).toBe('1');

    // By B's clock the heartbeat is 60 s old and the lease ran out 30 s ago; by the database's, neither.
    expect(await b.app.sweeper.runOnce()).toMatchObject({ workersOffline: 0, sandboxesLost: 0 });
    expect(await getSandbox(a, id)).toMatchObject({
      status: 'SCHEDULED',
      worker: { id: holder.id },
      lease: { fencingToken: '1', holder: { id: holder.id } },
    });

    // Through B, the holder's lease is live: it renews and writes with its token.
    const renewed = await renewLease(b, holder, id, '1', 30);
    expect(renewed.__typename).toBe('LeasePayload');
    // The new expiry is 30 s after the database's now, not after B's.
    expect(new Date(renewed.lease.expiresAt).getTime()).toBeLessThan(ahead.now().getTime());
    expect((await reportStatus(b, holder, id, '1', 'STARTING')).sandbox?.status).toBe('STARTING');

    // A heartbeat through B is stamped with the database's time, so A does not see it as fresh for longer.
    expect((await heartbeat(b, holder)).__typename).toBe('WorkerPayload');
    const seen = dataOf(
      await a.gql<{ worker: { status: string; lastHeartbeatAt: string } }>(
        'query($id: ID!) { worker(id: $id) { status lastHeartbeatAt } }',
        { id: holder.id },
      ),
    ).worker;
    expect(seen.status).toBe('ONLINE');
    expect(new Date(seen.lastHeartbeatAt).getTime()).toBeLessThan(ahead.now().getTime() - SKEW_MS / 2);
    expect(await b.app.sweeper.runOnce()).toMatchObject({ workersOffline: 0, sandboxesLost: 0 });
    // Read through B, the worker is live too, and B's status filter agrees (B has read the database's time).
    const throughB = await b.gql<{ worker: { status: string }; workers: { edges: { node: { id: string } }[] } }>(
      'query($id: ID!) { worker(id: $id) { status } workers(status: [ONLINE], first: 100) { edges { node { id } } } }',
      { id: holder.id },
    );
    expect(dataOf(throughB).worker.status).toBe('ONLINE');
    expect(dataOf(throughB).workers.edges.map((e) => e.node.id)).toContain(holder.id);

    // Expiry still happens on the database's clock: released, the lease is over at once for B too.
    const drained = await b.gql<{ drainWorker: { __typename: string } }>(
      'mutation($id: ID!) { drainWorker(input: { workerId: $id }) { __typename } }',
      { id: holder.id },
    );
    expect(dataOf(drained).drainWorker.__typename).toBe('WorkerPayload');
    const next = await registerWorker(b, uniqueName('next'), { tenantId, labels: { pool } });
    expect((await releaseLease(b, holder, id, '1')).__typename).toBe('LeasePayload');
    expect(await b.app.sweeper.runOnce()).toMatchObject({ workersOffline: 0, sandboxesLost: 1, sandboxesPlaced: 1 });
    expect(await getSandbox(a, id)).toMatchObject({ status: 'SCHEDULED', worker: { id: next.id } });
    const takeover = await acquireLease(b, next, id, 30);
    expect(takeover.lease).toMatchObject({ fencingToken: '2', transitions: 1, holder: { id: next.id } });
  });
});
