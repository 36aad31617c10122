import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { encodeGlobalId } from '../../resolvers/ids.js';
import { CreateSandboxDocument, createClient, StopSandboxDocument, unwrapPayload } from '../../src/client/index.js';
import { WorkerAgent } from '../../src/worker/agent.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  type RegisteredWorker,
  registerWorker,
  reportStatus,
  SANDBOX_FIELDS,
  type SandboxView,
  uniqueName,
} from '../helpers/fleet.js';
import { killChildren } from '../helpers/processes.js';
import { isRequestStatement, localId, startTestServer, subscribersReach, type TestServer } from '../helpers/server.js';

const WAIT = `query($id: ID!, $statuses: [SandboxStatus!]!, $timeoutSeconds: Int) {
  waitForSandbox(id: $id, statuses: $statuses, timeoutSeconds: $timeoutSeconds) {
    __typename
    ... on WaitForSandboxPayload { outcome reached timedOut status sandbox { ${SANDBOX_FIELDS} } }
    ${ERROR_FIELDS}
    ... on ValidationError { field }
  }
}`;

interface WaitAnswer {
  __typename: string;
  outcome?: string;
  reached?: boolean;
  timedOut?: boolean;
  status?: string;
  sandbox?: SandboxView;
  code?: string;
  field?: string | null;
}

async function waitFor(
  server: TestServer,
  id: string,
  statuses: string[],
  timeoutSeconds?: number,
  token?: string,
): Promise<WaitAnswer> {
  const res = await server.gql<{ waitForSandbox: WaitAnswer }>(WAIT, { id, statuses, timeoutSeconds }, token);
  return dataOf(res).waitForSandbox;
}

