import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import {
  CreateSandboxDocument,
  createClient,
  type FlotillaClient,
  type MessageFieldsFragment,
  MessagesDocument,
  SandboxDocument,
  type SandboxFieldsFragment,
  SendMessageDocument,
  type StdinFraming,
  StopSandboxDocument,
  unwrapPayload,
} from '../../src/client/index.js';
import { WorkerAgent } from '../../src/worker/agent.js';
import { DRIVERS } from '../helpers/databases.js';
import { createTenant, type RegisteredWorker, registerWorker, uniqueName } from '../helpers/fleet.js';
import { BIN, killChildren, killGroup, spawnChild } from '../helpers/processes.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** Real processes take real time; these bound each wait. */
const WAIT_MS = 20_000;
const POLL_MS = 100;
const HEARTBEAT_MS = 500;

const sh = (script: string) => ['/bin/sh', '-c', script];

/**
 * Messages reach a real process's stdin through the real worker agent, tracked by their delivery
 * state: framed as one JSON line each when the sandbox asks for it, delivered exactly once and in
 * commit order even when the agent was down while they were sent, and FAILED with a reason when
 * no process can read them.
 */
describe.each(DRIVERS)('delivery to a real process on %s', (kind) => {
  let server: TestServer;
  let sdk: FlotillaClient;
  const agents: WorkerAgent[] = [];
  const groups: (() => number | null)[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' } });
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

  async function fleet(): Promise<{ tenantId: string; worker: RegisteredWorker }> {
    const tenantId = await createTenant(server, uniqueName('dlv'));
    const worker = await registerWorker(server, uniqueName('dlvw'), { tenantId });
    return { tenantId, worker };
  }

  async function startAgent(worker: RegisteredWorker): Promise<WorkerAgent> {
    const agent = new WorkerAgent({
      url: server.app.graphqlUrl,
      token: worker.token,
      webSocketImpl: WebSocket,
      stopGraceMs: 600,
      heartbeatIntervalMs: HEARTBEAT_MS,
    });
    agents.push(agent);
    await agent.start();
    return agent;
  }

  async function create(
    tenantId: string,
    name: string,
    command: string[],
    stdinFraming: StdinFraming,
  ): Promise<SandboxFieldsFragment> {
    const res = await sdk.mutate(CreateSandboxDocument, {
      input: {
        tenantId,
        name,
        image: 'local/process',
        command,
        resources: { cpuMillis: 100, memoryMb: 128 },
        stdinFraming,
      },
    });
    if (!res.ok) throw new Error(res.error.message);
    const created = unwrapPayload(res.data.createSandbox);
    if (!created.ok || created.payload.__typename !== 'SandboxPayload') throw new Error(JSON.stringify(res.data));
    return created.payload.sandbox;
  }

  async function send(sandboxId: string, body: string): Promise<MessageFieldsFragment> {
    const res = await sdk.mutate(SendMessageDocument, { input: { sandboxId, body } });
    if (!res.ok || res.data.sendMessage.__typename !== 'MessagePayload') throw new Error(JSON.stringify(res));
    return res.data.sendMessage.posted;
  }

  async function messagesTo(sandboxId: string): Promise<MessageFieldsFragment[]> {
    const res = await sdk.query(MessagesDocument, { sandboxId, first: 100 });
    if (!res.ok) throw new Error(res.error.message);
    return res.data.messages.edges.map((e) => e.node).filter((m) => m.senderKind === 'USER');
  }

  async function status(sandboxId: string): Promise<string> {
    const res = await sdk.query(SandboxDocument, { id: sandboxId });
    if (!res.ok || !res.data.sandbox) throw new Error('sandbox not found');
    return res.data.sandbox.status;
  }

  const until = <T>(check: () => Promise<T> | T) => vi.waitFor(check, { timeout: WAIT_MS, interval: POLL_MS });

  /** What the process wrote down from its stdin, line by line. */
  const linesOf = (file: string) =>
    existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(0, -1) : ([] as string[]);

  it('JSON_LINES: a multi-line message sent before the process started reaches it as ONE framed line, then DELIVERED', async () => {
    const { tenantId, worker } = await fleet();
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-framed-'));
    const framed = await create(tenantId, 'framed', sh(`exec cat >> ${dir}/framed.log`), 'JSON_LINES');
    const plain = await create(tenantId, 'plain', sh(`exec cat >> ${dir}/plain.log`), 'PLAIN');
    expect(framed.stdinFraming).toBe('JSON_LINES');
    expect(plain.stdinFraming).toBe('PLAIN');
    const body = 'first line\nsecond line\n';
    // Sent while no agent runs the sandbox yet: delivered when its process starts.
    const early = await send(framed.id, body);
    await send(plain.id, 'first line\nsecond line');
    expect(early.deliveryState).toBe('PENDING');

    await startAgent(worker);
    await until(() => expect(linesOf(`${dir}/framed.log`)).toHaveLength(1));
    expect(JSON.parse(linesOf(`${dir}/framed.log`)[0] as string)).toEqual({
      id: early.id,
      threadId: 'main',
      channel: 'api',
      senderKind: 'USER',
      senderId: early.senderId,
      body,
      kind: 'MESSAGE',
      questionId: null,
    });
    await until(async () => expect((await messagesTo(framed.id)).map((m) => m.deliveryState)).toEqual(['DELIVERED']));
    const [delivered] = await messagesTo(framed.id);
    expect(delivered?.deliveredAt).toBeTruthy();
    // The plain framing writes the body's lines: two lines for the same message.
    await until(() => expect(linesOf(`${dir}/plain.log`)).toEqual(['first line', 'second line']));

    // A live message follows, as its own line.
    const live = await send(framed.id, 'live one');
    await until(() => expect(linesOf(`${dir}/framed.log`)).toHaveLength(2));
    expect(JSON.parse(linesOf(`${dir}/framed.log`)[1] as string)).toMatchObject({ id: live.id, body: 'live one' });
    await until(async () =>
      expect((await messagesTo(framed.id)).map((m) => m.deliveryState)).toEqual(['DELIVERED', 'DELIVERED']),
    );
  });

  it('messages sent while the agent is down are delivered exactly once, in commit order, when it comes back', async () => {
    const { tenantId, worker } = await fleet();
    const stateDir = mkdtempSync(join(tmpdir(), 'flotilla-delivery-restart-'));
    const log = join(stateDir, 'stdin.log');
    const pidFile = join(stateDir, 'pids');
    const pids = () =>
      existsSync(pidFile) ? readFileSync(pidFile, 'utf8').split('\n').filter(Boolean).map(Number) : [];
    groups.push(
      () => pids()[0] ?? null,
      () => pids()[1] ?? null,
    );
    const args = [
      BIN,
      'worker',
      '--url',
      server.app.graphqlUrl,
      '--token',
      worker.token,
      '--state-dir',
      stateDir,
      '--heartbeat-ms',
      String(HEARTBEAT_MS),
    ];
    const first = spawnChild(args);
    await first.waitForLine(/worker agent started/);
    const created = await create(tenantId, 'resumed', sh(`echo $$ >> ${pidFile}; exec cat >> ${log}`), 'JSON_LINES');
    await until(async () => expect(await status(created.id)).toBe('RUNNING'));
    const before = await send(created.id, 'before the crash');
    await until(async () => expect((await messagesTo(created.id)).map((m) => m.deliveryState)).toEqual(['DELIVERED']));

    await first.kill('SIGKILL');
    const sent = [
      await send(created.id, 'one'),
      await send(created.id, 'two\nstill two'),
      await send(created.id, 'three'),
    ];
    // Nobody takes them while the agent is down.
    expect((await messagesTo(created.id)).map((m) => m.deliveryState)).toEqual([
      'DELIVERED',
      'PENDING',
      'PENDING',
      'PENDING',
    ]);

    const second = spawnChild(args);
    await second.waitForLine(/worker agent started/);
    await until(async () =>
      expect((await messagesTo(created.id)).map((m) => m.deliveryState)).toEqual([
        'DELIVERED',
        'DELIVERED',
        'DELIVERED',
        'DELIVERED',
      ]),
    );
    // The first process got the first message; the restarted one got each of the three once, in order.
    const received = linesOf(log).map((line) => JSON.parse(line) as { id: string; body: string });
    expect(received.map((r) => r.id)).toEqual([before.id, ...sent.map((m) => m.id)]);
    expect(received.map((r) => r.body)).toEqual(['before the crash', 'one', 'two\nstill two', 'three']);
    expect(pids()).toHaveLength(2);
    await second.kill('SIGTERM');
  });

  it('a message the process cannot read is FAILED with the reason: its stdin is closed, or it has ended', async () => {
    const { tenantId, worker } = await fleet();
    await startAgent(worker);
    const created = await create(tenantId, 'deaf', sh('exec 0<&-; echo ready; exec sleep 60'), 'PLAIN');
    await until(async () => expect(await status(created.id)).toBe('RUNNING'));
    const sent = await send(created.id, 'can you hear me?');
    await until(async () =>
      expect((await messagesTo(created.id)).find((m) => m.id === sent.id)).toMatchObject({
        deliveryState: 'FAILED',
        deliveryError: "the process's stdin is closed",
        deliveredAt: null,
      }),
    );

    const stop = await sdk.mutate(StopSandboxDocument, { input: { sandboxId: created.id } });
    expect(stop.ok).toBe(true);
    await until(async () => expect(await status(created.id)).toBe('STOPPED'));
    const afterwards = await send(created.id, 'still there?');
    expect(afterwards).toMatchObject({ deliveryState: 'FAILED', deliveryError: expect.stringContaining('STOPPED') });
  });
});
