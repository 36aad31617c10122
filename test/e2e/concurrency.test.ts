import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  getSandbox,
  type RegisteredWorker,
  registerWorker,
  releaseLease,
  reportStatus,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** Races over real connections: Postgres with its pool of 10, SQLite with its serialised writer. */
describe.each(DRIVERS)('concurrency on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer(kind, { clock });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('lets exactly 10 of 50 parallel createSandbox calls pass a quota of 10', async () => {
    const tenantId = await createTenant(server, uniqueName('quota'), {
      quota: { maxSandboxes: 10, maxCpuMillis: 100_000, maxMemoryMb: 100_000 },
    });
    await registerWorker(server, uniqueName('big'), { tenantId, cpuMillis: 100_000, memoryMb: 100_000 });
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => createSandbox(server, tenantId, { name: `q${i}` })),
    );
    const byType = new Map<string, number>();
    for (const r of results) byType.set(r.__typename, (byType.get(r.__typename) ?? 0) + 1);
    expect(Object.fromEntries(byType)).toEqual({ SandboxPayload: 10, QuotaExceededError: 40 });
    const usage = dataOf(
      await server.gql<{ tenant: { usage: { sandboxes: number } }; sandboxes: { totalCount: number } }>(
        'query($t: ID!) { tenant(id: $t) { usage { sandboxes } } sandboxes(tenantId: $t) { totalCount } }',
        { t: tenantId },
      ),
    );
    expect(usage.tenant.usage.sandboxes).toBe(10);
    expect(usage.sandboxes.totalCount).toBe(10);
  });

  it('never over-commits a worker under parallel creates from many tenants', async () => {
    const pool = uniqueName('pool');
    const workers = await Promise.all(
      [0, 1].map(() =>
        registerWorker(server, uniqueName('cap'), { cpuMillis: 2000, memoryMb: 100_000, labels: { pool } }),
      ),
    );
    const tenants = await Promise.all(Array.from({ length: 5 }, () => createTenant(server, uniqueName('oc'))));
    // 5 tenants × 6 sandboxes of 500 mCPU = 15 000 mCPU against 4 000 mCPU of workers: 8 fit.
    const results = await Promise.all(
      tenants.flatMap((t) =>
        Array.from({ length: 6 }, (_, i) =>
          createSandbox(server, t, { name: `oc${i}`, placement: { workerLabels: { pool } } }),
        ),
      ),
    );
    expect(results.every((r) => r.__typename === 'SandboxPayload')).toBe(true);
    const placed = results.filter((r) => r.sandbox.status === 'SCHEDULED');
    expect(placed).toHaveLength(8);
    expect(results.filter((r) => r.sandbox.status === 'PENDING')).toHaveLength(22);
    const view = dataOf(
      await server.gql<{
        nodes: { id: string; allocated: { cpuMillis: number }; sandboxes: { totalCount: number } }[];
      }>(
        'query($ids: [ID!]!) { nodes(ids: $ids) { ... on Worker { id allocated { cpuMillis } sandboxes { totalCount } } } }',
        { ids: workers.map((w) => w.id) },
      ),
    );
    for (const w of view.nodes) {
      expect(w.allocated.cpuMillis).toBe(2000);
      expect(w.sandboxes.totalCount).toBe(4);
    }
  });

  it('lets creates and the scheduler race for the same workers without deadlock or over-commit', async () => {
    const pool = uniqueName('pool');
    const tenants = await Promise.all(Array.from({ length: 4 }, () => createTenant(server, uniqueName('mix'))));
    // Fill the pool's only worker first, so later creates wait as PENDING for the scheduler.
    const first = await registerWorker(server, uniqueName('mixw'), {
      cpuMillis: 1000,
      memoryMb: 100_000,
      labels: { pool },
    });
    const placement = { workerLabels: { pool } };
    const waiting = await Promise.all(tenants.map((t) => createSandbox(server, t, { name: 'early', placement })));
    expect(waiting.filter((r) => r.sandbox.status === 'PENDING')).toHaveLength(2);
    const second = await registerWorker(server, uniqueName('mixw'), {
      cpuMillis: 3000,
      memoryMb: 100_000,
      labels: { pool },
    });
    const racing = await Promise.all([
      ...tenants.flatMap((t) => [0, 1].map((i) => createSandbox(server, t, { name: `late${i}`, placement }))),
      server.app.sweeper.runOnce(),
      server.app.sweeper.runOnce(),
    ]);
    const creates = racing.slice(0, 8) as Awaited<ReturnType<typeof createSandbox>>[];
    expect(creates.every((r) => r.__typename === 'SandboxPayload')).toBe(true);
    await server.app.sweeper.runOnce();
    const view = dataOf(
      await server.gql<{
        nodes: {
          allocated: { cpuMillis: number };
          capacity: { cpuMillis: number };
          sandboxes: { totalCount: number };
        }[];
      }>(
        'query($ids: [ID!]!) { nodes(ids: $ids) { ... on Worker { allocated { cpuMillis } capacity { cpuMillis } sandboxes { totalCount } } } }',
        { ids: [first.id, second.id] },
      ),
    );
    // 12 sandboxes of 500 mCPU want 6000 mCPU; the pool has 4000: exactly 8 placed, none over capacity.
    expect(view.nodes.map((w) => w.allocated.cpuMillis)).toEqual([1000, 3000]);
    expect(view.nodes.map((w) => w.sandboxes.totalCount)).toEqual([2, 6]);
  });

  it('gives one sandbox exactly one lease holder among 20 racing workers, with tokens that only grow', async () => {
    const tenantId = await createTenant(server, uniqueName('race'));
    const pool = uniqueName('pool');
    const workers: RegisteredWorker[] = [];
    for (let i = 0; i < 20; i++) workers.push(await registerWorker(server, uniqueName('racer'), { labels: { pool } }));
    const created = await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } });
    const id = created.sandbox.id;
    const placed = workers.find((w) => w.id === created.sandbox.worker?.id);
    if (!placed) throw new Error('the sandbox should be placed on one of the racers');
    const others = workers.filter((w) => w !== placed);

    const tokens: bigint[] = [];
    for (let round = 0; round < 3; round++) {
      // The placed worker races itself (say, a restarted agent and its old run) and 19 others.
      const own = Promise.all(Array.from({ length: 5 }, () => acquireLease(server, placed, id, 10)));
      const foreign = Promise.all(others.map((w) => acquireLease(server, w, id, 10)));
      const [mine, theirs] = await Promise.all([own, foreign]);
      expect(theirs.map((r) => r.__typename)).toEqual(others.map(() => 'NotFoundError'));
      expect(mine.map((r) => r.__typename)).toEqual(mine.map(() => 'LeasePayload'));
      expect(new Set(mine.map((r) => r.lease.holder.id))).toEqual(new Set([placed.id]));
      // Every acquisition moved the token on by exactly one: none lost, none repeated.
      const issued = mine.map((r) => BigInt(r.lease.fencingToken)).sort((x, y) => (x < y ? -1 : 1));
      const next = tokens.length > 0 ? (tokens.at(-1) as bigint) + 1n : 1n;
      expect(issued).toEqual(issued.map((_, i) => next + BigInt(i)));
      tokens.push(...issued);
      // The holder goes silent: its lease expires and the next round starts on an expired lease.
      clock.advance(11);
    }
    expect((await getSandbox(server, id))?.lease).toMatchObject({ fencingToken: '15', holder: { id: placed.id } });

    // Released, then re-acquired: the counter still grows.
    const again = await acquireLease(server, placed, id, 10);
    const before = BigInt(again.lease.fencingToken);
    expect(before).toBe(16n);
    expect((await releaseLease(server, placed, id, again.lease.fencingToken)).__typename).toBe('LeasePayload');
    const after = await acquireLease(server, placed, id, 10);
    expect(BigInt(after.lease.fencingToken)).toBe(before + 1n);
  });

  it('refuses a stale-token report after a takeover and leaves the sandbox unchanged', async () => {
    const tenantId = await createTenant(server, uniqueName('stale'));
    const pool = uniqueName('pool');
    const a = await registerWorker(server, uniqueName('old'), { labels: { pool } });
    const created = await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } });
    const id = created.sandbox.id;
    const first = await acquireLease(server, a, id, 5);
    await reportStatus(server, a, id, first.lease.fencingToken, 'STARTING');
    // The worker restarts after its lease ran out; its new run takes the lease over with a new token.
    clock.advance(6);
    const second = await acquireLease(server, a, id, 30);
    expect(second.__typename).toBe('LeasePayload');
    expect(BigInt(second.lease.fencingToken)).toBe(BigInt(first.lease.fencingToken) + 1n);
    const before = await getSandbox(server, id);

    const [stale, staleAgent, staleMessage] = await Promise.all([
      reportStatus(server, a, id, first.lease.fencingToken, 'RUNNING'),
      server.gql<{ reportAgentStatus: { __typename: string } }>(
        'mutation($i: ReportAgentStatusInput!) { reportAgentStatus(input: $i) { __typename } }',
        { i: { sandboxId: id, fencingToken: first.lease.fencingToken, phase: 'THINKING' } },
        a.token,
      ),
      server.gql<{ postAgentMessage: { __typename: string } }>(
        'mutation($i: PostAgentMessageInput!) { postAgentMessage(input: $i) { __typename } }',
        { i: { sandboxId: id, fencingToken: first.lease.fencingToken, body: 'from the past' } },
        a.token,
      ),
    ]);
    expect(stale).toMatchObject({ __typename: 'StaleFencingTokenError', code: 'STALE_FENCING_TOKEN' });
    expect(dataOf(staleAgent).reportAgentStatus.__typename).toBe('StaleFencingTokenError');
    expect(dataOf(staleMessage).postAgentMessage.__typename).toBe('StaleFencingTokenError');
    expect(await getSandbox(server, id)).toEqual(before);
    const messages = dataOf(
      await server.gql<{ messages: { totalCount: number } }>(
        'query($id: ID!) { messages(sandboxId: $id) { totalCount } }',
        { id },
      ),
    );
    expect(messages.messages.totalCount).toBe(0);

    // The new holder's token works.
    expect((await reportStatus(server, a, id, second.lease.fencingToken, 'RUNNING')).sandbox.status).toBe('RUNNING');
  });
});