describe.each(DRIVERS)('waitForSandbox on %s', (kind) => {
  let server: TestServer;
  let tenantId: string;
  let worker: RegisteredWorker;

  beforeAll(async () => {
    server = await startTestServer(kind);
    tenantId = await createTenant(server, uniqueName('wait'), {
      quota: { maxSandboxes: 100, maxCpuMillis: 64_000, maxMemoryMb: 64_000 },
    });
    worker = await registerWorker(server, uniqueName('wait-worker'), { cpuMillis: 64_000, memoryMb: 64_000 });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function scheduled(): Promise<string> {
    const created = await createSandbox(server, tenantId, { name: uniqueName('sb') });
    expect(created.sandbox).toMatchObject({ status: 'SCHEDULED', worker: { id: worker.id } });
    return created.sandbox.id;
  }

  it('answers at once when the sandbox already is in one of the statuses', async () => {
    const id = await scheduled();
    const before = server.app.events().subscriberCount;
    const answer = await waitFor(server, id, ['RUNNING', 'SCHEDULED'], 300);
    expect(answer).toMatchObject({
      __typename: 'WaitForSandboxPayload',
      outcome: 'REACHED',
      reached: true,
      timedOut: false,
      status: 'SCHEDULED',
      sandbox: { id, status: 'SCHEDULED' },
    });
    expect(server.app.events().subscriberCount).toBe(before);
  });

  it('waits until the worker reports the status, then answers with it and lets go of the hub', async () => {
    const id = await scheduled();
    const before = server.app.events().subscriberCount;
    const waiting = waitFor(server, id, ['RUNNING'], 300);
    await subscribersReach(server, before + 1);

    const lease = await acquireLease(server, worker, id);
    // A status on the way is not the one asked for: the wait goes on.
    expect((await reportStatus(server, worker, id, lease.lease.fencingToken, 'STARTING')).sandbox.status).toBe(
      'STARTING',
    );
    await server.app.events().settle();
    expect(server.app.events().subscriberCount).toBe(before + 1);
    await reportStatus(server, worker, id, lease.lease.fencingToken, 'RUNNING');

    const answer = await waiting;
    expect(answer).toMatchObject({ outcome: 'REACHED', reached: true, timedOut: false, status: 'RUNNING' });
    expect(answer.sandbox).toMatchObject({ id, status: 'RUNNING', stateVersion: 3 });
    await subscribersReach(server, before);
  });

  it('times out with timedOut when the status does not come, and lets go of the hub', async () => {
    const id = await scheduled();
    const before = server.app.events().subscriberCount;
    const answer = await waitFor(server, id, ['RUNNING'], 1);
    expect(answer).toMatchObject({
      outcome: 'TIMED_OUT',
      reached: false,
      timedOut: true,
      status: 'SCHEDULED',
      sandbox: { id, status: 'SCHEDULED' },
    });
    expect(server.app.events().subscriberCount).toBe(before);
  });

  it('answers UNREACHABLE when the sandbox ends where the statuses can no longer follow', async () => {
    const id = await scheduled();
    const before = server.app.events().subscriberCount;
    const waiting = waitFor(server, id, ['RUNNING'], 300);
    await subscribersReach(server, before + 1);
    const lease = await acquireLease(server, worker, id);
    await reportStatus(server, worker, id, lease.lease.fencingToken, 'FAILED', { reason: 'image pull failed' });

    const answer = await waiting;
    expect(answer).toMatchObject({ outcome: 'UNREACHABLE', reached: false, timedOut: false, status: 'FAILED' });
    expect(answer.sandbox).toMatchObject({ status: 'FAILED', statusReason: 'image pull failed' });
    await subscribersReach(server, before);

    // Already there: answered at once, also for a status that can no longer follow.
    expect(await waitFor(server, id, ['STOPPED'], 300)).toMatchObject({ outcome: 'UNREACHABLE', status: 'FAILED' });
    expect(await waitFor(server, id, ['FAILED'], 300)).toMatchObject({ outcome: 'REACHED', status: 'FAILED' });
  });

  it('waits through a restart: STOPPING for a restart still leads to RUNNING; a stop that cancels it does not', async () => {
    const restart = async (id: string) =>
      dataOf(
        await server.gql<{ restartSandbox: { __typename: string } }>(
          'mutation($id: ID!) { restartSandbox(input: { sandboxId: $id, reason: "wait test" }) { __typename } }',
          { id },
        ),
      ).restartSandbox.__typename;
    const id = await scheduled();
    const lease = await acquireLease(server, worker, id);
    const token = lease.lease.fencingToken;
    await reportStatus(server, worker, id, token, 'RUNNING');
    const before = server.app.events().subscriberCount;

    // Begun while RUNNING: the STOPPING of a restart is on the way to STARTING, not a dead end.
    const forStarting = waitFor(server, id, ['STARTING'], 300);
    await subscribersReach(server, before + 1);
    expect(await restart(id)).toBe('SandboxPayload');
    // Begun while STOPPING for the restart: RUNNING can still follow.
    const forRunning = waitFor(server, id, ['RUNNING'], 300);
    await subscribersReach(server, before + 2);
    await server.app.events().settle();
    expect(server.app.events().subscriberCount).toBe(before + 2);
    await reportStatus(server, worker, id, token, 'STARTING');
    expect(await forStarting).toMatchObject({ outcome: 'REACHED', status: 'STARTING' });
    await reportStatus(server, worker, id, token, 'RUNNING');
    expect(await forRunning).toMatchObject({ outcome: 'REACHED', status: 'RUNNING', sandbox: { status: 'RUNNING' } });

    // A stop during a restart: RUNNING can no longer follow, and the waiter is told so.
    expect(await restart(id)).toBe('SandboxPayload');
    const cancelled = waitFor(server, id, ['RUNNING'], 300);
    await subscribersReach(server, before + 1);
    await server.gql('mutation($id: ID!) { stopSandbox(input: { sandboxId: $id }) { __typename } }', { id });
    expect(await cancelled).toMatchObject({ outcome: 'UNREACHABLE', status: 'STOPPING' });
    expect(await waitFor(server, id, ['RUNNING'], 300)).toMatchObject({ outcome: 'UNREACHABLE', status: 'STOPPING' });
    await subscribersReach(server, before);
  });

  it('gives a caller who cannot see the sandbox the same NotFoundError as a missing one; a VIEWER may wait', async () => {
    const id = await scheduled();
    const otherTenant = await createTenant(server, uniqueName('other'));
    const stranger = await server.apiToken(localId(otherTenant), 'ADMIN');
    const foreign = await waitFor(server, id, ['RUNNING'], 300, stranger);
    expect(foreign).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });
    const missing = await waitFor(server, encodeGlobalId('Sandbox', randomUUID()), ['RUNNING'], 300);
    expect(missing.__typename).toBe(foreign.__typename);

    const viewer = await server.apiToken(localId(tenantId), 'VIEWER');
    expect(await waitFor(server, id, ['SCHEDULED'], 1, viewer)).toMatchObject({ outcome: 'REACHED' });
  });

  it('refuses bad arguments with a ValidationError naming the argument', async () => {
    const id = await scheduled();
    expect(await waitFor(server, id, ['RUNNING'], 301)).toMatchObject({
      __typename: 'ValidationError',
      code: 'VALIDATION_FAILED',
      field: 'timeoutSeconds',
    });
    expect(await waitFor(server, id, ['RUNNING'], -1)).toMatchObject({ field: 'timeoutSeconds' });
    // 0 is allowed: the current state, at once.
    expect(await waitFor(server, id, ['RUNNING'], 0)).toMatchObject({ outcome: 'TIMED_OUT', status: 'SCHEDULED' });
    expect(await waitFor(server, id, [], 5)).toMatchObject({ __typename: 'ValidationError', field: 'statuses' });
    expect(await waitFor(server, id, ['DELETED'], 5)).toMatchObject({
      __typename: 'ValidationError',
      field: 'statuses',
    });
    const badId = await server.gql(WAIT, { id: 'nope', statuses: ['RUNNING'] });
    expect(JSON.stringify(badId.body)).toMatch(/NOT_FOUND|VALIDATION_FAILED/);
  });

  it('ends the wait and its hub subscription when the HTTP client goes away', async () => {
    const id = await scheduled();
    const before = server.app.events().subscriberCount;
    const abort = new AbortController();
    const request = fetch(server.app.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ query: WAIT, variables: { id, statuses: ['RUNNING'], timeoutSeconds: 300 } }),
      signal: abort.signal,
    }).catch((err: Error) => err);
    await subscribersReach(server, before + 1);
    abort.abort();
    expect(await request).toBeInstanceOf(Error);
    await subscribersReach(server, before);
  });

  it('ends the wait and its hub subscription when the WebSocket closes', async () => {
    const id = await scheduled();
    const before = server.app.events().subscriberCount;
    const client = server.ws();
    const outcome = new Promise<unknown>((resolve) => {
      client.subscribe(
        { query: WAIT, variables: { id, statuses: ['RUNNING'], timeoutSeconds: 300 } },
        { next: resolve, error: resolve, complete: () => undefined },
      );
    });
    await subscribersReach(server, before + 1);
    await client.dispose();
    await subscribersReach(server, before);
    void outcome;
  });

  it('SDK: client.waitForSandbox answers once the worker reports, and reports typed errors by code', async () => {
    const id = await scheduled();
    const client = createClient({ url: server.app.graphqlUrl, token: server.adminToken });
    const before = server.app.events().subscriberCount;
    const waiting = client.waitForSandbox(id, ['RUNNING'], { timeoutSeconds: 600 });
    await subscribersReach(server, before + 1);
    const lease = await acquireLease(server, worker, id);
    await reportStatus(server, worker, id, lease.lease.fencingToken, 'RUNNING');
    const answer = await waiting;
    expect(answer.ok && answer.data).toMatchObject({
      outcome: 'REACHED',
      reached: true,
      status: 'RUNNING',
      sandbox: { id, status: 'RUNNING' },
    });

    const timedOut = await client.waitForSandbox(await scheduled(), ['RUNNING'], { timeoutSeconds: 2, stepSeconds: 1 });
    expect(timedOut.ok && timedOut.data).toMatchObject({ outcome: 'TIMED_OUT', timedOut: true });

    const stranger = createClient({
      url: server.app.graphqlUrl,
      token: await server.apiToken(localId(await createTenant(server, uniqueName('sdk-other'))), 'ADMIN'),
    });
    const refused = await stranger.waitForSandbox(id, ['RUNNING']);
    expect(refused.ok ? null : refused.error.code).toBe('NOT_FOUND');
    await client.close();
    await stranger.close();
  });
  it('SDK: client.waitForSandbox asks again after each step that timed out, until the status comes', async () => {
    const id = await scheduled();
    const client = createClient({ url: server.app.graphqlUrl, token: server.adminToken });
    const before = server.app.events().subscriberCount;
    const waiting = client.waitForSandbox(id, ['RUNNING'], { timeoutSeconds: 120, stepSeconds: 1 });
    // The first request waits, times out (its subscription ends), and the helper asks again.
    await subscribersReach(server, before + 1);
    await subscribersReach(server, before);
    await subscribersReach(server, before + 1);
    const lease = await acquireLease(server, worker, id);
    await reportStatus(server, worker, id, lease.lease.fencingToken, 'RUNNING');
    const answer = await waiting;
    expect(answer.ok && answer.data).toMatchObject({ outcome: 'REACHED', status: 'RUNNING' });
    await client.close();
  });

  it('answers NotFoundError when the sandbox is deleted while waiting', async () => {
    const id = await scheduled();
    const before = server.app.events().subscriberCount;
    const waiting = waitFor(server, id, ['RUNNING'], 300);
    await subscribersReach(server, before + 1);
    const deleted = await server.gql<{ deleteSandbox: { __typename: string } }>(
      'mutation($input: SandboxRefInput!) { deleteSandbox(input: $input) { __typename } }',
      { input: { sandboxId: id } },
    );
    expect(dataOf(deleted).deleteSandbox.__typename).toBe('SandboxPayload');
    expect(await waiting).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });
    await subscribersReach(server, before);
  });
});

