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
  type EventsQuery,
  type FlotillaClient,
  MessageAddedDocument,
  type MessageFieldsFragment,
  MessagesDocument,
  type Result,
  SandboxDocument,
  type SandboxFieldsFragment,
  SendMessageDocument,
  StopSandboxDocument,
  unwrapPayload,
} from '../../src/client/index.js';
import { WorkerAgent } from '../../src/worker/agent.js';
import {
  createTenant,
  heartbeat,
  type RegisteredWorker,
  registerWorker,
  reportStatus,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { BIN, type Child, isAlive, killChildren, killGroup, readPid, spawnChild } from '../helpers/processes.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** Real processes take real time; these bound each wait. */
const WAIT_MS = 20_000;
const POLL_MS = 100;
/** Agents in this process tick often, so a missed assignment or input is picked up quickly. */
const HEARTBEAT_MS = 500;
/** Short enough that the SIGKILL fallback of a stop is quick to observe. */
const STOP_GRACE_MS = 600;
/** Past both the agent's lease (15 s) and the server's heartbeat TTL (30 s, set below). */
const SILENCE_SECONDS = 31;

const sh = (script: string) => ['/bin/sh', '-c', script];

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

describe('the worker agent runs sandboxes as real processes', () => {
  let server: TestServer;
  let sdk: FlotillaClient;
  const clock = new TestClock();
  const agents: WorkerAgent[] = [];
  const groups: (() => number | null)[] = [];

  beforeAll(async () => {
    server = await startTestServer('sqlite', {
      clock,
      env: { FLOTILLA_HEARTBEAT_TTL_SECONDS: '30', FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' },
    });
    sdk = createClient({ url: server.app.graphqlUrl, token: server.adminToken, webSocketImpl: WebSocket });
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await killChildren();
    for (const pidOf of groups.splice(0)) killGroup(pidOf());
  });
  afterAll(async () => {
    await sdk?.close();
    await server?.close();
  });

  /** A tenant with its own worker, so the scheduler places this test's sandboxes there. */
  async function fleet(): Promise<{ tenantId: string; worker: RegisteredWorker }> {
    const tenantId = await createTenant(server, uniqueName('agent'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId, cpuMillis: 4000, memoryMb: 8192 });
    return { tenantId, worker };
  }

  async function startAgent(
    worker: RegisteredWorker,
    options: Partial<ConstructorParameters<typeof WorkerAgent>[0]> = {},
  ): Promise<WorkerAgent> {
    const agent = new WorkerAgent({
      url: server.app.graphqlUrl,
      token: worker.token,
      webSocketImpl: WebSocket,
      stopGraceMs: STOP_GRACE_MS,
      heartbeatIntervalMs: HEARTBEAT_MS,
      ...options,
    });
    agents.push(agent);
    await agent.start();
    return agent;
  }

  async function create(tenantId: string, name: string, command: string[]): Promise<SandboxFieldsFragment> {
    const res = await sdk.mutate(CreateSandboxDocument, {
      input: { tenantId, name, image: 'local/process', command, resources: { cpuMillis: 250, memoryMb: 256 } },
    });
    if (!res.ok) throw new Error(res.error.message);
    const created = unwrapPayload(res.data.createSandbox);
    if (!created.ok) throw new Error(created.error.message);
    if (created.payload.__typename !== 'SandboxPayload') throw new Error(created.payload.__typename);
    return created.payload.sandbox;
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

  /** Collects the sandbox's messages from a messageAdded subscription until stopped. */
  function collectMessages(id: string, after: string | null): { messages: MessageFieldsFragment[]; stop: () => void } {
    const abort = new AbortController();
    const messages: MessageFieldsFragment[] = [];
    void (async () => {
      for await (const { messageAdded } of sdk.subscribe(
        MessageAddedDocument,
        { sandboxId: id, after },
        { signal: abort.signal, cursorOf: (d) => d.messageAdded.eventCursor },
      )) {
        messages.push(messageAdded);
      }
    })().catch(() => undefined);
    return { messages, stop: () => abort.abort() };
  }

  /** The cursor of the tenant's newest event: subscribing after it replays all that follows. */
  async function logTail(tenantId: string): Promise<string | null> {
    let after: string | null = null;
    for (;;) {
      const page: Result<EventsQuery> = await sdk.query(EventsDocument, { tenantId, first: 100, after });
      if (!page.ok) throw new Error(page.error.message);
      after = page.data.events.pageInfo.endCursor ?? after;
      if (!page.data.events.pageInfo.hasNextPage) return after;
    }
  }

  /** The sandbox's messages so far, oldest first. */
  async function history(id: string): Promise<MessageFieldsFragment[]> {
    const res = await sdk.query(MessagesDocument, { sandboxId: id, first: 100 });
    if (!res.ok) throw new Error(res.error.message);
    return res.data.messages.edges.map((e) => e.node);
  }

  const agentOutput = (messages: MessageFieldsFragment[]) =>
    messages.filter((m) => m.senderKind === 'AGENT').flatMap((m) => m.body.split('\n'));

  it('runs a sandbox created through the SDK: output as messages, input to stdin, agent status from a JSON line, exit 0 is STOPPED', async () => {
    const { tenantId, worker } = await fleet();
    await startAgent(worker);
    const script = [
      'echo "hello from $FLOTILLA_SANDBOX_NAME"',
      `echo '{"flotilla":{"phase":"WAITING_FOR_INPUT","activity":"waiting for a line"}}'`,
      'read line',
      'echo "got: $line"',
      `echo '{"flotilla":{"phase":"DONE"}}'`,
    ].join('; ');
    const tail = await logTail(tenantId);
    const created = await create(tenantId, 'echoer', sh(script));
    expect(created).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id } });
    // From before the sandbox existed, so none of its messages can slip past the subscription.
    const stream = collectMessages(created.id, tail);
    try {
      const running = await waitForStatus(created.id, 'RUNNING');
      expect(running.lease?.fencingToken).toBe('1');
      await vi.waitFor(() => expect(agentOutput(stream.messages)).toContain('hello from echoer'), {
        timeout: WAIT_MS,
        interval: POLL_MS,
      });
      // The status line is not posted as output: it becomes the sandbox's agent status.
      await vi.waitFor(
        async () =>
          expect((await sandbox(created.id)).agent).toMatchObject({
            phase: 'WAITING_FOR_INPUT',
            activity: 'waiting for a line',
          }),
        {
          timeout: WAIT_MS,
          interval: POLL_MS,
        },
      );

      const sent = await sdk.mutate(SendMessageDocument, { input: { sandboxId: created.id, body: 'ping 42' } });
      expect(sent.ok && sent.data.sendMessage.__typename).toBe('MessagePayload');

      const stopped = await waitForStatus(created.id, 'STOPPED');
      expect(stopped).toMatchObject({ exitCode: 0, agent: { phase: 'DONE' } });
      await vi.waitFor(() => expect(agentOutput(stream.messages)).toEqual(['hello from echoer', 'got: ping 42']), {
        timeout: WAIT_MS,
        interval: POLL_MS,
      });
      expect(stream.messages.map((m) => m.senderKind)).toContain('USER');
      expect(agentOutput(stream.messages).join('\n')).not.toContain('"flotilla"');
    } finally {
      stream.stop();
    }
  });

  it('reports a non-zero exit as FAILED with its code, stderr included', async () => {
    const { tenantId, worker } = await fleet();
    await startAgent(worker);
    const created = await create(tenantId, 'failing', sh('echo "something broke" >&2; exit 3'));
    const failed = await waitForStatus(created.id, 'FAILED');
    expect(failed).toMatchObject({ exitCode: 3, statusReason: 'exited with 3' });
    await vi.waitFor(async () => expect(agentOutput(await history(created.id))).toEqual(['something broke']), {
      timeout: WAIT_MS,
      interval: POLL_MS,
    });

    const missing = await create(tenantId, 'missing', ['/nonexistent/flotilla-binary']);
    const notFound = await waitForStatus(missing.id, 'FAILED');
    expect(notFound.exitCode).toBe(127);
  });

  it("runs the command with the sandbox's environment (not the worker's) and an address-space limit from its memory", async () => {
    const { tenantId, worker } = await fleet();
    process.env.FLOTILLA_TEST_WORKER_SECRET = 'do-not-leak';
    try {
      await startAgent(worker);
      const created = await create(
        tenantId,
        'env',
        sh(
          // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a JS template
          'echo "id=$FLOTILLA_SANDBOX_ID name=$FLOTILLA_SANDBOX_NAME image=$FLOTILLA_IMAGE"; echo "secret=${FLOTILLA_TEST_WORKER_SECRET:-none}"; echo "vmem=$(ulimit -v)"',
        ),
      );
      await waitForStatus(created.id, 'STOPPED');
      // 256 MiB of memory (see create) → (256 × 4 + 256) MiB of address space, in KiB.
      const limitKb = (256 * 4 + 256) * 1024;
      await vi.waitFor(
        async () =>
          expect(agentOutput(await history(created.id))).toEqual([
            `id=${created.id} name=env image=local/process`,
            'secret=none',
            `vmem=${limitKb}`,
          ]),
        { timeout: WAIT_MS, interval: POLL_MS },
      );
    } finally {
      delete process.env.FLOTILLA_TEST_WORKER_SECRET;
    }
  });

  it('gives the process its ports as FLOTILLA_PORT_A and FLOTILLA_URL_A: it serves HTTP there, reachable through the allocated URL', async () => {
    const port = await freePort();
    const tenantId = await createTenant(server, uniqueName('ports'));
    const worker = await registerWorker(server, uniqueName('w'), {
      tenantId,
      cpuMillis: 4000,
      memoryMb: 8192,
      ports: { from: port, to: port, publicBaseUrl: 'http://127.0.0.1' },
    });
    await startAgent(worker);
    const serve = [
      "require('node:http')",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: JavaScript for the sandbox's process, not a template here
      ".createServer((_req, res) => res.end(`port=${process.env.FLOTILLA_PORT_A} url=${process.env.FLOTILLA_URL_A} b=${process.env.FLOTILLA_PORT_B ?? 'none'}`))",
      ".listen(Number(process.env.FLOTILLA_PORT_A), '127.0.0.1', () => console.log('listening'));",
    ].join('');
    const res = await sdk.mutate(CreateSandboxDocument, {
      input: {
        tenantId,
        name: 'web',
        image: 'local/process',
        command: [process.execPath, '-e', serve],
        // Node reserves far more address space than it uses; the limit follows memory (see the test above).
        resources: { cpuMillis: 250, memoryMb: 4096 },
        ports: 1,
      },
    });
    if (!res.ok) throw new Error(res.error.message);
    const created = res.data.createSandbox;
    if (created.__typename !== 'SandboxPayload') throw new Error(JSON.stringify(created));
    const url = `http://127.0.0.1:${port}`;
    expect(created.sandbox.ports).toEqual([{ name: 'A', port, url }]);
    await waitForStatus(created.sandbox.id, 'RUNNING');
    const body = await vi.waitFor(
      async () => {
        const answer = await fetch(created.sandbox.ports[0].url ?? '');
        return answer.text();
      },
      { timeout: WAIT_MS, interval: POLL_MS },
    );
    expect(body).toBe(`port=${port} url=${url} b=none`);
    const stop = await sdk.mutate(StopSandboxDocument, { input: { sandboxId: created.sandbox.id } });
    expect(stop.ok && stop.data.stopSandbox.__typename).toBe('SandboxPayload');
    expect(await waitForStatus(created.sandbox.id, 'STOPPED')).toMatchObject({ ports: [] });
  });

  it('never starts a sandbox whose stop was requested before the agent picked it up', async () => {
    const { tenantId, worker } = await fleet();
    const marker = join(mkdtempSync(join(tmpdir(), 'flotilla-never-')), 'ran');
    const created = await create(tenantId, 'never', sh(`touch ${marker}; sleep 30`));
    const stop = await sdk.mutate(StopSandboxDocument, { input: { sandboxId: created.id } });
    expect(stop.ok && stop.data.stopSandbox.__typename).toBe('SandboxPayload');
    // Placed on a worker, so the stop waits for that worker (STOPPING) — which is not running yet.
    expect((await sandbox(created.id)).status).toBe('STOPPING');
    await startAgent(worker);
    expect(await waitForStatus(created.id, 'STOPPED')).toMatchObject({
      statusReason: 'stopped before it started',
      exitCode: null,
    });
    expect(existsSync(marker)).toBe(false);
  });

  it('stops a sandbox with SIGTERM, and with SIGKILL after the grace period when it ignores SIGTERM', async () => {
    const { tenantId, worker } = await fleet();
    await startAgent(worker);
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-stop-'));
    const politeFile = join(dir, 'polite.pid');
    const stubbornFile = join(dir, 'stubborn.pid');
    groups.push(
      () => readPid(politeFile),
      () => readPid(stubbornFile),
    );
    const polite = await create(
      tenantId,
      'polite',
      sh(`echo $$ > ${politeFile}; trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done`),
    );
    const stubborn = await create(
      tenantId,
      'stubborn',
      sh(`echo $$ > ${stubbornFile}; trap '' TERM; echo ready; while true; do sleep 0.05; done`),
    );
    await waitForStatus(polite.id, 'RUNNING');
    await waitForStatus(stubborn.id, 'RUNNING');
    await vi.waitFor(() => expect(readPid(politeFile) && readPid(stubbornFile)).toBeTruthy(), {
      timeout: WAIT_MS,
      interval: POLL_MS,
    });

    const politeStop = await sdk.mutate(StopSandboxDocument, { input: { sandboxId: polite.id } });
    expect(politeStop.ok && politeStop.data.stopSandbox.__typename).toBe('SandboxPayload');
    const politeStopped = await waitForStatus(polite.id, 'STOPPED');
    expect(politeStopped).toMatchObject({ exitCode: 0, statusReason: null });
    expect(isAlive(readPid(politeFile) as number)).toBe(false);

    const asked = Date.now();
    await sdk.mutate(StopSandboxDocument, { input: { sandboxId: stubborn.id } });
    const killed = await waitForStatus(stubborn.id, 'STOPPED');
    expect(Date.now() - asked).toBeGreaterThanOrEqual(STOP_GRACE_MS);
    expect(killed).toMatchObject({ exitCode: null, statusReason: 'ended by SIGKILL' });
    expect(isAlive(readPid(stubbornFile) as number)).toBe(false);
  });

  it('loses the sandbox of a killed worker agent; another agent takes over with a higher fencing token and the old one is refused', async () => {
    const { tenantId, worker: a } = await fleet();
    const stateDir = mkdtempSync(join(tmpdir(), 'flotilla-worker-state-'));
    const pidFile = join(stateDir, 'sandbox.pid');
    const firstPid = () => readPid(pidFile);
    groups.push(firstPid);
    const agentA: Child = spawnChild([
      BIN,
      'worker',
      '--url',
      server.app.graphqlUrl,
      '--token',
      a.token,
      '--state-dir',
      stateDir,
    ]);
    await agentA.waitForLine(/worker agent started/);

    const created = await create(
      tenantId,
      'survivor',
      sh(`echo $$ >> ${pidFile}; echo "run $$"; while true; do sleep 0.05; done`),
    );
    const onA = await waitForStatus(created.id, 'RUNNING').catch((err: Error) => {
      throw new Error(`${err.message}\nagent A:\n${agentA.stdout.join('\n')}\n${agentA.stderr.join('\n')}`);
    });
    expect(onA).toMatchObject({ worker: { id: a.id }, lease: { fencingToken: '1' } });
    await vi.waitFor(() => expect(firstPid()).toBeTruthy(), { timeout: WAIT_MS, interval: POLL_MS });

    // The agent dies without a word; time passes beyond its heartbeat and its lease.
    await agentA.kill('SIGKILL');
    const b = await registerWorker(server, uniqueName('wb'), { tenantId });
    clock.advance(SILENCE_SECONDS);
    await heartbeat(server, b);
    const sweep = await server.app.sweeper.runOnce();
    expect(sweep).toMatchObject({ sandboxesLost: 1, sandboxesPlaced: 1 });
    expect(sweep?.workersOffline).toBeGreaterThanOrEqual(1); // A, and the stopped agents of earlier tests
    expect(await sandbox(created.id)).toMatchObject({ status: 'SCHEDULED', worker: { id: b.id } });
    // To B, A's expired lease reads as absent (B may not see worker A, the lease's holder).
    const seenByB = await server.gql<{ sandbox: { lease: unknown } }>(
      'query($id: ID!) { sandbox(id: $id) { lease { fencingToken holder { id } } } }',
      { id: created.id },
      b.token,
    );
    expect(seenByB.body).toEqual({ data: { sandbox: { lease: null } } });

    const logs: string[] = [];
    const record = (msg: string, data?: Record<string, unknown>) => logs.push(`${msg} ${JSON.stringify(data)}`);
    await startAgent(b, { logger: { info: record, warn: record } });
    const onB = await waitForStatus(created.id, 'RUNNING').catch((err: Error) => {
      throw new Error(`${err.message}\nagent B:\n${logs.join('\n')}`);
    });
    expect(onB).toMatchObject({ worker: { id: b.id }, lease: { fencingToken: '2', holder: { id: b.id } } });

    // The old agent's write is refused and changes nothing: the sandbox is neither placed on A nor
    // leased by it any more, so to A it reads as missing.
    const late = await reportStatus(server, a, created.id, '1', 'FAILED', { reason: 'late' });
    expect(late).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });

    // The old agent comes back on the same machine: it ends the process it left behind (its
    // output cannot be followed any more, and B runs the sandbox now) and leaves B's sandbox alone.
    const orphan = firstPid() as number;
    expect(isAlive(orphan)).toBe(true);
    const again = spawnChild([
      BIN,
      'worker',
      '--url',
      server.app.graphqlUrl,
      '--token',
      a.token,
      '--state-dir',
      stateDir,
    ]);
    await again.waitForLine(/worker agent started/);
    await vi.waitFor(() => expect(isAlive(orphan)).toBe(false), { timeout: WAIT_MS, interval: POLL_MS });
    expect(await sandbox(created.id)).toMatchObject({
      status: 'RUNNING',
      worker: { id: b.id },
      lease: { fencingToken: '2' },
    });
  });

  it('an agent that was frozen past its lease comes back, is refused, ends its process and stops writing', async () => {
    const { tenantId, worker: a } = await fleet();
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-frozen-'));
    const pidFile = join(dir, 'sandbox.pid');
    const pidOnA = () => readPid(pidFile);
    groups.push(pidOnA);
    // A short lease, so the frozen agent renews (and learns it lost the sandbox) soon after it thaws.
    const agentA = spawnChild([
      BIN,
      'worker',
      '--url',
      server.app.graphqlUrl,
      '--token',
      a.token,
      '--lease-ttl',
      '3',
      '--heartbeat-ms',
      '500',
    ]);
    await agentA.waitForLine(/worker agent started/);
    const created = await create(
      tenantId,
      'frozen',
      sh(`echo $$ >> ${pidFile}; trap 'echo "still here"' USR1; echo "run on $$"; while true; do sleep 0.05; done`),
    );
    await waitForStatus(created.id, 'RUNNING');
    await vi.waitFor(() => expect(pidOnA()).toBeTruthy(), { timeout: WAIT_MS, interval: POLL_MS });
    const first = pidOnA() as number;
    await vi.waitFor(async () => expect(agentOutput(await history(created.id))).toEqual([`run on ${first}`]), {
      timeout: WAIT_MS,
      interval: POLL_MS,
    });

    agentA.process.kill('SIGSTOP');
    const b = await registerWorker(server, uniqueName('wb'), { tenantId });
    try {
      // Output the frozen agent will find when it thaws: it must never reach the sandbox's messages.
      process.kill(first, 'SIGUSR1');
      clock.advance(SILENCE_SECONDS);
      await heartbeat(server, b);
      expect(await server.app.sweeper.runOnce()).toMatchObject({ sandboxesLost: 1, sandboxesPlaced: 1 });
      await startAgent(b);
      await vi.waitFor(
        async () =>
          expect(await sandbox(created.id)).toMatchObject({
            status: 'RUNNING',
            lease: { fencingToken: '2', holder: { id: b.id } },
          }),
        {
          timeout: WAIT_MS,
          interval: POLL_MS,
        },
      );
    } finally {
      agentA.process.kill('SIGCONT');
    }

    // A's next renewal is refused: it ends its copy of the sandbox at once.
    await vi.waitFor(() => expect(isAlive(first)).toBe(false), { timeout: WAIT_MS, interval: POLL_MS });
    expect(agentA.stdout.join('\n')).toMatch(/lease lost/);
    const before = await vi.waitFor(
      async () => {
        const messages = await history(created.id);
        expect(agentOutput(messages).filter((line) => line.startsWith('run on '))).toHaveLength(2);
        return messages;
      },
      { timeout: WAIT_MS, interval: POLL_MS },
    );
    expect(await sandbox(created.id)).toMatchObject({
      status: 'RUNNING',
      worker: { id: b.id },
      lease: { fencingToken: '2' },
    });
    // Nothing of A's was written after the takeover: A's first line, then B's run only.
    const runs = agentOutput(before).filter((line) => line.startsWith('run on '));
    expect(runs[0]).toBe(`run on ${first}`);
    expect(agentOutput(before)).not.toContain('still here');
  });

  it('a restarted agent resumes its sandbox with one process and no extra transitions', async () => {
    const { tenantId, worker } = await fleet();
    const stateDir = mkdtempSync(join(tmpdir(), 'flotilla-restart-'));
    const pidFile = join(stateDir, 'sandbox.pid');
    const pids = () =>
      existsSync(pidFile) ? readFileSync(pidFile, 'utf8').split('\n').filter(Boolean).map(Number) : [];
    groups.push(
      () => pids()[0] ?? null,
      () => pids()[1] ?? null,
    );
    const args = [BIN, 'worker', '--url', server.app.graphqlUrl, '--token', worker.token, '--state-dir', stateDir];
    const first = spawnChild(args);
    await first.waitForLine(/worker agent started/);
    const created = await create(tenantId, 'resumed', sh(`echo $$ >> ${pidFile}; while true; do sleep 0.05; done`));
    const running = await waitForStatus(created.id, 'RUNNING');
    await vi.waitFor(() => expect(pids()).toHaveLength(1), { timeout: WAIT_MS, interval: POLL_MS });

    await first.kill('SIGKILL');
    const second = spawnChild(args);
    await second.waitForLine(/worker agent started/);
    await vi.waitFor(() => expect(pids()).toHaveLength(2), { timeout: WAIT_MS, interval: POLL_MS });
    const [old, current] = pids() as [number, number];
    await vi.waitFor(() => expect(isAlive(old)).toBe(false), { timeout: WAIT_MS, interval: POLL_MS });
    expect(isAlive(current)).toBe(true);
    const resumed = await sandbox(created.id);
    // Same worker, a new fencing token (the old run's late writes are refused), and no new status change.
    expect(resumed).toMatchObject({
      status: 'RUNNING',
      worker: { id: worker.id },
      lease: { fencingToken: '2', holder: { id: worker.id } },
    });
    expect(resumed.stateVersion).toBe(running.stateVersion);
    await second.kill('SIGTERM');
    await waitForStatus(created.id, 'STOPPED');
    expect(isAlive(current)).toBe(false);
  });
});
