import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import {
  CreateSandboxDocument,
  createClient,
  EventsDocument,
  type FlotillaClient,
  RestartSandboxDocument,
  SandboxDocument,
  type SandboxFieldsFragment,
  WorkerAssignmentsDocument,
} from '../../src/client/index.js';
import { WorkerAgent } from '../../src/worker/agent.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  heartbeat,
  type RegisteredWorker,
  type Result,
  registerWorker,
  releaseLease,
  reportStatus,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { isAlive, killChildren, killGroup } from '../helpers/processes.js';
import { localId, startTestServer, subscribersReach, type TestServer } from '../helpers/server.js';
import { take } from '../helpers/streams.js';

interface RestartView {
  id: string;
  status: string;
  statusReason: string | null;
  stateVersion: number;
  restartRequestedAt: string | null;
  worker: { id: string; allocated: { cpuMillis: number; memoryMb: number } } | null;
  tenant: { usage: { sandboxes: number; cpuMillis: number } };
  ports: { name: string; port: number }[];
  lease: { fencingToken: string } | null;
}

const VIEW = `id status statusReason stateVersion restartRequestedAt worker { id allocated { cpuMillis memoryMb } }
  tenant { usage { sandboxes cpuMillis } } ports { name port } lease { fencingToken }`;

const RESULT = `__typename ... on SandboxPayload { sandbox { ${VIEW} } } ${ERROR_FIELDS}
  ... on InvalidTransitionError { from to } ... on ValidationError { field }`;

type Answer = Result<{ sandbox: RestartView; from?: string; to?: string; field?: string }>;