describe.each(DRIVERS)('waitForSandbox with the reference worker agent on %s', (kind) => {
  let server: TestServer;
  let agent: WorkerAgent | null = null;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await agent?.stop();
    await killChildren();
    await server?.close();
  });

  it('"create, then wait until it runs" with real processes: RUNNING, then STOPPED after a stop; a failing command ends FAILED', async () => {
    const tenantId = await createTenant(server, uniqueName('agent-wait'));
    const worker = await registerWorker(server, uniqueName('agent-w'), { tenantId });
    agent = new WorkerAgent({
      url: server.app.graphqlUrl,
      token: worker.token,
      webSocketImpl: WebSocket,
      stopGraceMs: 500,
      heartbeatIntervalMs: 500,
    });
    await agent.start();
    const sdk = createClient({ url: server.app.graphqlUrl, token: server.adminToken, webSocketImpl: WebSocket });
    const create = async (name: string, script: string) => {
      const res = await sdk.mutate(CreateSandboxDocument, {
        input: {
          tenantId,
          name,
          image: 'local/process',
          command: ['/bin/sh', '-c', script],
          resources: { cpuMillis: 250, memoryMb: 256 },
        },
      });
      const created = res.ok ? unwrapPayload(res.data.createSandbox) : null;
      if (!created?.ok || created.payload.__typename !== 'SandboxPayload') throw new Error(JSON.stringify(res));
      return created.payload.sandbox.id;
    };

    const sleeper = await create('sleeper', 'sleep 60');
    const running = await sdk.waitForSandbox(sleeper, ['RUNNING'], { timeoutSeconds: 60 });
    expect(running.ok && running.data).toMatchObject({
      outcome: 'REACHED',
      sandbox: { status: 'RUNNING', worker: { id: worker.id } },
    });

    const stopped = await sdk.mutate(StopSandboxDocument, { input: { sandboxId: sleeper } });
    expect(stopped.ok && stopped.data.stopSandbox.__typename).toBe('SandboxPayload');
    const done = await sdk.waitForSandbox(sleeper, ['STOPPED', 'FAILED'], { timeoutSeconds: 60 });
    expect(done.ok && done.data).toMatchObject({ outcome: 'REACHED', status: 'STOPPED' });

    const failing = await create('failing', 'exit 3');
    const ended = await sdk.waitForSandbox(failing, ['STOPPED', 'FAILED'], { timeoutSeconds: 60 });
    expect(ended.ok && ended.data).toMatchObject({ outcome: 'REACHED', status: 'FAILED', sandbox: { exitCode: 3 } });
    await sdk.close();
  });
});

