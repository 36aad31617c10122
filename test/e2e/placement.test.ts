import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '../../src/db/entities/sandbox.js';
import { Worker } from '../../src/db/entities/worker.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  getSandbox,
  heartbeat,
  type RegisteredWorker,
  registerWorker,
  reportStatus,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { isRequestStatement, localId, startTestServer, type TestServer } from '../helpers/server.js';

const ROOMY = { maxSandboxes: 1000, maxCpuMillis: 10_000_000, maxMemoryMb: 10_000_000 };
const SMALL = { cpuMillis: 500, memoryMb: 512 };

/**
 * Placement is driven by what can make it succeed, plus a slow per-sandbox backoff retry; the
 * domain sweeper issues no statement while nothing is due. Passes are run by hand
 * (`runIfDue`, what the 1-second timer runs) with a fake clock, and statements are counted.
 */
describe.each(DRIVERS)('event-driven placement on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();
  const statements: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, {
      clock,
      env: { FLOTILLA_HEARTBEAT_TTL_SECONDS: '30' },
      onQuery: (sql) => {
        if (isRequestStatement(sql)) statements.push(sql);
      },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  const sweeper = () => server.app.sweeper;
  const gqlOk = async (query: string, variables: Record<string, unknown>) => dataOf(await server.gql(query, variables));

  /** A tenant with its own pool label, so each test's sandboxes only fit its own workers. */
  async function pool() {
    const tenantId = await createTenant(server, uniqueName('pl'), { quota: ROOMY });
    const label = uniqueName('pool');
    const worker = (options: { cpuMillis?: number; memoryMb?: number } = SMALL) =>
      registerWorker(server, uniqueName('w'), { tenantId, labels: { pool: label }, ...SMALL, ...options });
    const sandbox = async () => {
      const created = await createSandbox(server, tenantId, { placement: { workerLabels: { pool: label } } });
      expect(created.__typename, JSON.stringify(created)).toBe('SandboxPayload');
      return created.sandbox;
    };
    return { tenantId, worker, sandbox };
  }

  const statusOf = async (id: string) => (await getSandbox(server, id))?.status;

  /** Takes the worker offline the way production does: silent past its TTL, then swept. */
  async function silence(): Promise<void> {
    clock.advance(31);
    await sweeper().runOnce();
  }

  it('an unplaceable backlog with no online worker costs (almost) no statements per sweeper pass', async () => {
    const p = await pool();
    await p.worker();
    await silence(); // the only worker is OFFLINE: nothing can be placed
    const backlog = [];
    for (let i = 0; i < 30; i++) backlog.push(await p.sandbox());
    expect(backlog.every((s) => s.status === 'PENDING')).toBe(true);
    await sweeper().runOnce();

    statements.length = 0;
    let quietPasses = 0;
    const PASSES = 120; // two simulated minutes of the 1-second timer
    for (let i = 0; i < PASSES; i++) {
      clock.advance(1);
      const before = statements.length;
      await sweeper().runIfDue();
      if (statements.length === before) quietPasses++;
    }
    console.log(`${kind}: ${statements.length} statements over ${PASSES} sweeper passes with 30 waiting sandboxes`);
    expect(statements.length).toBeLessThanOrEqual(PASSES / 10);
    expect(quietPasses).toBeGreaterThanOrEqual(PASSES - 4);
    for (const s of backlog) expect(await statusOf(s.id)).toBe('PENDING');
  });

  it('registering a worker with room places waiting sandboxes in the next pass, without waiting for a backoff', async () => {
    const p = await pool();
    await p.worker();
    await silence();
    const waiting = [await p.sandbox(), await p.sandbox(), await p.sandbox()];
    await sweeper().runIfDue();
    const w = await p.worker({ cpuMillis: 1000, memoryMb: 1024 }); // room for two
    const pass = await sweeper().runIfDue();
    expect(pass?.sandboxesPlaced).toBe(2);
    const placed = await Promise.all(waiting.map((s) => getSandbox(server, s.id)));
    expect(placed.map((s) => s?.status)).toEqual(['SCHEDULED', 'SCHEDULED', 'PENDING']);
    expect(placed[0]?.worker?.id).toBe(w.id);
  });

  it('a worker coming back online places what waits for it', async () => {
    const p = await pool();
    const w = await p.worker();
    await silence();
    const s = await p.sandbox();
    await sweeper().runIfDue();
    expect(await statusOf(s.id)).toBe('PENDING');
    expect((await heartbeat(server, w)).worker.status).toBe('ONLINE');
    expect((await sweeper().runIfDue())?.sandboxesPlaced).toBe(1);
    expect(await getSandbox(server, s.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
  });

  it('undraining a worker places what waits for it', async () => {
    const p = await pool();
    const w = await p.worker();
    await gqlOk('mutation($i: WorkerRefInput!) { drainWorker(input: $i) { __typename } }', { i: { workerId: w.id } });
    const s = await p.sandbox();
    expect(s.status).toBe('PENDING');
    await sweeper().runIfDue();
    expect(await statusOf(s.id)).toBe('PENDING');
    await gqlOk('mutation($i: WorkerRefInput!) { undrainWorker(input: $i) { __typename } }', { i: { workerId: w.id } });
    expect((await sweeper().runIfDue())?.sandboxesPlaced).toBe(1);
    expect(await getSandbox(server, s.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
  });

  /** A full worker with one sandbox on it and one waiting: `free` releases the first one's capacity. */
  async function fullWorker() {
    const p = await pool();
    const w = await p.worker();
    const first = await p.sandbox();
    expect(first.status).toBe('SCHEDULED');
    const second = await p.sandbox();
    expect(second.status).toBe('PENDING');
    await sweeper().runIfDue();
    expect(await statusOf(second.id)).toBe('PENDING');
    return { ...p, w, first, second };
  }

  for (const mutation of ['stopSandbox', 'deleteSandbox'] as const) {
    it(`capacity released by ${mutation} places the next waiting sandbox`, async () => {
      const { w, first, second } = await fullWorker();
      await gqlOk(`mutation($id: ID!) { ${mutation}(input: { sandboxId: $id }) { __typename } }`, { id: first.id });
      expect((await sweeper().runIfDue())?.sandboxesPlaced).toBe(1);
      expect(await getSandbox(server, second.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
    });
  }

  it('capacity released by a worker report (STOPPED) places the next waiting sandbox', async () => {
    const { w, first, second } = await fullWorker();
    const lease = await acquireLease(server, w, first.id);
    await reportStatus(server, w, first.id, lease.lease.fencingToken, 'STOPPED');
    expect((await sweeper().runIfDue())?.sandboxesPlaced).toBe(1);
    expect(await getSandbox(server, second.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
  });

  it('a lost lease frees its sandbox, which is placed again in the same pass', async () => {
    const p = await pool();
    const a = await p.worker();
    const s = await p.sandbox();
    const lease = await acquireLease(server, a, s.id, 5);
    await reportStatus(server, a, s.id, lease.lease.fencingToken, 'RUNNING');
    const b = await p.worker();
    clock.advance(6); // a stops renewing; both workers still heartbeat
    await heartbeat(server, a);
    await heartbeat(server, b);
    const pass = await sweeper().runIfDue();
    expect(pass).toMatchObject({ sandboxesLost: 1 });
    expect(pass?.sandboxesPlaced).toBeGreaterThanOrEqual(1);
    const again = await getSandbox(server, s.id);
    expect(again?.status).toBe('SCHEDULED');
    expect(again?.stateVersion).toBe(4); // SCHEDULED → RUNNING → LOST → SCHEDULED
    // The old, expired lease says nothing about the new placement: it stays placed until its worker acquires.
    clock.advance(1);
    await heartbeat(server, a);
    await heartbeat(server, b);
    expect(await sweeper().runOnce()).toMatchObject({ sandboxesLost: 0 });
    expect(await getSandbox(server, s.id)).toMatchObject({ status: 'SCHEDULED', stateVersion: 4 });
    const taker = [a, b].find((w) => w.id === again?.worker?.id);
    if (!taker) throw new Error('placed on one of the two workers');
    expect((await acquireLease(server, taker, s.id)).lease.fencingToken).toBe('2');
  });

  /** Gives a worker room behind the server's back: a change no commit announces. */
  const growWorker = (w: RegisteredWorker) =>
    server.app.db.orm.em
      .fork()
      .nativeUpdate(Worker, { id: localId(w.id) }, { capacityCpuMillis: 2000, capacityMemoryMb: 2048 });

  /** Pushes every waiting sandbox's backoff retry an hour out, so only a trigger can place one now. */
  async function parkBacklog(): Promise<void> {
    await server.app.db.orm.em
      .fork()
      .nativeUpdate(
        Sandbox,
        { status: { $in: ['PENDING', 'LOST'] } },
        { nextPlacementAt: new Date(clock.now().getTime() + 3600_000) },
      );
    await sweeper().runIfDue();
  }

  it('raising a tenant quota triggers a placement pass', async () => {
    const { tenantId, w, second } = await fullWorker();
    await parkBacklog();
    await growWorker(w);
    await sweeper().runIfDue();
    expect(await statusOf(second.id)).toBe('PENDING'); // nothing announced the room
    await gqlOk('mutation($i: UpdateTenantInput!) { updateTenant(input: $i) { __typename } }', {
      i: { tenantId, quota: { ...ROOMY, maxSandboxes: 2000 } },
    });
    expect((await sweeper().runIfDue())?.sandboxesPlaced).toBe(1);
    expect(await statusOf(second.id)).toBe('SCHEDULED');
  });

  it('the backoff retry places a sandbox whose blocking condition changed without a trigger', async () => {
    const { w, second } = await fullWorker();
    await growWorker(w);
    let seconds = 0;
    while ((await statusOf(second.id)) === 'PENDING' && seconds < 180) {
      clock.advance(5);
      seconds += 5;
      await heartbeat(server, w); // stays online (a routine heartbeat triggers nothing)
      await sweeper().runIfDue();
    }
    expect(await getSandbox(server, second.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: w.id } });
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThanOrEqual(90); // the backoff is capped at a minute (plus the retry coalescing)
  });
});
