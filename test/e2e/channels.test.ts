import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEntry } from '../../src/db/entities/audit-entry.js';
import { ChannelNonce } from '../../src/db/entities/channel.js';
import { Event } from '../../src/db/entities/event.js';
import { Message } from '../../src/db/entities/message.js';
import { type Received, Receiver, sign, signedInbound, type Tamper, until } from '../helpers/channels.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  type RegisteredWorker,
  registerWorker,
  uniqueName,
} from '../helpers/fleet.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';

interface DeliveryView {
  threadId: string;
  status: string;
  attemptCount: number;
  message: { body: string } | null;
  attempts: { number: number; statusCode: number | null; error: string | null; durationMs: number }[];
}

describe.each(DRIVERS)('chat channels through signed webhooks on %s', (kind) => {
  let server: TestServer;
  const receiver = new Receiver();
  let tenantId: string;
  let worker: RegisteredWorker;
  let sandboxId: string;
  let fencingToken: string;
  const statements: string[] = [];

  // Every replica of a deployment has the same secrets key: the channels' secrets are sealed with it.
  const secretsKey = `k1:${randomBytes(32).toString('base64')}`;

  beforeAll(async () => {
    await receiver.start();
    server = await startTestServer(kind, {
      env: {
        FLOTILLA_SECRETS_KEY: secretsKey,
        FLOTILLA_CHANNEL_RETRY_BASE_MS: '20',
        FLOTILLA_CHANNEL_MAX_ATTEMPTS: '4',
        FLOTILLA_CHANNEL_TIMEOUT_MS: '30000',
      },
      onQuery: (sql) => statements.push(sql),
    });
    tenantId = await createTenant(server, uniqueName('chan'));
    worker = await registerWorker(server, uniqueName('chw'), { tenantId });
    const created = await createSandbox(server, tenantId);
    sandboxId = created.sandbox.id;
    const lease = await acquireLease(server, worker, sandboxId);
    fencingToken = lease.lease.fencingToken;
  });
  afterAll(async () => {
    await server?.close();
    await receiver.close();
  });

  async function createChannel(name: string, url = receiver.url, token?: string) {
    const res = await server.gql<{
      createChannel: { __typename: string; code?: string; secret: string; channel: { id: string; name: string } };
    }>(
      `mutation($input: CreateChannelInput!) { createChannel(input: $input) { __typename
        ... on ChannelSecretPayload { secret channel { id name outboundUrl } } ${ERROR_FIELDS} } }`,
      { input: { tenantId, name, outboundUrl: url } },
      token,
    );
    return dataOf(res).createChannel;
  }

  async function channel(): Promise<{ id: string; name: string; secret: string }> {
    const created = await createChannel(
      uniqueName('ch')
        .toLowerCase()
        .replace(/[^a-z0-9_-]/g, '-'),
    );
    expect(created.__typename).toBe('ChannelSecretPayload');
    return { ...created.channel, secret: created.secret };
  }

  /** A signed inbound call, as a chat bridge would make it; `tamper` changes what is sent. */
  const inbound = (ch: { id: string; secret: string }, body: Record<string, unknown> | string, tamper?: Tamper) =>
    signedInbound(server, ch, body, tamper);

  async function postAgent(threadId: string, body: string) {
    const res = await server.gql<{
      postAgentMessage: { __typename: string; posted?: { id: string; channel: string } };
    }>(
      `mutation($i: PostAgentMessageInput!) { postAgentMessage(input: $i) { __typename
        ... on MessagePayload { posted { id channel } } } }`,
      { i: { sandboxId, fencingToken, threadId, body } },
      worker.token,
    );
    const result = dataOf(res).postAgentMessage;
    expect(result.__typename, JSON.stringify(result)).toBe('MessagePayload');
    return result.posted as { id: string; channel: string };
  }

  async function deliveries(channelId: string): Promise<DeliveryView[]> {
    const res = await server.gql<{ node: { deliveries: { edges: { node: DeliveryView }[] } } }>(
      `query($id: ID!) { node(id: $id) { ... on Channel { deliveries(first: 100) { edges { node {
        threadId status attemptCount message { body } attempts { number statusCode error durationMs } } } } } } }`,
      { id: channelId },
    );
    return dataOf(res).node.deliveries.edges.map((e) => e.node);
  }

  async function threadMessages(threadId: string) {
    const res = await server.gql<{
      messages: { edges: { node: { body: string; channel: string; senderKind: string; senderId: string } }[] };
    }>(
      'query($id: ID!, $t: String) { messages(sandboxId: $id, threadId: $t, first: 100) { edges { node { body channel senderKind senderId } } } }',
      { id: sandboxId, t: threadId },
    );
    return dataOf(res).messages.edges.map((e) => e.node);
  }

  /** Rows a refused call must not add. */
  async function written() {
    const em = server.app.db.orm.em.fork();
    return {
      messages: await em.count(Message, {}),
      events: await em.count(Event, {}),
      nonces: await em.count(ChannelNonce, {}),
      audit: await em.count(AuditEntry, {}),
    };
  }

  it('returns the secret once: no query can read it, and rotating replaces it', async () => {
    const ch = await channel();
    expect(ch.secret).toMatch(/^whsec_[A-Za-z0-9_-]{40,}$/);
    // No output type but the mutations' payload has a text field that could carry it (Mutation has
    // rotateChannelSecret; the sandbox secrets' fields are flags and objects that never hold a value).
    type TypeRef = { name: string | null; ofType: TypeRef | null };
    const named = (t: TypeRef): string | null => t.name ?? (t.ofType ? named(t.ofType) : null);
    const types = dataOf(
      await server.gql<{ __schema: { types: { name: string; fields: { name: string; type: TypeRef }[] | null }[] } }>(
        '{ __schema { types { name fields { name type { name ofType { name ofType { name ofType { name } } } } } } } }',
      ),
    ).__schema.types;
    const withSecret = types
      .filter((t) => t.name !== 'Mutation')
      .filter((t) => t.fields?.some((f) => /secret/i.test(f.name) && named(f.type) === 'String'))
      .map((t) => t.name);
    expect(withSecret).toEqual(['ChannelSecretPayload']);
    const listed = dataOf(
      await server.gql<{ tenant: { channels: { edges: { node: Record<string, unknown> }[] } } }>(
        'query($t: ID!) { tenant(id: $t) { channels(first: 100) { edges { node { id name outboundUrl createdAt } } } } }',
        { t: tenantId },
      ),
    ).tenant.channels.edges.map((e) => e.node);
    expect(listed).toContainEqual(expect.objectContaining({ id: ch.id, name: ch.name, outboundUrl: receiver.url }));
    expect(JSON.stringify(listed)).not.toContain(ch.secret);

    const rotated = dataOf(
      await server.gql<{ rotateChannelSecret: { secret: string; channel: { id: string } } }>(
        'mutation($id: ID!) { rotateChannelSecret(input: { channelId: $id }) { ... on ChannelSecretPayload { secret channel { id } } } }',
        { id: ch.id },
      ),
    ).rotateChannelSecret;
    expect(rotated.channel.id).toBe(ch.id);
    expect(rotated.secret).not.toBe(ch.secret);
    const thread = uniqueName('rot');
    const body = { threadId: thread, sandboxId: localId(sandboxId), body: 'hello', sender: 'ada' };
    expect((await inbound(ch, body)).status).toBe(401);
    expect((await inbound({ ...ch, secret: rotated.secret }, body)).status).toBe(201);
    // Each is audited; a person's message through the hook under the channel's name as the actor.
    const audit = dataOf(
      await server.gql<{
        tenant: { auditEntries: { edges: { node: { action: string; outcome: string; actor: string } }[] } };
      }>('query($t: ID!) { tenant(id: $t) { auditEntries(first: 100) { edges { node { action outcome actor } } } } }', {
        t: tenantId,
      }),
    ).tenant.auditEntries.edges.map((e) => e.node);
    expect(audit).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ action: 'createChannel', outcome: 'ok' }),
        expect.objectContaining({ action: 'rotateChannelSecret', outcome: 'ok' }),
        { action: 'receiveChannelMessage', outcome: 'ok', actor: `channel:${localId(ch.id)}` },
      ]),
    );
  });

  it('validates the name and URL, keeps names unique per tenant, and lets only ADMINs create', async () => {
    const bad = await createChannel('Slack Main');
    expect(bad).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED' });
    for (const url of ['ftp://example.com/x', 'not a url', 'http://user:pw@example.com/']) {
      expect(await createChannel('ok-name', url)).toMatchObject({ __typename: 'ValidationError' });
    }
    const name = uniqueName('dup')
      .toLowerCase()
      .replace(/[^a-z0-9_-]/g, '-');
    expect((await createChannel(name)).__typename).toBe('ChannelSecretPayload');
    expect(await createChannel(name)).toMatchObject({ __typename: 'AlreadyExistsError', code: 'ALREADY_EXISTS' });
    const operator = await server.apiToken(localId(tenantId), 'OPERATOR');
    expect(await createChannel('by-operator', receiver.url, operator)).toMatchObject({ __typename: 'ForbiddenError' });
    const ch = await channel();
    for (const mutation of ['rotateChannelSecret', 'deleteChannel']) {
      const res = await server.gql<Record<string, { __typename: string }>>(
        `mutation($id: ID!) { ${mutation}(input: { channelId: $id }) { __typename } }`,
        { id: ch.id },
        operator,
      );
      expect(dataOf(res)[mutation].__typename).toBe('ForbiddenError');
    }
    // An OPERATOR sees the channels (never the secret); a VIEWER does not.
    const list = (token: string) =>
      server.gql<{ tenant: { channels: { totalCount: number } | null } }>(
        'query($t: ID!) { tenant(id: $t) { channels { totalCount } } }',
        { t: tenantId },
        token,
      );
    const asOperator = await list(operator);
    expect(asOperator.body.data?.tenant.channels?.totalCount).toBeGreaterThan(0);
    const viewer = await list(await server.apiToken(localId(tenantId), 'VIEWER'));
    expect(viewer.body.data?.tenant?.channels ?? null).toBeNull();
    expect(viewer.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it("posts a person's message into the thread, and the agent's reply goes out on that channel and thread, signed", async () => {
    const ch = await channel();
    const thread = uniqueName('conv');
    const first = await inbound(ch, {
      threadId: thread,
      sandboxId: localId(sandboxId),
      body: 'hi agent',
      sender: 'ada',
    });
    expect(first.status).toBe(201);
    // The thread now talks to this sandbox: a follow-up needs no sandboxId.
    expect((await inbound(ch, { threadId: thread, body: 'still there?', sender: 'ada' })).status).toBe(201);
    expect(await threadMessages(thread)).toEqual([
      { body: 'hi agent', channel: ch.name, senderKind: 'USER', senderId: 'ada' },
      { body: 'still there?', channel: ch.name, senderKind: 'USER', senderId: 'ada' },
    ]);

    const before = receiver.requests.length;
    const reply = await postAgent(thread, 'hello ada');
    expect(reply.channel).toBe(ch.name);
    await until('the reply to arrive', () => receiver.requests.length > before);
    const got = receiver.requests[before];
    expect(got.payload).toMatchObject({
      id: localId(reply.id),
      channel: ch.name,
      threadId: thread,
      sandboxId: localId(sandboxId),
      kind: 'MESSAGE',
      body: 'hello ada',
    });
    const timestamp = String(got.headers['x-flotilla-timestamp']);
    expect(got.headers['x-flotilla-signature']).toBe(sign(ch.secret, [timestamp, got.body]));
    expect(got.headers['x-flotilla-signature']).not.toBe(sign(`${ch.secret}x`, [timestamp, got.body]));
    await until('the delivery to be recorded', async () => (await deliveries(ch.id))[0]?.status === 'SUCCEEDED');
    const [delivery] = await deliveries(ch.id);
    expect(delivery).toMatchObject({ threadId: thread, attemptCount: 1, message: { body: 'hello ada' } });
    expect(delivery.attempts).toEqual([expect.objectContaining({ number: 1, statusCode: 200, error: null })]);
    expect(got.headers['x-flotilla-delivery']).toBeTruthy();

    // A thread that did not come in through a channel is not sent anywhere.
    const quiet = await postAgent(uniqueName('local'), 'only on the dashboard');
    expect(quiet.channel).toBe('agent');
    expect(await deliveries(ch.id)).toHaveLength(1);
  });

  it('retries after a 500 with every attempt recorded, keeps order per thread, fails for good after the last attempt', async () => {
    const ch = await channel();
    const ordered = uniqueName('ord');
    const doomed = uniqueName('doom');
    for (const thread of [ordered, doomed])
      expect(
        (await inbound(ch, { threadId: thread, sandboxId: localId(sandboxId), body: 'start', sender: 'bob' })).status,
      ).toBe(201);
    let failuresLeft = 2;
    receiver.answer = (r) => {
      if (r.payload.channel !== ch.name) return 200;
      if (r.payload.threadId === doomed) return r.payload.body === 'lost' ? 500 : 200;
      if (failuresLeft > 0) {
        failuresLeft--;
        return 500;
      }
      return 200;
    };
    try {
      for (const body of ['one', 'two', 'three']) await postAgent(ordered, body);
      await postAgent(doomed, 'lost');
      await postAgent(doomed, 'after the lost one');
      await until('every delivery to finish', async () =>
        (await deliveries(ch.id)).every((d) => d.status !== 'PENDING'),
      );
    } finally {
      receiver.answer = () => 200;
    }
    const mine = (r: Received) => r.payload.channel === ch.name;
    // Per thread, nothing went out before the earlier delivery succeeded or finally failed.
    expect(receiver.bodies((r) => mine(r) && r.payload.threadId === ordered)).toEqual([
      'one',
      'one',
      'one',
      'two',
      'three',
    ]);
    expect(receiver.bodies((r) => mine(r) && r.payload.threadId === doomed)).toEqual([
      'lost',
      'lost',
      'lost',
      'lost',
      'after the lost one',
    ]);
    const byBody = new Map((await deliveries(ch.id)).map((d) => [d.message?.body, d]));
    expect(byBody.get('one')).toMatchObject({ status: 'SUCCEEDED', attemptCount: 3 });
    expect(byBody.get('one')?.attempts.map((a) => [a.number, a.statusCode])).toEqual([
      [1, 500],
      [2, 500],
      [3, 200],
    ]);
    expect(byBody.get('one')?.attempts[0].error).toContain('500');
    expect(byBody.get('two')).toMatchObject({ status: 'SUCCEEDED', attemptCount: 1 });
    expect(byBody.get('lost')).toMatchObject({ status: 'FAILED', attemptCount: 4 });
    expect(byBody.get('after the lost one')).toMatchObject({ status: 'SUCCEEDED', attemptCount: 1 });

    // With nothing left to send, the drainer is idle: no timer, no statement (retries were 20 ms apart).
    await server.app.channelDrainer.idle();
    statements.length = 0;
    await new Promise((r) => setTimeout(r, 500));
    expect(statements.filter((sql) => sql.includes('channel_'))).toEqual([]);
  });

  it("never holds up the agent's postAgentMessage: it returns while the receiver hangs", async () => {
    const ch = await channel();
    const thread = uniqueName('hang');
    await inbound(ch, { threadId: thread, sandboxId: localId(sandboxId), body: 'go', sender: 'cy' });
    receiver.answer = (r) => (r.payload.channel === ch.name ? 'hang' : 200);
    try {
      await postAgent(thread, 'slow receiver');
      await until('the receiver to hold the request', () => receiver.hangingCount === 1);
      // The POST is still open, so no attempt can have been recorded: the mutation did not wait for it.
      expect(await deliveries(ch.id)).toEqual([expect.objectContaining({ status: 'PENDING', attemptCount: 0 })]);
      // Another message of the thread waits behind it; the agent is not held up by that either.
      await postAgent(thread, 'queued behind');
      expect(receiver.hangingCount).toBe(1);
    } finally {
      receiver.answer = () => 200;
      receiver.release();
    }
    await until('both deliveries to succeed', async () =>
      (await deliveries(ch.id)).every((d) => d.status === 'SUCCEEDED'),
    );
    expect(receiver.bodies((r) => r.payload.channel === ch.name)).toEqual(['slow receiver', 'queued behind']);
  });

  it('refuses a forged, stale or replayed inbound call and writes nothing', async () => {
    const ch = await channel();
    const thread = uniqueName('sec');
    const body = { threadId: thread, sandboxId: localId(sandboxId), body: 'let me in', sender: 'mallory' };
    // A sandbox of another tenant, which this channel must not reach.
    const otherTenant = await createTenant(server, uniqueName('other'));
    await registerWorker(server, uniqueName('otw'), { tenantId: otherTenant });
    const elsewhere = await createSandbox(server, otherTenant);
    expect(elsewhere.__typename, JSON.stringify(elsewhere)).toBe('SandboxPayload');
    const now = Math.floor(Date.now() / 1000);
    const start = await written();
    const refusals = [
      await inbound(ch, body, { secret: 'whsec_guessed' }),
      await inbound(ch, body, { signature: 'v1=00' }),
      await inbound(ch, body, { timestamp: String(now - 360) }),
      await inbound(ch, body, { timestamp: String(now + 360) }),
      await inbound(ch, body, { nonce: '' }),
    ];
    for (const refused of refusals) {
      expect(refused.status).toBe(401);
      expect(refused.json).toMatchObject({ error: 'unauthorized', reason: expect.any(String) });
    }
    expect(refusals[2].json.reason).toMatch(/timestamp/);
    expect(refusals[0].json.reason).toMatch(/signature/);
    expect(await written()).toEqual(start);

    const accepted = await inbound(ch, body);
    expect(accepted.status).toBe(201);
    const afterOne = await written();
    expect(afterOne.messages).toBe(start.messages + 1);
    // The same call again (same nonce, timestamp and signature) is a replay.
    const { timestamp, nonce, raw } = accepted.send;
    const replay = await inbound(ch, raw, { timestamp, nonce });
    expect(replay.status).toBe(401);
    expect(replay.json.reason).toMatch(/nonce/);
    expect(await written()).toEqual(afterOne);

    // Well signed but bad bodies: 400 or 404, nothing written.
    expect((await inbound(ch, 'not json')).status).toBe(400);
    expect((await inbound(ch, { threadId: thread, body: 'no sender', sandboxId: localId(sandboxId) })).status).toBe(
      400,
    );
    expect((await inbound(ch, { threadId: uniqueName('new'), body: 'where to?', sender: 'x' })).status).toBe(404);
    expect(
      (await inbound(ch, { threadId: thread, sandboxId: localId(elsewhere.sandbox.id), body: 'x', sender: 'x' }))
        .status,
    ).toBe(404);
    const unknown = await inbound(
      { id: Buffer.from(`Channel:${randomUUID()}`).toString('base64url'), secret: 'x' },
      body,
    );
    expect(unknown.status).toBe(404);
    const end = await written();
    expect({ ...end, audit: 0 }).toEqual({ ...afterOne, audit: 0 });
  });

  it('deleting a channel drops its deliveries; its messages stay', async () => {
    const ch = await channel();
    const thread = uniqueName('del');
    await inbound(ch, { threadId: thread, sandboxId: localId(sandboxId), body: 'bye', sender: 'dee' });
    await postAgent(thread, 'see you');
    await until('the delivery to finish', async () => (await deliveries(ch.id))[0]?.status === 'SUCCEEDED');
    const deleted = dataOf(
      await server.gql<{ deleteChannel: { channelId: string } }>(
        'mutation($id: ID!) { deleteChannel(input: { channelId: $id }) { ... on DeleteChannelPayload { channelId } } }',
        { id: ch.id },
      ),
    ).deleteChannel;
    expect(deleted.channelId).toBe(ch.id);
    expect(
      dataOf(await server.gql<{ node: unknown }>('query($id: ID!) { node(id: $id) { id } }', { id: ch.id })).node,
    ).toBeNull();
    expect((await threadMessages(thread)).map((m) => m.body)).toEqual(['bye', 'see you']);
    // The thread is no longer bound: the agent's next message goes nowhere.
    expect((await postAgent(thread, 'anyone?')).channel).toBe('agent');
  });
  // Last: it stops this server's drainer for good.
  it('keeps queued deliveries across a restart, and other replicas send each exactly once', async () => {
    const ch = await channel();
    const threads = [uniqueName('rs'), uniqueName('rs'), uniqueName('rs')];
    for (const thread of threads)
      await inbound(ch, { threadId: thread, sandboxId: localId(sandboxId), body: 'hi', sender: 'eve' });
    await server.app.channelDrainer.stop(); // this replica goes away as far as sending is concerned
    const sent: string[] = [];
    for (const [i, thread] of threads.entries())
      for (const n of [1, 2]) {
        await postAgent(thread, `t${i} m${n}`);
        sent.push(`t${i} m${n}`);
      }
    expect((await deliveries(ch.id)).map((d) => [d.status, d.attemptCount])).toEqual(sent.map(() => ['PENDING', 0]));
    // Postgres: two replicas drain at once; SQLite has one process.
    const replicas = [];
    for (let i = 0; i < (kind === 'postgres' ? 2 : 1); i++)
      replicas.push(
        await startTestServer(kind, {
          databaseUrl: server.databaseUrl,
          adminToken: server.adminToken,
          env: { FLOTILLA_SECRETS_KEY: secretsKey, FLOTILLA_CHANNEL_RETRY_BASE_MS: '20' },
        }),
      );
    try {
      await until('every queued delivery to go out', async () =>
        (await deliveries(ch.id)).every((d) => d.status === 'SUCCEEDED'),
      );
      // More messages, posted while both replicas run: woken through the log, each sent once.
      for (const thread of threads) {
        await postAgent(thread, `${thread} late`);
        sent.push(`${thread} late`);
      }
      await until('the late deliveries to go out', async () => {
        const all = await deliveries(ch.id);
        return all.length === sent.length && all.every((d) => d.status === 'SUCCEEDED');
      });
    } finally {
      for (const replica of replicas) await replica.close();
    }
    const received = receiver.bodies((r) => r.payload.channel === ch.name);
    expect([...received].sort()).toEqual([...sent].sort());
    for (const [i, thread] of threads.entries())
      expect(receiver.bodies((r) => r.payload.channel === ch.name && r.payload.threadId === thread)).toEqual([
        `t${i} m1`,
        `t${i} m2`,
        `${thread} late`,
      ]);
    expect((await deliveries(ch.id)).every((d) => d.attemptCount === 1)).toBe(true);
  });
});
