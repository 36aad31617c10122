import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import { acquireLease, createSandbox, createTenant, dataOf, registerWorker, uniqueName } from '../helpers/fleet.js';
import { isRequestStatement, startTestServer, type TestServer } from '../helpers/server.js';

const LIST = /* GraphQL */ `
  query List($t: ID!) {
    sandboxes(tenantId: $t, first: 100) {
      edges {
        node {
          id name status
          tenant { id slug usage { sandboxes } }
          worker { id name status tenant { id } }
          lease { fencingToken holder { id name } sandbox { id } }
          lastMessage { body sandbox { id } }
          ports { name port url }
        }
      }
    }
  }
`;

/** The N+1 regression test: every related entity of a list comes through a per-request DataLoader. */
describe.each(DRIVERS)('SQL statements per request on %s', (kind) => {
  let server: TestServer;
  let recording: string[] | null = null;

  beforeAll(async () => {
    server = await startTestServer(kind, {
      onQuery: (sql) => (isRequestStatement(sql) ? recording?.push(sql) : undefined),
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function seed(count: number): Promise<string> {
    const tenantId = await createTenant(server, uniqueName('n1'), {
      quota: { maxSandboxes: 500, maxCpuMillis: 1_000_000, maxMemoryMb: 1_000_000 },
    });
    const workers = await Promise.all(
      [0, 1, 2].map((i) =>
        registerWorker(server, uniqueName('n1w'), {
          tenantId,
          cpuMillis: 100_000,
          memoryMb: 100_000,
          ports: { from: 30_000 + i * 1000, to: 30_999 + i * 1000, publicBaseUrl: 'http://10.0.0.7' },
        }),
      ),
    );
    const ids: string[] = [];
    for (let i = 0; i < count; i += 10) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(10, count - i) }, (_, j) =>
          createSandbox(server, tenantId, {
            name: `s${i + j}`,
            resources: { cpuMillis: 10, memoryMb: 10 },
            ports: (i + j) % 3,
          }),
        ),
      );
      ids.push(...batch.map((b) => b.sandbox.id));
    }
    for (const [i, id] of ids.entries()) {
      if (i % 2 === 0) {
        const placedOn = dataOf(
          await server.gql<{ sandbox: { worker: { id: string } } }>(
            'query($id: ID!) { sandbox(id: $id) { worker { id } } }',
            { id },
          ),
        ).sandbox.worker.id;
        const holder = workers.find((w) => w.id === placedOn);
        if (!holder) throw new Error(`sandbox ${id} is placed on an unknown worker ${placedOn}`);
        expect((await acquireLease(server, holder, id)).__typename).toBe('LeasePayload');
      }
      if (i % 3 === 0) {
        await server.gql('mutation($id: ID!) { sendMessage(input: { sandboxId: $id, body: "hi" }) { __typename } }', {
          id,
        });
        await server.gql('mutation($id: ID!) { sendMessage(input: { sandboxId: $id, body: "last" }) { __typename } }', {
          id,
        });
      }
    }
    return tenantId;
  }

  async function statementsFor(tenantId: string): Promise<{ count: number; edges: number; data: unknown }> {
    recording = [];
    const res = await server.gql<{
      sandboxes: { edges: { node: { lastMessage: { body: string } | null; lease: unknown } }[] };
    }>(LIST, { t: tenantId });
    const count = recording.length;
    recording = null;
    const data = dataOf(res);
    return { count, edges: data.sandboxes.edges.length, data };
  }

  it('lists 100 sandboxes with tenant, worker, lease, last message and ports in as many statements as 10', async () => {
    const small = await seed(10);
    const large = await seed(100);
    // Warm up: the first request of a token may refresh its lastUsedAt.
    await statementsFor(small);
    const few = await statementsFor(small);
    const many = await statementsFor(large);
    expect(few.edges).toBe(10);
    expect(many.edges).toBe(100);
    const nodes = (
      many.data as {
        sandboxes: { edges: { node: { lastMessage: { body: string } | null; lease: unknown; ports: unknown[] } }[] };
      }
    ).sandboxes.edges.map((e) => e.node);
    expect(nodes.filter((n) => n.lease !== null)).toHaveLength(50);
    expect(nodes.filter((n) => n.lastMessage?.body === 'last')).toHaveLength(34);
    expect(nodes.flatMap((n) => n.ports)).toHaveLength(33 + 33 * 2);
    console.log(`${kind}: ${many.count} statements for 100 sandboxes, ${few.count} for 10`);
    expect(many.count).toBe(few.count);
    // Token check, then one statement per loader and level (page, tenants, usage, workers, leases, messages, ports…), never per row.
    expect(many.count).toBeGreaterThanOrEqual(9);
    expect(many.count).toBeLessThanOrEqual(13);
  });
});
