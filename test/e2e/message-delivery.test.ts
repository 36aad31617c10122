import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
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
import { isRequestStatement, startTestServer, type TestServer } from '../helpers/server.js';

/** Short, so the reaper's timeout is reached by moving the test clock a little. */
const DISPATCH_TIMEOUT_SECONDS = 20;

const MESSAGE = 'id body senderKind deliveryState deliveryError dispatchedAt deliveredAt';

interface MessageView {
  id: string;
  body: string;
  senderKind: string;
  deliveryState: string | null;
  deliveryError: string | null;
  dispatchedAt: string | null;
  deliveredAt: string | null;
}

interface DeliveryReport {
  changed: { id: string; deliveryState: string }[];
  unchangedIds: string[];
}

/**
 * Delivery state of messages to the agent, through the public API on both drivers: each worker
 * report is a compare-and-swap fenced by the lease, each transition is an event, and the reaper
 * in the domain sweeper puts dispatches that were never confirmed back to PENDING.
 */
describe.each(DRIVERS)('message delivery state on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();
  let recording: string[] | null = null;

  beforeAll(async () => {
    server = await startTestServer(kind, {
      clock,
      env: {
        FLOTILLA_MESSAGE_DISPATCH_TIMEOUT_SECONDS: String(DISPATCH_TIMEOUT_SECONDS),
        FLOTILLA_HEARTBEAT_TTL_SECONDS: '3600',
      },
      onQuery: (sql) => (isRequestStatement(sql) ? recording?.push(sql) : undefined),
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A RUNNING sandbox on its tenant's own worker, leased by it. */
  async function leased(): Promise<{ tenantId: string; worker: RegisteredWorker; sandboxId: string; token: string }> {
    const tenantId = await createTenant(server, uniqueName('dl'));
    const worker = await registerWorker(server, uniqueName('dlw'), { tenantId });
    const created = await createSandbox(server, tenantId, { command: ['agent'] });
    const sandboxId = created.sandbox.id;
    const lease = await acquireLease(server, worker, sandboxId, 3600);
    expect(lease.__typename).toBe('LeasePayload');
    const token = lease.lease.fencingToken;
    await reportStatus(server, worker, sandboxId, token, 'STARTING');
    await reportStatus(server, worker, sandboxId, token, 'RUNNING');
    return { tenantId, worker, sandboxId, token };
  }

  async function send(sandboxId: string, body: string): Promise<MessageView> {
    const res = await server.gql<{ sendMessage: Result<{ posted: MessageView }> }>(
      `mutation($input: SendMessageInput!) { sendMessage(input: $input) { __typename ... on MessagePayload { posted { ${MESSAGE} } } ${ERROR_FIELDS} } }`,
      { input: { sandboxId, body } },
    );
    const result = dataOf(res).sendMessage;
    expect(result.__typename, JSON.stringify(result)).toBe('MessagePayload');
    return result.posted;
  }

  async function report(
    worker: RegisteredWorker,
    sandboxId: string,
    fencingToken: string,
    messageIds: string[],
    state: string,
    reason?: string,
  ): Promise<Result<DeliveryReport>> {
    const res = await server.gql<{ reportMessageDelivery: Result<DeliveryReport> }>(
      `mutation($input: ReportMessageDeliveryInput!) { reportMessageDelivery(input: $input) { __typename
        ... on ReportMessageDeliveryPayload { changed { id deliveryState } unchangedIds } ${ERROR_FIELDS} } }`,
      { input: { sandboxId, fencingToken, messageIds, state, reason } },
      worker.token,
    );
    return dataOf(res).reportMessageDelivery;
  }

  async function messages(sandboxId: string): Promise<MessageView[]> {
    const res = await server.gql<{ messages: { edges: { node: MessageView }[] } }>(
      `query($id: ID!) { messages(sandboxId: $id, first: 100) { edges { node { ${MESSAGE} } } } }`,
      { id: sandboxId },
    );
    return dataOf(res).messages.edges.map((e) => e.node);
  }

  async function undelivered(sandboxId: string, token?: string): Promise<MessageView[]> {
    const res = await server.gql<{ sandbox: { undeliveredMessages: { edges: { node: MessageView }[] } } }>(
      `query($id: ID!) { sandbox(id: $id) { undeliveredMessages(first: 100) { edges { node { ${MESSAGE} } } } } }`,
      { id: sandboxId },
      token,
    );
    return dataOf(res).sandbox.undeliveredMessages.edges.map((e) => e.node);
  }

  /** The delivery events of the tenant's log: [type, data.to] in commit order. */
  async function deliveryEvents(tenantId: string): Promise<[string, unknown][]> {
    const res = await server.gql<{ events: { edges: { node: { type: string; data: { to?: unknown } } }[] } }>(
      `query($t: ID!) { events(tenantId: $t, first: 100, types: [MESSAGE_DELIVERED, MESSAGE_DELIVERY_CHANGED]) { edges { node { type data } } } }`,
      { t: tenantId },
    );
    return dataOf(res).events.edges.map((e) => [e.node.type, e.node.data.to]);
  }

  const stateOf = async (sandboxId: string, id: string) => (await messages(sandboxId)).find((m) => m.id === id);

  it("a person's message starts PENDING, the agent's own has no delivery state", async () => {
    const { worker, sandboxId, token } = await leased();
    const sent = await send(sandboxId, 'hello');
    expect(sent).toMatchObject({ senderKind: 'USER', deliveryState: 'PENDING', dispatchedAt: null, deliveredAt: null });
    const res = await server.gql<{ postAgentMessage: Result<{ posted: MessageView }> }>(
      `mutation($input: PostAgentMessageInput!) { postAgentMessage(input: $input) { __typename ... on MessagePayload { posted { ${MESSAGE} } } ${ERROR_FIELDS} } }`,
      { input: { sandboxId, fencingToken: token, body: 'hi there' } },
      worker.token,
    );
    expect(dataOf(res).postAgentMessage.posted).toMatchObject({ senderKind: 'AGENT', deliveryState: null });
  });

  it('moves PENDING → DISPATCHED → DELIVERED by compare-and-swap; a report from the wrong state changes nothing and says so', async () => {
    const { tenantId, worker, sandboxId, token } = await leased();
    const a = await send(sandboxId, 'a');
    const b = await send(sandboxId, 'b');

    // DELIVERED straight from PENDING is a lost swap: reported, not an error.
    const early = await report(worker, sandboxId, token, [a.id], 'DELIVERED');
    expect(early).toMatchObject({ __typename: 'ReportMessageDeliveryPayload', changed: [], unchangedIds: [a.id] });
    expect(await stateOf(sandboxId, a.id)).toMatchObject({ deliveryState: 'PENDING', deliveredAt: null });

    const taken = await report(worker, sandboxId, token, [b.id, a.id], 'DISPATCHED');
    // In commit order, whatever order the ids came in.
    expect(taken.changed).toEqual([
      { id: a.id, deliveryState: 'DISPATCHED' },
      { id: b.id, deliveryState: 'DISPATCHED' },
    ]);
    expect(taken.unchangedIds).toEqual([]);
    const again = await report(worker, sandboxId, token, [a.id], 'DISPATCHED');
    expect(again).toMatchObject({ changed: [], unchangedIds: [a.id] });

    const done = await report(worker, sandboxId, token, [a.id], 'DELIVERED');
    expect(done.changed).toEqual([{ id: a.id, deliveryState: 'DELIVERED' }]);
    const delivered = await stateOf(sandboxId, a.id);
    expect(delivered?.deliveredAt).toBeTruthy();
    expect(delivered?.dispatchedAt).toBeTruthy();
    // Nothing moves a DELIVERED message any more.
    const late = await report(worker, sandboxId, token, [a.id], 'FAILED', 'too late');
    expect(late).toMatchObject({ changed: [], unchangedIds: [a.id] });
    expect(await stateOf(sandboxId, a.id)).toMatchObject({ deliveryState: 'DELIVERED', deliveryError: null });

    const failed = await report(worker, sandboxId, token, [b.id], 'FAILED', "the process's stdin is closed");
    expect(failed.changed).toEqual([{ id: b.id, deliveryState: 'FAILED' }]);
    expect(await stateOf(sandboxId, b.id)).toMatchObject({
      deliveryState: 'FAILED',
      deliveryError: "the process's stdin is closed",
    });

    expect(await deliveryEvents(tenantId)).toEqual([
      ['MESSAGE_DELIVERY_CHANGED', 'DISPATCHED'],
      ['MESSAGE_DELIVERY_CHANGED', 'DISPATCHED'],
      ['MESSAGE_DELIVERED', 'DELIVERED'],
      ['MESSAGE_DELIVERY_CHANGED', 'FAILED'],
    ]);
  });

  it('refuses a stale fencing token and another worker, and changes nothing', async () => {
    const { tenantId, worker, sandboxId, token } = await leased();
    const m = await send(sandboxId, 'fenced');
    const stale = await report(worker, sandboxId, String(Number(token) + 5), [m.id], 'DISPATCHED');
    expect(stale).toMatchObject({ __typename: 'StaleFencingTokenError', code: 'STALE_FENCING_TOKEN' });
    const other = await registerWorker(server, uniqueName('other'), { tenantId });
    const foreign = await report(other, sandboxId, token, [m.id], 'DISPATCHED');
    expect(foreign).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });
    // A person cannot report delivery at all.
    const byAdmin = await server.gql<{ reportMessageDelivery: Result<DeliveryReport> }>(
      `mutation($input: ReportMessageDeliveryInput!) { reportMessageDelivery(input: $input) { __typename ${ERROR_FIELDS} } }`,
      { input: { sandboxId, fencingToken: token, messageIds: [m.id], state: 'DISPATCHED' } },
    );
    expect(dataOf(byAdmin).reportMessageDelivery).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });
    expect(await stateOf(sandboxId, m.id)).toMatchObject({ deliveryState: 'PENDING', dispatchedAt: null });
    expect(await deliveryEvents(tenantId)).toEqual([]);
  });

  it('answers bad reports with a typed validation error', async () => {
    const { worker, sandboxId, token } = await leased();
    const m = await send(sandboxId, 'x');
    const cases: [string, string | undefined, string[]][] = [
      ['PENDING', undefined, [m.id]],
      ['FAILED', undefined, [m.id]],
      ['DELIVERED', 'no reason here', [m.id]],
      ['DISPATCHED', undefined, []],
      ['DISPATCHED', undefined, Array.from({ length: 101 }, () => m.id)],
    ];
    for (const [state, reason, ids] of cases) {
      const refused = await report(worker, sandboxId, token, ids, state, reason);
      expect(refused, `${state} ${reason} ${ids.length}`).toMatchObject({
        __typename: 'ValidationError',
        code: 'VALIDATION_FAILED',
      });
    }
    expect(await stateOf(sandboxId, m.id)).toMatchObject({ deliveryState: 'PENDING' });
  });

  it('a sandbox that ends fails what it never received; a message to a finished sandbox is FAILED at once', async () => {
    const { tenantId, worker, sandboxId, token } = await leased();
    const waiting = await send(sandboxId, 'never taken');
    const taken = await send(sandboxId, 'taken, never written');
    await report(worker, sandboxId, token, [taken.id], 'DISPATCHED');
    await reportStatus(server, worker, sandboxId, token, 'STOPPED', { exitCode: 0 });
    for (const m of [waiting, taken])
      expect(await stateOf(sandboxId, m.id)).toMatchObject({
        deliveryState: 'FAILED',
        deliveryError: 'the sandbox is STOPPED: no process reads it',
      });
    expect((await deliveryEvents(tenantId)).slice(-2)).toEqual([
      ['MESSAGE_DELIVERY_CHANGED', 'FAILED'],
      ['MESSAGE_DELIVERY_CHANGED', 'FAILED'],
    ]);
    const sent = await send(sandboxId, 'anyone there?');
    expect(sent).toMatchObject({ deliveryState: 'FAILED', deliveryError: expect.stringContaining('STOPPED') });
    expect(await undelivered(sandboxId)).toEqual([]);
  });

  it('lists what is not delivered yet in commit order, for the worker, in as many statements whatever the count', async () => {
    const { worker, sandboxId, token } = await leased();
    const sent: MessageView[] = [];
    for (const body of ['one', 'two', 'three', 'four']) sent.push(await send(sandboxId, body));
    await report(worker, sandboxId, token, [sent[0].id], 'DISPATCHED');
    await report(worker, sandboxId, token, [sent[0].id], 'DELIVERED');
    await report(worker, sandboxId, token, [sent[2].id], 'DISPATCHED');
    await report(worker, sandboxId, token, [sent[3].id], 'FAILED', 'gone');
    const seen = await undelivered(sandboxId, worker.token);
    expect(seen.map((m) => [m.body, m.deliveryState])).toEqual([
      ['two', 'PENDING'],
      ['three', 'DISPATCHED'],
    ]);

    const statementsFor = async () => {
      recording = [];
      await undelivered(sandboxId, worker.token);
      const count = recording.length;
      recording = null;
      return count;
    };
    const few = await statementsFor();
    for (let i = 0; i < 20; i++) await send(sandboxId, `more ${i}`);
    expect(await statementsFor()).toBe(few);
  });

  it('a new lease voids the dispatches of the previous one: they are PENDING again for the new holder', async () => {
    const { tenantId, worker, sandboxId, token } = await leased();
    const m = await send(sandboxId, 'taken but never confirmed');
    await report(worker, sandboxId, token, [m.id], 'DISPATCHED');
    // The same worker starting over (e.g. its agent restarted) acquires again with a new token.
    const again = await acquireLease(server, worker, sandboxId, 3600);
    expect(again.lease.fencingToken).toBe(String(Number(token) + 1));
    expect(await stateOf(sandboxId, m.id)).toMatchObject({ deliveryState: 'PENDING', dispatchedAt: null });
    expect((await deliveryEvents(tenantId)).at(-1)).toEqual(['MESSAGE_DELIVERY_CHANGED', 'PENDING']);
    // The old token can no longer confirm it.
    const late = await report(worker, sandboxId, token, [m.id], 'DELIVERED');
    expect(late).toMatchObject({ __typename: 'StaleFencingTokenError' });
  });

  it('after a takeover by another worker, the new holder takes what the old one dispatched; the old one can no longer confirm it', async () => {
    const tenantId = await createTenant(server, uniqueName('tk'));
    const a = await registerWorker(server, uniqueName('tka'), { tenantId });
    const created = await createSandbox(server, tenantId, { command: ['agent'] });
    const sandboxId = created.sandbox.id;
    const leaseA = await acquireLease(server, a, sandboxId, 5);
    const tokenA = leaseA.lease.fencingToken;
    await reportStatus(server, a, sandboxId, tokenA, 'STARTING');
    await reportStatus(server, a, sandboxId, tokenA, 'RUNNING');
    const m = await send(sandboxId, 'in flight when A went silent');
    expect((await report(a, sandboxId, tokenA, [m.id], 'DISPATCHED')).changed).toHaveLength(1);

    // A goes silent (drained, so its sandbox is placed elsewhere); its lease expires; B takes over.
    const b = await registerWorker(server, uniqueName('tkb'), { tenantId });
    const drained = await server.gql<{ drainWorker: { __typename: string } }>(
      'mutation($id: ID!) { drainWorker(input: { workerId: $id }) { __typename } }',
      { id: a.id },
    );
    expect(dataOf(drained).drainWorker.__typename).toBe('WorkerPayload');
    clock.advance(6);
    const sweep = await server.app.sweeper.runOnce();
    expect(sweep).toMatchObject({ sandboxesLost: 1, sandboxesPlaced: 1 });
    const leaseB = await acquireLease(server, b, sandboxId, 3600);
    expect(leaseB).toMatchObject({ __typename: 'LeasePayload', lease: { holder: { id: b.id } } });
    const tokenB = leaseB.lease.fencingToken;
    expect(BigInt(tokenB)).toBeGreaterThan(BigInt(tokenA));

    expect(await undelivered(sandboxId, b.token)).toMatchObject([{ id: m.id, deliveryState: 'PENDING' }]);
    const late = await report(a, sandboxId, tokenA, [m.id], 'DELIVERED');
    expect(late).toMatchObject({ __typename: 'NotFoundError' });
    expect((await report(b, sandboxId, tokenB, [m.id], 'DISPATCHED')).changed).toHaveLength(1);
    expect((await report(b, sandboxId, tokenB, [m.id], 'DELIVERED')).changed).toEqual([
      { id: m.id, deliveryState: 'DELIVERED' },
    ]);
    expect(await undelivered(sandboxId, b.token)).toEqual([]);
  });

  it('the reaper puts a dispatch that was never confirmed back to PENDING, once it is due and not before', async () => {
    // Dispatches left by the tests above time out first, so this pass counts only this test's.
    clock.advance(DISPATCH_TIMEOUT_SECONDS + 1);
    await server.app.sweeper.runOnce();
    const { tenantId, worker, sandboxId, token } = await leased();
    const stuck = await send(sandboxId, 'stuck');
    const confirmed = await send(sandboxId, 'confirmed');
    await server.app.sweeper.runOnce();
    await report(worker, sandboxId, token, [stuck.id, confirmed.id], 'DISPATCHED');
    await report(worker, sandboxId, token, [confirmed.id], 'DELIVERED');

    // Before the timeout the sweeper's timer finds nothing due: no statement at all.
    clock.advance(DISPATCH_TIMEOUT_SECONDS / 2);
    recording = [];
    for (let i = 0; i < 5; i++) expect(await server.app.sweeper.runIfDue()).toBeNull();
    expect(recording).toEqual([]);
    recording = null;
    expect(await stateOf(sandboxId, stuck.id)).toMatchObject({ deliveryState: 'DISPATCHED' });

    clock.advance(DISPATCH_TIMEOUT_SECONDS);
    const pass = await server.app.sweeper.runIfDue();
    expect(pass?.dispatchesReaped).toBe(1);
    expect(await stateOf(sandboxId, stuck.id)).toMatchObject({ deliveryState: 'PENDING', dispatchedAt: null });
    expect(await stateOf(sandboxId, confirmed.id)).toMatchObject({ deliveryState: 'DELIVERED' });
    expect((await deliveryEvents(tenantId)).at(-1)).toEqual(['MESSAGE_DELIVERY_CHANGED', 'PENDING']);
    // Nothing is left to reap.
    expect((await server.app.sweeper.runOnce())?.dispatchesReaped).toBe(0);
    // The holder takes it again and this time confirms it.
    const retaken = await report(worker, sandboxId, token, [stuck.id], 'DISPATCHED');
    expect(retaken.changed).toEqual([{ id: stuck.id, deliveryState: 'DISPATCHED' }]);
  });
});