describe.each(DRIVERS)('restartSandbox on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer(kind, {
      clock,
      env: { FLOTILLA_HEARTBEAT_TTL_SECONDS: '30', FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  const mutate = async (
    name: 'restartSandbox' | 'stopSandbox' | 'deleteSandbox',
    input: Record<string, unknown>,
    token?: string,
  ): Promise<Answer> => {
    const type = name === 'restartSandbox' ? 'RestartSandboxInput' : 'SandboxRefInput';
    const res = await server.gql<Record<string, Answer>>(
      `mutation($i: ${type}!) { ${name}(input: $i) { ${RESULT} } }`,
      { i: input },
      token,
    );
    return dataOf(res)[name];
  };
  const restart = (sandboxId: string, reason?: string, token?: string) =>
    mutate('restartSandbox', { sandboxId, reason }, token);

  const view = async (id: string): Promise<RestartView> =>
    dataOf(await server.gql<{ sandbox: RestartView }>(`query($id: ID!) { sandbox(id: $id) { ${VIEW} } }`, { id }))
      .sandbox;

  const statusChanges = async (tenantId: string, sandboxId: string) =>
    dataOf(
      await server.gql<{
        events: { edges: { node: { type: string; data: Record<string, unknown>; sandbox: { id: string } | null } }[] };
      }>('query($t: ID!) { events(tenantId: $t, first: 100) { edges { node { type data sandbox { id } } } } }', {
        t: tenantId,
      }),
    )
      .events.edges.map((e) => e.node)
      .filter((e) => e.sandbox?.id === sandboxId);

  /**
   * A tenant whose quota holds exactly one sandbox, and a worker (of a pool only this test's
   * sandboxes ask for) with room for exactly one sandbox and one port.
   */
  async function fullFleet(port: number) {
    const tenantId = await createTenant(server, uniqueName('restart'), {
      quota: { maxSandboxes: 1, maxCpuMillis: 100_000, maxMemoryMb: 100_000 },
    });
    const pool = uniqueName('pool');
    const worker = await registerWorker(server, uniqueName('rw'), {
      cpuMillis: 500,
      memoryMb: 512,
      labels: { pool },
      ports: { from: port, to: port },
    });
    const placement = { workerLabels: { pool } };
    return { tenantId, worker, placement };
  }

  /** A sandbox taken through STARTING to RUNNING by its worker; returns its id and fencing token. */
  async function running(
    tenantId: string,
    worker: RegisteredWorker,
    input: Record<string, unknown> = {},
  ): Promise<{ id: string; token: string }> {
    const created = await createSandbox(server, tenantId, { name: uniqueName('sb'), ...input });
    expect(created.sandbox, JSON.stringify(created)).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id } });
    const id = created.sandbox.id;
    const lease = await acquireLease(server, worker, id);
    const token = lease.lease.fencingToken;
    await reportStatus(server, worker, id, token, 'STARTING');
    expect((await reportStatus(server, worker, id, token, 'RUNNING')).sandbox.status).toBe('RUNNING');
    return { id, token };
  }

  it('restarts on the same placement: capacity, quota, ports and lease are kept, and the lifecycle shows RUNNING → STOPPING → STARTING → RUNNING', async () => {
    const { tenantId, worker, placement } = await fullFleet(20_001);
    const { id, token } = await running(tenantId, worker, { placement, ports: 1 });
    const before = await view(id);
    expect(before).toMatchObject({
      worker: { id: worker.id, allocated: { cpuMillis: 500 } },
      ports: [{ name: 'A', port: 20_001 }],
      tenant: { usage: { sandboxes: 1, cpuMillis: 500 } },
    });

    // The worker's work queue carries the restart request.
    const workerSdk = createClient({ url: server.app.graphqlUrl, token: worker.token, webSocketImpl: WebSocket });
    try {
      const subscribers = server.app.events().subscriberCount;
      const queued = take(workerSdk.subscribe(WorkerAssignmentsDocument, { workerId: worker.id }), 1, { close: true });
      await subscribersReach(server, subscribers + 1);

      const asked = await restart(id, 'agent stuck');
      expect(asked.__typename).toBe('SandboxPayload');
      expect(asked.sandbox).toMatchObject({
        status: 'STOPPING',
        statusReason: 'restart requested: agent stuck',
        stateVersion: before.stateVersion + 1,
        worker: { id: worker.id, allocated: { cpuMillis: 500, memoryMb: 512 } },
        tenant: { usage: { sandboxes: 1, cpuMillis: 500 } },
        ports: [{ name: 'A', port: 20_001 }],
        lease: { fencingToken: token },
      });
      expect(asked.sandbox.restartRequestedAt).not.toBeNull();
      const [event] = await queued;
      expect(event.workerAssignments).toMatchObject({
        type: 'SANDBOX_RESTART_REQUESTED',
        data: { reason: 'agent stuck' },
        sandbox: { id, status: 'STOPPING' },
      });
    } finally {
      await workerSdk.close();
    }

    // Asking again while it restarts changes nothing.
    expect((await restart(id, 'again')).sandbox).toMatchObject({
      status: 'STOPPING',
      stateVersion: before.stateVersion + 1,
      statusReason: 'restart requested: agent stuck',
    });

    // Nothing it holds can be taken meanwhile: not its quota slot, not its worker's capacity or port.
    expect(await createSandbox(server, tenantId, { name: 'quota', placement })).toMatchObject({
      __typename: 'QuotaExceededError',
      code: 'QUOTA_EXCEEDED',
    });
    const other = await createTenant(server, uniqueName('other'));
    const waiting = await createSandbox(server, other, { name: 'waits', placement, ports: 1 });
    expect(waiting.sandbox).toMatchObject({ status: 'PENDING', worker: null });
    await heartbeat(server, worker);
    await server.app.sweeper.runOnce();
    expect(await view(waiting.sandbox.id)).toMatchObject({ status: 'PENDING', worker: null });

    // The worker starts it again, with the same fencing token.
    const starting = await reportStatus(server, worker, id, token, 'STARTING', { reason: 'restarting' });
    expect(starting.sandbox).toMatchObject({
      status: 'STARTING',
      statusReason: 'restarting',
      worker: { id: worker.id },
    });
    expect((await reportStatus(server, worker, id, token, 'RUNNING')).sandbox.status).toBe('RUNNING');
    const after = await view(id);
    expect(after).toMatchObject({
      status: 'RUNNING',
      restartRequestedAt: null,
      worker: { id: worker.id, allocated: { cpuMillis: 500 } },
      ports: [{ name: 'A', port: 20_001 }],
      tenant: { usage: { sandboxes: 1 } },
      lease: { fencingToken: token },
    });
    await server.app.sweeper.runOnce();
    expect(await view(waiting.sandbox.id)).toMatchObject({ status: 'PENDING', worker: null });

    const events = await statusChanges(tenantId, id);
    const changes = events.filter((e) => e.type === 'SANDBOX_STATUS_CHANGED').map((e) => e.data);
    expect(changes.map((d) => d.to)).toEqual([
      'PENDING',
      'SCHEDULED',
      'STARTING',
      'RUNNING',
      'STOPPING',
      'STARTING',
      'RUNNING',
    ]);
    expect(changes[4]).toMatchObject({ from: 'RUNNING', reason: 'restart requested: agent stuck', restart: true });
    expect(changes[5]).toMatchObject({ from: 'STOPPING', reason: 'restarting' });
    expect(events.filter((e) => e.type === 'SANDBOX_RESTART_REQUESTED')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'SANDBOX_STOP_REQUESTED')).toHaveLength(0);
  });

  it('refuses restarts that make no sense with typed errors, and changes nothing', async () => {
    const tenantId = await createTenant(server, uniqueName('refuse'));
    const worker = await registerWorker(server, uniqueName('fw'), { tenantId });
    const scheduled = await createSandbox(server, tenantId, { name: 'scheduled' });
    expect(scheduled.sandbox.status).toBe('SCHEDULED');
    expect(await restart(scheduled.sandbox.id)).toMatchObject({
      __typename: 'InvalidTransitionError',
      code: 'INVALID_TRANSITION',
      from: 'SCHEDULED',
      message: 'only a RUNNING sandbox can be restarted; this one is SCHEDULED',
    });

    const lease = await acquireLease(server, worker, scheduled.sandbox.id);
    await reportStatus(server, worker, scheduled.sandbox.id, lease.lease.fencingToken, 'STARTING');
    expect(await restart(scheduled.sandbox.id)).toMatchObject({ code: 'INVALID_TRANSITION', from: 'STARTING' });

    const pending = await createSandbox(server, tenantId, {
      name: 'pending',
      placement: { workerLabels: { nowhere: 'x' } },
    });
    expect(pending.sandbox.status).toBe('PENDING');
    expect(await restart(pending.sandbox.id)).toMatchObject({ code: 'INVALID_TRANSITION', from: 'PENDING' });

    const { id, token } = await running(tenantId, worker);
    // A plain stop is not a restart: it cannot be restarted, and its worker cannot start it again.
    expect((await mutate('stopSandbox', { sandboxId: id })).sandbox.status).toBe('STOPPING');
    expect(await restart(id)).toMatchObject({ code: 'INVALID_TRANSITION', from: 'STOPPING' });
    expect(await reportStatus(server, worker, id, token, 'STARTING')).toMatchObject({
      __typename: 'InvalidTransitionError',
      code: 'INVALID_TRANSITION',
    });
    await reportStatus(server, worker, id, token, 'STOPPED');
    expect(await restart(id)).toMatchObject({ code: 'INVALID_TRANSITION', from: 'STOPPED' });
    const stoppedVersion = (await view(id)).stateVersion;

    const other = await running(tenantId, worker);
    const viewer = await server.apiToken(localId(tenantId), 'VIEWER');
    expect(await restart(other.id, undefined, viewer)).toMatchObject({ code: 'FORBIDDEN' });
    const stranger = await server.apiToken(localId(await createTenant(server, uniqueName('stranger'))), 'ADMIN');
    expect(await restart(other.id, undefined, stranger)).toMatchObject({ code: 'NOT_FOUND' });
    expect(await restart(other.id, 'x'.repeat(501))).toMatchObject({
      code: 'VALIDATION_FAILED',
      field: 'input.reason',
    });
    expect(await restart('not-an-id')).toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(await view(other.id)).toMatchObject({ status: 'RUNNING', restartRequestedAt: null });
    expect((await view(id)).stateVersion).toBe(stoppedVersion);

    // Deleted: reads as missing.
    await mutate('deleteSandbox', { sandboxId: id });
    expect(await restart(id)).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('a stop during a restart wins: no STARTING any more, ends STOPPED and releases everything', async () => {
    const { tenantId, worker, placement } = await fullFleet(20_002);
    const { id, token } = await running(tenantId, worker, { placement, ports: 1 });
    await restart(id, 'first');
    const stopped = await mutate('stopSandbox', { sandboxId: id });
    expect(stopped.sandbox).toMatchObject({
      status: 'STOPPING',
      statusReason: 'stop requested',
      restartRequestedAt: null,
      // CPU and memory are free from the stop request on, as for any stop; the port once it is STOPPED.
      worker: { allocated: { cpuMillis: 0, memoryMb: 0 } },
      tenant: { usage: { sandboxes: 0 } },
      ports: [{ port: 20_002 }],
    });
    expect(await reportStatus(server, worker, id, token, 'STARTING')).toMatchObject({ code: 'INVALID_TRANSITION' });
    expect((await reportStatus(server, worker, id, token, 'STOPPED')).sandbox.status).toBe('STOPPED');
    expect(await view(id)).toMatchObject({ status: 'STOPPED', ports: [] });

    const events = await statusChanges(tenantId, id);
    expect(events.filter((e) => e.type === 'SANDBOX_STATUS_CHANGED').map((e) => [e.data.from, e.data.to])).toEqual([
      [null, 'PENDING'],
      ['PENDING', 'SCHEDULED'],
      ['SCHEDULED', 'STARTING'],
      ['STARTING', 'RUNNING'],
      ['RUNNING', 'STOPPING'],
      ['STOPPING', 'STOPPING'],
      ['STOPPING', 'STOPPED'],
    ]);
    expect(events.filter((e) => e.type === 'SANDBOX_STOP_REQUESTED')).toHaveLength(1);

    // Everything is free again: the next sandbox gets the worker and its port.
    const next = await createSandbox(server, tenantId, { name: 'next', placement, ports: 1 });
    expect(next.sandbox).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id } });
  });

  it('a delete during a restart releases everything at once', async () => {
    const { tenantId, worker, placement } = await fullFleet(20_003);
    const { id } = await running(tenantId, worker, { placement, ports: 1 });
    await restart(id);
    expect((await mutate('deleteSandbox', { sandboxId: id })).sandbox).toMatchObject({
      status: 'DELETED',
      worker: { allocated: { cpuMillis: 0, memoryMb: 0 } },
      ports: [],
    });
    const next = await createSandbox(server, tenantId, { name: 'next', placement, ports: 1 });
    expect(next.sandbox).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id } });
  });

  it('a worker lost during a restart: the sandbox is LOST, released there and placed again elsewhere', async () => {
    const tenantId = await createTenant(server, uniqueName('lost'));
    const pool = uniqueName('pool');
    const a = await registerWorker(server, uniqueName('la'), {
      tenantId,
      labels: { pool },
      cpuMillis: 500,
      memoryMb: 512,
    });
    const placement = { workerLabels: { pool } };
    const { id } = await running(tenantId, a, { placement });
    await restart(id, 'before the crash');
    const b = await registerWorker(server, uniqueName('lb'), {
      tenantId,
      labels: { pool },
      cpuMillis: 500,
      memoryMb: 512,
    });
    clock.advance(31);
    await heartbeat(server, b);
    const sweep = await server.app.sweeper.runOnce();
    expect(sweep?.sandboxesLost).toBeGreaterThanOrEqual(1);
    expect(await view(id)).toMatchObject({ status: 'SCHEDULED', restartRequestedAt: null, worker: { id: b.id } });
    const workers = dataOf(
      await server.gql<{ node: { allocated: { cpuMillis: number } } }>(
        'query($id: ID!) { node(id: $id) { ... on Worker { allocated { cpuMillis } } } }',
        { id: a.id },
      ),
    );
    expect(workers.node.allocated.cpuMillis).toBe(0);
    const changes = (await statusChanges(tenantId, id))
      .filter((e) => e.type === 'SANDBOX_STATUS_CHANGED')
      .map((e) => e.data.to);
    expect(changes.slice(-3)).toEqual(['STOPPING', 'LOST', 'SCHEDULED']);
  });
});