describe.each(DRIVERS)('waitForSandbox without polling on %s', (kind) => {
  let server: TestServer;
  const statements: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { onQuery: (sql) => statements.push(sql) });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** The request statements one wait issues (the hub's reads of the event log are not the request's). */
  async function statementsOf(wait: () => Promise<unknown>): Promise<string[]> {
    await server.app.events().settle();
    const from = statements.length;
    await wait();
    // Without the logged duration ("[took 1 ms, …]"); sorted: the loaders of one level run side by side.
    return statements
      .slice(from)
      .filter(isRequestStatement)
      .map((sql) => sql.replace(/\s*\[took [^\]]*\]\s*$/, ''))
      .sort();
  }

  it('issues as many statements for a 3 s wait as for a 1 s wait: the database is not polled', async () => {
    const tenantId = await createTenant(server, uniqueName('poll'));
    await registerWorker(server, uniqueName('poll-worker'));
    const id = (await createSandbox(server, tenantId, { name: 'waited' })).sandbox.id;
    const wait = (timeoutSeconds: number) => () =>
      server.gql<{ waitForSandbox: WaitAnswer }>(WAIT, { id, statuses: ['RUNNING'], timeoutSeconds });

    // Once first, so that caches a first request fills (identities, metadata) do not count.
    expect(dataOf(await wait(1)()).waitForSandbox.outcome).toBe('TIMED_OUT');
    const short = await statementsOf(wait(1));
    const long = await statementsOf(wait(3));
    expect(long.length).toBeGreaterThan(0);
    expect(long).toEqual(short);
  });

  it('answers INTERRUPTED at once when the server shuts down, instead of holding the shutdown', async () => {
    // A server of its own: this test stops it.
    const stopping = await startTestServer(kind);
    try {
      const tenantId = await createTenant(stopping, uniqueName('stop'));
      await registerWorker(stopping, uniqueName('stop-worker'));
      const id = (await createSandbox(stopping, tenantId, { name: 'waited' })).sandbox.id;
      const waiting = stopping.gql<{ waitForSandbox: WaitAnswer }>(WAIT, {
        id,
        statuses: ['RUNNING'],
        timeoutSeconds: 300,
      });
      await subscribersReach(stopping, 1);
      const closing = stopping.close();
      // Without the interruption the request is cut when the shutdown timeout passes, with no answer.
      const answer = dataOf(await waiting).waitForSandbox;
      expect(answer).toMatchObject({ outcome: 'INTERRUPTED', reached: false, timedOut: false, status: 'SCHEDULED' });
      await closing;
    } finally {
      await stopping.close();
    }
  });
});
