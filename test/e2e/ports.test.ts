import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  type RegisteredWorker,
  type Result,
  registerWorker,
  reportStatus,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

interface PortView {
  name: string;
  port: number;
  url: string | null;
}

interface PlacedView {
  id: string;
  status: string;
  worker: { id: string } | null;
  ports: PortView[];
}

const PLACED = 'id status requestedPorts worker { id } ports { name port url }';
const BASE_URL = 'http://10.0.0.7';

/** A range of `size` ports starting at `from`. */
const range = (from: number, size: number) => Array.from({ length: size }, (_, i) => from + i);

describe.each(DRIVERS)('the port pool on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer(kind, {
      clock,
      env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000', FLOTILLA_MAX_PORTS_PER_SANDBOX: '4' },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A tenant with room for many sandboxes, so only workers and ports limit placement. */
  function tenant(): Promise<string> {
    return createTenant(server, uniqueName('ports'), {
      quota: { maxSandboxes: 500, maxCpuMillis: 1_000_000, maxMemoryMb: 1_000_000 },
    });
  }

  async function create(
    tenantId: string,
    ports: number | undefined,
    placement?: { workerLabels: Record<string, string> },
  ): Promise<Result<{ sandbox: PlacedView }>> {
    const res = await server.gql<{ createSandbox: Result<{ sandbox: PlacedView }> }>(
      `mutation($input: CreateSandboxInput!) { createSandbox(input: $input) { __typename ... on SandboxPayload { sandbox { ${PLACED} } } ${ERROR_FIELDS} ... on ValidationError { field } } }`,
      {
        input: {
          tenantId,
          name: 'web',
          image: 'local/web',
          command: ['serve'],
          resources: { cpuMillis: 10, memoryMb: 10 },
          ports,
          placement,
        },
      },
    );
    return dataOf(res).createSandbox;
  }

  async function placed(
    tenantId: string,
    ports: number,
    placement?: { workerLabels: Record<string, string> },
  ): Promise<PlacedView> {
    const result = await create(tenantId, ports, placement);
    expect(result.__typename, JSON.stringify(result)).toBe('SandboxPayload');
    return result.sandbox;
  }

  async function read(id: string): Promise<PlacedView> {
    return dataOf(
      await server.gql<{ sandbox: PlacedView }>(`query($id: ID!) { sandbox(id: $id) { ${PLACED} } }`, { id }),
    ).sandbox;
  }

  async function allocatedOn(worker: RegisteredWorker): Promise<number> {
    const res = await server.gql<{ worker: { ports: { allocated: number } } }>(
      'query($id: ID!) { worker(id: $id) { ports { allocated } } }',
      { id: worker.id },
    );
    return dataOf(res).worker.ports.allocated;
  }

  async function mutate(field: string, sandboxId: string): Promise<PlacedView> {
    const res = await server.gql<Record<string, Result<{ sandbox: PlacedView }>>>(
      `mutation($input: SandboxRefInput!) { ${field}(input: $input) { __typename ... on SandboxPayload { sandbox { ${PLACED} } } ${ERROR_FIELDS} } }`,
      { input: { sandboxId } },
    );
    const result = dataOf(res)[field];
    expect(result.__typename, JSON.stringify(result)).toBe('SandboxPayload');
    return result.sandbox;
  }

  it('gives 50 concurrent placements onto one worker distinct ports, the lowest free first', async () => {
    // Five tenants, so the creates do not queue behind one tenant's lock: only the worker row orders them.
    const tenants = await Promise.all(range(0, 5).map(() => tenant()));
    const pool = uniqueName('pool');
    const worker = await registerWorker(server, uniqueName('pw'), {
      cpuMillis: 100_000,
      memoryMb: 100_000,
      labels: { pool },
      ports: { from: 20_000, to: 20_199, publicBaseUrl: BASE_URL },
    });
    const sandboxes = await Promise.all(
      range(0, 50).map((i) => placed(tenants[i % tenants.length], 3, { workerLabels: { pool } })),
    );
    for (const s of sandboxes) {
      expect(s).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id } });
      expect(s.ports.map((p) => p.name)).toEqual(['A', 'B', 'C']);
      for (const p of s.ports) expect(p.url).toBe(`${BASE_URL}:${p.port}`);
    }
    const ports = sandboxes.flatMap((s) => s.ports.map((p) => p.port));
    expect(new Set(ports).size).toBe(150);
    // Lowest free first: together they hold exactly the bottom 150 ports of the range.
    expect([...ports].sort((a, b) => a - b)).toEqual(range(20_000, 150));
    expect(await allocatedOn(worker)).toBe(150);
    // What the mutations answered is what a later read sees.
    const again = await read(sandboxes[0].id);
    expect(again.ports).toEqual(sandboxes[0].ports);
    // A shared worker: the other tests' sandboxes must not see it.
    const gone = await server.gql<{ deleteWorker: { __typename: string } }>(
      'mutation($id: ID!) { deleteWorker(input: { workerId: $id }) { __typename } }',
      { id: worker.id },
    );
    expect(dataOf(gone).deleteWorker.__typename).toBe('WorkerPayload');
  });

  it('refuses bad port ranges and base URLs of a worker, and too many ports for a sandbox, with a typed error', async () => {
    const tenantId = await tenant();
    const bad = [
      { from: 0, to: 10 },
      { from: 10, to: 65_536 },
      { from: 9000, to: 8000 },
      { from: 1, to: 20_000 },
      { from: 8000, to: 8001, publicBaseUrl: 'ftp://10.0.0.7' },
      { from: 8000, to: 8001, publicBaseUrl: 'http://10.0.0.7:8080' },
      { from: 8000, to: 8001, publicBaseUrl: 'http://10.0.0.7/path' },
      { from: 8000, to: 8001, publicBaseUrl: 'not a url' },
    ];
    for (const ports of bad) {
      const res = await server.gql<{ registerWorker: Result<{ field: string }> }>(
        `mutation($input: RegisterWorkerInput!) { registerWorker(input: $input) { __typename ${ERROR_FIELDS} ... on ValidationError { field } } }`,
        { input: { name: uniqueName('bad'), tenantId, capacity: { cpuMillis: 100, memoryMb: 100 }, ports } },
      );
      const result = dataOf(res).registerWorker;
      expect(result.__typename, JSON.stringify(ports)).toBe('ValidationError');
      expect(result.field).toMatch(/^input\.ports\./);
    }
    await registerWorker(server, uniqueName('pw'), { tenantId, ports: { from: 8000, to: 8001 } });
    const tooMany = await create(tenantId, 5);
    expect(tooMany).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED', field: 'input.ports' });
    expect(tooMany.message).toContain('at most 4');
    expect((await create(tenantId, -1)).__typename).toBe('ValidationError');
    // No worker of the tenant has a range of 3 ports: nothing could ever hold it.
    const noWorker = await create(tenantId, 3);
    expect(noWorker).toMatchObject({ __typename: 'NoCapacityError', code: 'NO_CAPACITY' });
    expect(noWorker.message).toContain('3 ports');
  });

  it('keeps a sandbox PENDING while the ports are taken, and places it once they are freed', async () => {
    const tenantId = await tenant();
    const worker = await registerWorker(server, uniqueName('pw'), {
      tenantId,
      ports: { from: 21_000, to: 21_003 },
    });
    const first = await placed(tenantId, 3);
    expect(first.ports).toEqual([
      { name: 'A', port: 21_000, url: null },
      { name: 'B', port: 21_001, url: null },
      { name: 'C', port: 21_002, url: null },
    ]);
    // One port is left: a sandbox asking for two waits, holding none.
    const waiting = await placed(tenantId, 2);
    expect(waiting).toMatchObject({ status: 'PENDING', worker: null, requestedPorts: 2, ports: [] });
    // A sandbox asking for none still fits beside them.
    expect(await placed(tenantId, 0)).toMatchObject({ status: 'SCHEDULED', ports: [] });
    expect(await placed(tenantId, 1)).toMatchObject({ status: 'SCHEDULED', ports: [{ name: 'A', port: 21_003 }] });
    await server.app.sweeper.runIfDue();
    expect(await read(waiting.id)).toMatchObject({ status: 'PENDING', ports: [] });

    await mutate('deleteSandbox', first.id);
    await server.app.sweeper.runIfDue();
    expect(await read(waiting.id)).toMatchObject({
      status: 'SCHEDULED',
      worker: { id: worker.id },
      ports: [
        { name: 'A', port: 21_000 },
        { name: 'B', port: 21_001 },
      ],
    });
    expect(await allocatedOn(worker)).toBe(3);
  });

  it('frees the ports on stop, delete, a FAILED report and LOST, and hands them out again', async () => {
    const tenantId = await tenant();
    const worker = await registerWorker(server, uniqueName('pw'), {
      tenantId,
      ports: { from: 22_000, to: 22_001, publicBaseUrl: BASE_URL },
    });
    const both = [
      { name: 'A', port: 22_000, url: `${BASE_URL}:22000` },
      { name: 'B', port: 22_001, url: `${BASE_URL}:22001` },
    ];

    // Stop: while the worker stops the process (it may still listen during its grace period) the
    // ports stay its own, and a sandbox asking for them waits; once it is STOPPED they are free.
    const stopped = await placed(tenantId, 2);
    expect(stopped.ports).toEqual(both);
    const lease = await acquireLease(server, worker, stopped.id);
    expect(await mutate('stopSandbox', stopped.id)).toMatchObject({ status: 'STOPPING', ports: both });
    expect(await allocatedOn(worker)).toBe(2);
    const waiting = await placed(tenantId, 2);
    expect(waiting).toMatchObject({ status: 'PENDING', ports: [] });
    expect((await reportStatus(server, worker, stopped.id, lease.lease.fencingToken, 'STOPPED')).sandbox.status).toBe(
      'STOPPED',
    );
    expect((await read(stopped.id)).ports).toEqual([]);
    await server.app.sweeper.runIfDue();
    expect(await read(waiting.id)).toMatchObject({ status: 'SCHEDULED', ports: both });
    await mutate('deleteSandbox', waiting.id);
    expect(await allocatedOn(worker)).toBe(0);

    // Delete.
    const deleted = await placed(tenantId, 2);
    expect(deleted.ports).toEqual(both);
    await mutate('deleteSandbox', deleted.id);
    expect(await allocatedOn(worker)).toBe(0);

    // The process failed: the worker reports FAILED.
    const failed = await placed(tenantId, 2);
    expect(failed.ports).toEqual(both);
    const failedLease = await acquireLease(server, worker, failed.id);
    const report = await reportStatus(server, worker, failed.id, failedLease.lease.fencingToken, 'FAILED', {
      reason: 'exited with 1',
      exitCode: 1,
    });
    expect(report.sandbox.status).toBe('FAILED');
    expect((await read(failed.id)).ports).toEqual([]);
    expect(await allocatedOn(worker)).toBe(0);

    // The worker goes silent: the sweeper marks it OFFLINE and the sandbox LOST, which frees its ports.
    const lost = await placed(tenantId, 2);
    expect(lost.ports).toEqual(both);
    clock.advance(31);
    await server.app.sweeper.runOnce();
    expect(await read(lost.id)).toMatchObject({ status: 'LOST', ports: [] });
    expect(await allocatedOn(worker)).toBe(0);

    // It moves to another worker and gets that worker's ports; the first worker's are free for the next one.
    const other = await registerWorker(server, uniqueName('pw'), { tenantId, ports: { from: 23_000, to: 23_001 } });
    await server.app.sweeper.runIfDue();
    expect(await read(lost.id)).toMatchObject({
      status: 'SCHEDULED',
      worker: { id: other.id },
      ports: [
        { name: 'A', port: 23_000, url: null },
        { name: 'B', port: 23_001, url: null },
      ],
    });
    const res = await server.gql('mutation { heartbeat(input: {}) { __typename } }', {}, worker.token);
    dataOf(res);
    const next = await placed(tenantId, 2);
    expect(next).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id }, ports: both });
  });
});