/** Real processes take real time; these bound each wait. */
const WAIT_MS = 20_000;
const POLL_MS = 100;
/** Agents here tick often, so anything a stream missed is picked up quickly. */
const HEARTBEAT_MS = 500;
/** Short, so the SIGKILL of a process that ignores SIGTERM comes soon. */
const STOP_GRACE_MS = 600;

/** A TCP port nothing listens on now (the kernel picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() =>
        address && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

describe.each(DRIVERS)('restartSandbox with the worker agent and real processes on %s', (kind) => {
  let server: TestServer;
  let sdk: FlotillaClient;
  const agents: WorkerAgent[] = [];
  const pidFiles: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' } });
    sdk = createClient({ url: server.app.graphqlUrl, token: server.adminToken, webSocketImpl: WebSocket });
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await killChildren();
    for (const file of pidFiles.splice(0)) for (const pid of pidsIn(file)) killGroup(pid);
  });
  afterAll(async () => {
    await sdk?.close();
    await server?.close();
  });

  const pidsIn = (file: string) =>
    existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number) : [];

  /** A file the sandbox's process appends its pid to, once per start. */
  function pidFile(): string {
    const file = join(mkdtempSync(join(tmpdir(), 'flotilla-restart-')), 'pids');
    pidFiles.push(file);
    return file;
  }

  async function startAgent(worker: RegisteredWorker): Promise<WorkerAgent> {
    const agent = new WorkerAgent({
      url: server.app.graphqlUrl,
      token: worker.token,
      webSocketImpl: WebSocket,
      stopGraceMs: STOP_GRACE_MS,
      heartbeatIntervalMs: HEARTBEAT_MS,
    });
    agents.push(agent);
    await agent.start();
    return agent;
  }

  async function create(input: Record<string, unknown>): Promise<SandboxFieldsFragment> {
    const res = await sdk.mutate(CreateSandboxDocument, {
      input: {
        name: 'restarted',
        image: 'local/process',
        resources: { cpuMillis: 250, memoryMb: 256 },
        ...input,
      } as never,
    });
    if (!res.ok) throw new Error(res.error.message);
    if (res.data.createSandbox.__typename !== 'SandboxPayload') throw new Error(JSON.stringify(res.data.createSandbox));
    return res.data.createSandbox.sandbox;
  }

  async function sandbox(id: string): Promise<SandboxFieldsFragment> {
    const res = await sdk.query(SandboxDocument, { id });
    if (!res.ok || !res.data.sandbox) throw new Error(res.ok ? 'sandbox not found' : res.error.message);
    return res.data.sandbox;
  }

  function waitForStatus(id: string, status: string): Promise<SandboxFieldsFragment> {
    return vi.waitFor(
      async () => {
        const s = await sandbox(id);
        if (s.status !== status) throw new Error(`still ${s.status} (${s.statusReason ?? ''}), waiting for ${status}`);
        return s;
      },
      { timeout: WAIT_MS, interval: POLL_MS },
    );
  }

  async function restart(id: string, reason: string): Promise<SandboxFieldsFragment> {
    const res = await sdk.mutate(RestartSandboxDocument, { input: { sandboxId: id, reason } });
    if (!res.ok) throw new Error(res.error.message);
    if (res.data.restartSandbox.__typename !== 'SandboxPayload')
      throw new Error(JSON.stringify(res.data.restartSandbox));
    return res.data.restartSandbox.sandbox;
  }

  /** The sandbox's events: status changes (to, reason) and agent status changes. */
  async function history(tenantId: string, id: string) {
    const res = await sdk.query(EventsDocument, { tenantId, first: 100 });
    if (!res.ok) throw new Error(res.error.message);
    const mine = res.data.events.edges
      .map((e) => ({ ...e.node, data: e.node.data as Record<string, unknown> }))
      .filter((e) => e.sandbox?.id === id);
    return {
      statuses: mine
        .filter((e) => e.type === 'SANDBOX_STATUS_CHANGED')
        .map((e) => ({ to: e.data.to as string, reason: (e.data.reason as string | undefined) ?? null })),
      agent: mine.filter((e) => e.type === 'AGENT_STATUS_CHANGED').map((e) => e.data.to as string),
      restarts: mine.filter((e) => e.type === 'SANDBOX_RESTART_REQUESTED').length,
    };
  }

  it('stops the process and starts it again on the same worker: a new pid serving the same port, RUNNING → STOPPING → STARTING → RUNNING', async () => {
    const port = await freePort();
    const tenantId = await createTenant(server, uniqueName('agent-restart'));
    const worker = await registerWorker(server, uniqueName('w'), {
      tenantId,
      ports: { from: port, to: port, publicBaseUrl: 'http://127.0.0.1' },
    });
    await startAgent(worker);
    const pids = pidFile();
    const serve = [
      `require('node:fs').appendFileSync(${JSON.stringify(pids)}, process.pid + '\\n');`,
      "require('node:http')",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: JavaScript for the sandbox's process, not a template here
      '.createServer((_req, res) => res.end(`pid=${process.pid} port=${process.env.FLOTILLA_PORT_A}`))',
      ".listen(Number(process.env.FLOTILLA_PORT_A), '127.0.0.1');",
    ].join('');
    // Node reserves far more address space than it uses; the process runtime's limit follows memory.
    const created = await create({
      tenantId,
      command: [process.execPath, '-e', serve],
      ports: 1,
      resources: { cpuMillis: 250, memoryMb: 4096 },
    });
    const url = `http://127.0.0.1:${port}`;
    expect(created.ports).toEqual([{ name: 'A', port, url }]);
    const running = await waitForStatus(created.id, 'RUNNING');
    const served = () =>
      vi.waitFor(
        async () => {
          const body = await (await fetch(url)).text();
          return body;
        },
        { timeout: WAIT_MS, interval: POLL_MS },
      );
    await vi.waitFor(() => expect(pidsIn(pids)).toHaveLength(1), { timeout: WAIT_MS, interval: POLL_MS });
    const [first] = pidsIn(pids) as [number];
    expect(await served()).toBe(`pid=${first} port=${port}`);

    const asked = await restart(created.id, 'new settings');
    expect(asked).toMatchObject({ status: 'STOPPING', statusReason: 'restart requested: new settings' });
    await vi.waitFor(() => expect(pidsIn(pids)).toHaveLength(2), { timeout: WAIT_MS, interval: POLL_MS });
    const after = await waitForStatus(created.id, 'RUNNING');
    const [, second] = pidsIn(pids) as [number, number];
    expect(second).not.toBe(first);
    await vi.waitFor(() => expect(isAlive(first)).toBe(false), { timeout: WAIT_MS, interval: POLL_MS });
    expect(isAlive(second)).toBe(true);
    // The same port on the same worker, now served by the new process; the lease (and its token) was kept.
    await vi.waitFor(async () => expect(await served()).toBe(`pid=${second} port=${port}`), {
      timeout: WAIT_MS,
      interval: POLL_MS,
    });
    expect(after).toMatchObject({
      worker: { id: worker.id },
      ports: [{ name: 'A', port, url }],
      lease: { fencingToken: running.lease?.fencingToken, holder: { id: worker.id } },
      restartRequestedAt: null,
    });
    expect(after.stateVersion).toBe(running.stateVersion + 3);

    await vi.waitFor(
      async () => expect((await sandbox(created.id)).agent).toMatchObject({ phase: 'IDLE', activity: 'restarted' }),
      { timeout: WAIT_MS, interval: POLL_MS },
    );
    const seen = await history(tenantId, created.id);
    expect(seen.statuses.map((s) => s.to)).toEqual([
      'PENDING',
      'SCHEDULED',
      'STARTING',
      'RUNNING',
      'STOPPING',
      'STARTING',
      'RUNNING',
    ]);
    expect(seen.statuses[4].reason).toBe('restart requested: new settings');
    expect(seen.statuses[5].reason).toBe('restarting (the process ended by SIGTERM)');
    expect(seen.restarts).toBe(1);
    // The agent status history shows it: restarting, then restarted.
    expect(seen.agent).toEqual(['IDLE', 'IDLE']);
  });

  it('kills a process that ignores SIGTERM after the grace period, and starts it again', async () => {
    const tenantId = await createTenant(server, uniqueName('stubborn'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    await startAgent(worker);
    const pids = pidFile();
    const created = await create({
      tenantId,
      name: 'stubborn',
      command: ['/bin/sh', '-c', `echo $$ >> ${pids}; trap '' TERM; while true; do sleep 0.05; done`],
    });
    await waitForStatus(created.id, 'RUNNING');
    await vi.waitFor(() => expect(pidsIn(pids)).toHaveLength(1), { timeout: WAIT_MS, interval: POLL_MS });
    await restart(created.id, 'stuck');
    await vi.waitFor(() => expect(pidsIn(pids)).toHaveLength(2), { timeout: WAIT_MS, interval: POLL_MS });
    const after = await waitForStatus(created.id, 'RUNNING');
    const [first, second] = pidsIn(pids) as [number, number];
    expect(isAlive(first)).toBe(false);
    expect(isAlive(second)).toBe(true);
    expect(after.worker?.id).toBe(worker.id);
    const seen = await history(tenantId, created.id);
    expect(seen.statuses.slice(-3)).toEqual([
      { to: 'STOPPING', reason: 'restart requested: stuck' },
      { to: 'STARTING', reason: 'restarting (the process ended by SIGKILL)' },
      { to: 'RUNNING', reason: null },
    ]);
  });

  it('a stop during a restart wins: the sandbox ends STOPPED with no process left', async () => {
    const tenantId = await createTenant(server, uniqueName('stop-restart'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    await startAgent(worker);
    const pids = pidFile();
    const created = await create({
      tenantId,
      name: 'stopped-midway',
      // Ignores SIGTERM, so its restart lasts the grace period: the stop comes in the middle (or just after).
      command: ['/bin/sh', '-c', `echo $$ >> ${pids}; trap '' TERM; while true; do sleep 0.05; done`],
    });
    await waitForStatus(created.id, 'RUNNING');
    await vi.waitFor(() => expect(pidsIn(pids)).toHaveLength(1), { timeout: WAIT_MS, interval: POLL_MS });
    await restart(created.id, 'then stop');
    const stop = await server.gql<{ stopSandbox: { __typename: string } }>(
      'mutation($id: ID!) { stopSandbox(input: { sandboxId: $id }) { __typename } }',
      { id: created.id },
    );
    expect(dataOf(stop).stopSandbox.__typename).toBe('SandboxPayload');
    const stopped = await waitForStatus(created.id, 'STOPPED');
    expect(stopped).toMatchObject({ restartRequestedAt: null, worker: { id: worker.id } });
    for (const pid of pidsIn(pids)) expect(isAlive(pid)).toBe(false);
  });

  it('a sandbox asked to restart while its agent was down is started again when the agent comes back', async () => {
    const tenantId = await createTenant(server, uniqueName('down'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    const pids = pidFile();
    const created = await create({
      tenantId,
      name: 'comes-back',
      command: ['/bin/sh', '-c', `echo $$ >> ${pids}; while true; do sleep 0.05; done`],
    });
    // Taken to RUNNING by hand (as an agent that then went away would have).
    const lease = await acquireLease(server, worker, created.id, 5);
    await reportStatus(server, worker, created.id, lease.lease.fencingToken, 'STARTING');
    await reportStatus(server, worker, created.id, lease.lease.fencingToken, 'RUNNING');
    await restart(created.id, 'while down');
    expect((await releaseLease(server, worker, created.id, lease.lease.fencingToken)).__typename).toBe('LeasePayload');

    await startAgent(worker);
    const after = await waitForStatus(created.id, 'RUNNING');
    await vi.waitFor(() => expect(pidsIn(pids)).toHaveLength(1), { timeout: WAIT_MS, interval: POLL_MS });
    expect(after).toMatchObject({ worker: { id: worker.id }, restartRequestedAt: null });
    const seen = await history(tenantId, created.id);
    expect(seen.statuses.map((s) => s.to).slice(-3)).toEqual(['STOPPING', 'STARTING', 'RUNNING']);
  });
});
