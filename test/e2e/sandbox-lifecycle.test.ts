import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  getSandbox,
  heartbeat,
  registerWorker,
  reportStatus,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe.each(DRIVERS)('sandbox lifecycle on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer(kind, { clock, env: { FLOTILLA_HEARTBEAT_TTL_SECONDS: '30' } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('runs a sandbox from PENDING to STOPPED, loses it when its worker goes silent, and places it again', async () => {
    const tenantId = await createTenant(server, uniqueName('life'));
    const a = await registerWorker(server, uniqueName('wa'), { cpuMillis: 1000, memoryMb: 1024 });

    const created = await createSandbox(server, tenantId, { name: 'first' });
    expect(created.__typename).toBe('SandboxPayload');
    const id = created.sandbox.id;
    expect(created.sandbox).toMatchObject({ status: 'SCHEDULED', stateVersion: 1, worker: { id: a.id }, lease: null });

    const acquired = await acquireLease(server, a, id);
    expect(acquired.lease.fencingToken).toBe('1');
    const token = acquired.lease.fencingToken;
    expect((await reportStatus(server, a, id, token, 'STARTING')).sandbox.status).toBe('STARTING');
    const running = await reportStatus(server, a, id, token, 'RUNNING');
    expect(running.sandbox).toMatchObject({ status: 'RUNNING', stateVersion: 3 });
    expect(running.sandbox.startedAt).not.toBeNull();

    // An invalid transition is a typed error and changes nothing.
    const backwards = await reportStatus(server, a, id, token, 'STARTING');
    expect(backwards).toMatchObject({ __typename: 'InvalidTransitionError', code: 'INVALID_TRANSITION' });
    expect((await getSandbox(server, id))?.stateVersion).toBe(3);

    // Worker A goes silent: its heartbeat and its lease run out.
    const b = await registerWorker(server, uniqueName('wb'), { cpuMillis: 1000, memoryMb: 1024 });
    clock.advance(31);
    await heartbeat(server, b);
    const sweep = await server.app.sweeper.runOnce();
    expect(sweep).toMatchObject({ workersOffline: 1, sandboxesLost: 1, sandboxesPlaced: 1 });

    const moved = await getSandbox(server, id);
    expect(moved).toMatchObject({ status: 'SCHEDULED', worker: { id: b.id } });
    expect(moved?.stateVersion).toBe(5); // RUNNING → LOST → SCHEDULED

    const workers = dataOf(
      await server.gql<{
        workers: { edges: { node: { id: string; status: string; allocated: { cpuMillis: number } } }[] };
      }>('{ workers(first: 100) { edges { node { id status allocated { cpuMillis } } } } }'),
    ).workers.edges.map((e) => e.node);
    expect(workers.find((w) => w.id === a.id)).toMatchObject({ status: 'OFFLINE', allocated: { cpuMillis: 0 } });
    expect(workers.find((w) => w.id === b.id)).toMatchObject({ status: 'ONLINE', allocated: { cpuMillis: 500 } });

    // A's late write is refused and changes nothing: while A's expired lease is the last one, as
    // stale; once B, where the sandbox is placed now, took over with a higher token, A no longer
    // sees the sandbox at all.
    const late = await reportStatus(server, a, id, token, 'FAILED', { reason: 'late' });
    expect(late).toMatchObject({ __typename: 'StaleFencingTokenError', code: 'STALE_FENCING_TOKEN' });
    const takeover = await acquireLease(server, b, id);
    expect(takeover.lease).toMatchObject({ fencingToken: '2', transitions: 1, holder: { id: b.id } });
    const later = await reportStatus(server, a, id, token, 'FAILED', { reason: 'late' });
    expect(later).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });
    expect(await acquireLease(server, a, id)).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });
    expect(await getSandbox(server, id)).toMatchObject({ status: 'SCHEDULED', stateVersion: 5 });

    await reportStatus(server, b, id, '2', 'RUNNING');
    const stop = dataOf(
      await server.gql<{
        stopSandbox: {
          sandbox: {
            status: string;
            worker: { allocated: { cpuMillis: number } };
            tenant: { usage: { sandboxes: number } };
          };
        };
      }>(
        'mutation($id: ID!) { stopSandbox(input: { sandboxId: $id }) { ... on SandboxPayload { sandbox { status worker { allocated { cpuMillis } } tenant { usage { sandboxes } } } } } }',
        { id },
      ),
    );
    // A stop request releases the capacity at once, on the worker and in the tenant's usage.
    expect(stop.stopSandbox.sandbox).toMatchObject({
      status: 'STOPPING',
      worker: { allocated: { cpuMillis: 0 } },
      tenant: { usage: { sandboxes: 0 } },
    });
    const stopped = await server
      .gql<{
        reportSandboxStatus: {
          sandbox: {
            status: string;
            exitCode: number;
            stoppedAt: string;
            worker: { allocated: { cpuMillis: number } };
          };
        };
      }>(
        'mutation($i: ReportSandboxStatusInput!) { reportSandboxStatus(input: $i) { ... on SandboxPayload { sandbox { status exitCode stoppedAt worker { allocated { cpuMillis } } } } } }',
        { i: { sandboxId: id, fencingToken: '2', status: 'STOPPED', exitCode: 0 } },
        b.token,
      )
      .then((r) => dataOf(r).reportSandboxStatus);
    // The response already shows the released capacity (no stale entity from the transaction).
    expect(stopped.sandbox).toMatchObject({ status: 'STOPPED', exitCode: 0, worker: { allocated: { cpuMillis: 0 } } });
    expect(stopped.sandbox.stoppedAt).not.toBeNull();

    const usage = dataOf(
      await server.gql<{ tenant: { usage: { sandboxes: number; cpuMillis: number } } }>(
        'query($id: ID!) { tenant(id: $id) { usage { sandboxes cpuMillis } } }',
        {
          id: tenantId,
        },
      ),
    );
    expect(usage.tenant.usage).toEqual({ sandboxes: 0, cpuMillis: 0 });

    const deleted = dataOf(
      await server.gql<{ deleteSandbox: { sandbox: { status: string } } }>(
        'mutation($id: ID!) { deleteSandbox(input: { sandboxId: $id }) { ... on SandboxPayload { sandbox { status } } } }',
        { id },
      ),
    );
    expect(deleted.deleteSandbox.sandbox.status).toBe('DELETED');
    expect(await getSandbox(server, id)).toBeNull();
    const listed = dataOf(
      await server.gql<{ sandboxes: { totalCount: number } }>(
        'query($t: ID!) { sandboxes(tenantId: $t) { totalCount } }',
        { t: tenantId },
      ),
    );
    expect(listed.sandboxes.totalCount).toBe(0);

    const types = dataOf(
      await server.gql<{ events: { edges: { node: { type: string; data: Record<string, unknown> } }[] } }>(
        'query($t: ID!) { events(tenantId: $t, first: 100) { edges { node { type data } } } }',
        { t: tenantId },
      ),
    ).events.edges.map((e) => e.node);
    const statusChanges = types.filter((e) => e.type === 'SANDBOX_STATUS_CHANGED').map((e) => e.data.to);
    expect(statusChanges).toEqual([
      'PENDING',
      'SCHEDULED',
      'STARTING',
      'RUNNING',
      'LOST',
      'SCHEDULED',
      'RUNNING',
      'STOPPING',
      'STOPPED',
      'DELETED',
    ]);
    expect(types.filter((e) => e.type === 'SANDBOX_ASSIGNED')).toHaveLength(2);
    expect(types.filter((e) => e.type === 'SANDBOX_STOP_REQUESTED')).toHaveLength(1);
    expect(types.filter((e) => e.type === 'LEASE_CHANGED').map((e) => e.data.action)).toEqual(['acquired', 'takeover']);
  });

  it('keeps a sandbox PENDING without capacity and places it once a worker frees up', async () => {
    const tenantId = await createTenant(server, uniqueName('pend'));
    const pool = uniqueName('pool');
    const w = await registerWorker(server, uniqueName('small'), {
      cpuMillis: 500,
      memoryMb: 512,
      tenantId,
      labels: { pool },
    });
    const placement = { workerLabels: { pool } };
    const first = await createSandbox(server, tenantId, { name: 'one', placement });
    expect(first.sandbox).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
    const second = await createSandbox(server, tenantId, { name: 'two', placement });
    expect(second.sandbox).toMatchObject({ status: 'PENDING', worker: null });

    await heartbeat(server, w);
    expect((await server.app.sweeper.runOnce())?.sandboxesPlaced).toBe(0);
    await server.gql('mutation($id: ID!) { stopSandbox(input: { sandboxId: $id }) { __typename } }', {
      id: first.sandbox.id,
    });
    const lease = await acquireLease(server, w, first.sandbox.id);
    await reportStatus(server, w, first.sandbox.id, lease.lease.fencingToken, 'STOPPED');
    await server.app.sweeper.runOnce();
    expect(await getSandbox(server, second.sandbox.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
  });

  it('stops sandboxes past their TTL', async () => {
    const tenantId = await createTenant(server, uniqueName('ttl'));
    const worker = await registerWorker(server, uniqueName('ttlw'), { tenantId });
    const created = await createSandbox(server, tenantId, { ttlSeconds: 60 });
    expect(created.sandbox).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id } });
    expect(created.sandbox.expiresAt).not.toBeNull();
    clock.advance(29);
    await heartbeat(server, worker);
    expect((await server.app.sweeper.runOnce())?.sandboxesExpired).toBe(0);
    clock.advance(32);
    await heartbeat(server, worker);
    const sweep = await server.app.sweeper.runOnce();
    expect(sweep?.sandboxesExpired).toBeGreaterThanOrEqual(1);
    expect(await getSandbox(server, created.sandbox.id)).toMatchObject({
      status: 'STOPPING',
      statusReason: 'ttl expired',
    });
  });
  it('one rule when a worker is gone: a stopping sandbox on a deleted worker is STOPPED, never placed again', async () => {
    const tenantId = await createTenant(server, uniqueName('gone'));
    const a = await registerWorker(server, uniqueName('wa'), { tenantId, cpuMillis: 1000, memoryMb: 1024 });
    const created = await createSandbox(server, tenantId, { name: 'stopping' });
    expect(created.sandbox).toMatchObject({ status: 'SCHEDULED', worker: { id: a.id } });
    const id = created.sandbox.id;
    const stop = (mutation: string, input: Record<string, string>) =>
      server.gql<Record<string, { __typename: string }>>(
        `mutation($i: ${mutation === 'stopSandbox' ? 'SandboxRefInput' : 'WorkerRefInput'}!) { ${mutation}(input: $i) { __typename } }`,
        { i: input },
      );
    await stop('stopSandbox', { sandboxId: id });
    expect((await getSandbox(server, id))?.status).toBe('STOPPING');

    // Another worker with room is online: a LOST sandbox would be placed on it.
    const b = await registerWorker(server, uniqueName('wb'), { tenantId, cpuMillis: 1000, memoryMb: 1024 });
    await heartbeat(server, b);
    expect(dataOf(await stop('deleteWorker', { workerId: a.id })).deleteWorker.__typename).not.toMatch(/Error$/);
    expect(await getSandbox(server, id)).toMatchObject({ status: 'STOPPED', statusReason: 'worker deleted' });
    const sweep = await server.app.sweeper.runOnce();
    expect(sweep?.sandboxesPlaced).toBe(0);
    expect(await getSandbox(server, id)).toMatchObject({ status: 'STOPPED', worker: null });
  });
  it('a LOST sandbox keeps its quota slot, so placing it again never takes the tenant over quota', async () => {
    const tenantId = await createTenant(server, uniqueName('quota-lost'), {
      quota: { maxSandboxes: 2, maxCpuMillis: 100_000, maxMemoryMb: 100_000 },
    });
    const a = await registerWorker(server, uniqueName('qa'), { tenantId, cpuMillis: 500, memoryMb: 512 });
    await registerWorker(server, uniqueName('qb'), { tenantId, cpuMillis: 500, memoryMb: 512 });
    const s1 = await createSandbox(server, tenantId, { name: 's1' });
    const s2 = await createSandbox(server, tenantId, { name: 's2' });
    const onA = [s1, s2].find((s) => s.sandbox.worker?.id === a.id);
    if (!onA) throw new Error('one of the two sandboxes should be on worker a');
    const usage = async () =>
      dataOf(
        await server.gql<{ tenant: { usage: { sandboxes: number } } }>(
          'query($t: ID!) { tenant(id: $t) { usage { sandboxes } } }',
          { t: tenantId },
        ),
      ).tenant.usage.sandboxes;

    const deleted = await server.gql<{ deleteWorker: { __typename: string } }>(
      'mutation($i: WorkerRefInput!) { deleteWorker(input: $i) { __typename } }',
      { i: { workerId: a.id } },
    );
    expect(dataOf(deleted).deleteWorker.__typename).not.toMatch(/Error$/);
    expect((await getSandbox(server, onA.sandbox.id))?.status).toBe('LOST');
    expect(await usage()).toBe(2);
    expect(await createSandbox(server, tenantId, { name: 's3' })).toMatchObject({
      __typename: 'QuotaExceededError',
      code: 'QUOTA_EXCEEDED',
    });

    // Room again: the LOST sandbox is placed, and the tenant is still within its quota.
    const c = await registerWorker(server, uniqueName('qc'), { tenantId, cpuMillis: 500, memoryMb: 512 });
    await heartbeat(server, c);
    await server.app.sweeper.runOnce();
    expect(await getSandbox(server, onA.sandbox.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: c.id } });
    expect(await usage()).toBe(2);
  });
  it('keeps a drain through the worker going offline and back, until undrainWorker lifts it', async () => {
    const tenantId = await createTenant(server, uniqueName('drain'));
    const w = await registerWorker(server, uniqueName('wd'), { tenantId, cpuMillis: 1000, memoryMb: 1024 });
    const call = async (mutation: 'drainWorker' | 'undrainWorker') =>
      dataOf(
        await server.gql<Record<string, { __typename: string; status?: string }>>(
          `mutation($i: WorkerRefInput!) { ${mutation}(input: $i) { __typename ... on WorkerPayload { worker { status } } } }`,
          { i: { workerId: w.id } },
        ),
      )[mutation];
    const statusOf = async () =>
      dataOf(
        await server.gql<{ node: { status: string } }>(
          'query($id: ID!) { node(id: $id) { ... on Worker { status } } }',
          {
            id: w.id,
          },
        ),
      ).node.status;
    expect((await call('drainWorker')).__typename).toBe('WorkerPayload');
    expect(await statusOf()).toBe('DRAINING');

    // Silent past its heartbeat TTL: swept offline. Its next heartbeat does not end the drain.
    clock.advance(31);
    await server.app.sweeper.runOnce();
    expect(await statusOf()).toBe('OFFLINE');
    await heartbeat(server, w);
    expect(await statusOf()).toBe('DRAINING');
    const pending = await createSandbox(server, tenantId, { name: 'waits' });
    expect(pending.sandbox).toMatchObject({ status: 'PENDING', worker: null });

    // Lifted: it is ONLINE and takes placements again.
    expect((await call('undrainWorker')).__typename).toBe('WorkerPayload');
    expect(await statusOf()).toBe('ONLINE');
    await server.app.sweeper.runOnce();
    expect(await getSandbox(server, pending.sandbox.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
  });
});
