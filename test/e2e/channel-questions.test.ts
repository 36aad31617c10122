import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEntry } from '../../src/db/entities/audit-entry.js';
import { ChannelNonce } from '../../src/db/entities/channel.js';
import { Event } from '../../src/db/entities/event.js';
import { Message } from '../../src/db/entities/message.js';
import { Question } from '../../src/db/entities/question.js';
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
  reportStatus,
  uniqueName,
} from '../helpers/fleet.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';

const MESSAGE = 'id kind threadId channel senderKind senderId body deliveryState';
interface MessageView {
  id: string;
  kind: string | null;
  threadId: string;
  channel: string;
  senderKind: string;
  senderId: string;
  body: string;
  deliveryState: string | null;
}
interface QuestionView {
  id: string;
  status: string;
  answerChoice: string | null;
  answerText: string | null;
  answeredBy: string | null;
  message: MessageView;
  answer: MessageView | null;
}
const QUESTION = `id status answerChoice answerText answeredBy message { ${MESSAGE} } answer { ${MESSAGE} }`;

/** What a QUESTION delivery carries beyond a message's fields. */
interface QuestionPayload {
  questionId: string;
  options: string[];
  allowFreeText: boolean;
}

interface Agent {
  tenantId: string;
  worker: RegisteredWorker;
  sandboxId: string;
  fencingToken: string;
}

/**
 * Issue 16's glue: an agent's question on a thread bound to a channel goes out on that channel,
 * and the receiver answers it through the channel's signed inbound hook.
 */
describe.each(DRIVERS)('agent questions through chat channels on %s', (kind) => {
  let server: TestServer;
  const receiver = new Receiver();
  let agent: Agent;

  beforeAll(async () => {
    await receiver.start();
    server = await startTestServer(kind, {
      env: { FLOTILLA_CHANNEL_RETRY_BASE_MS: '20', FLOTILLA_CHANNEL_TIMEOUT_MS: '30000' },
    });
    agent = await runningAgent();
  });
  afterAll(async () => {
    await server?.close();
    await receiver.close();
  });

  /** A RUNNING sandbox of a new tenant, on that tenant's own worker, which holds its lease. */
  async function runningAgent(): Promise<Agent> {
    const tenantId = await createTenant(server, uniqueName('cq'));
    const worker = await registerWorker(server, uniqueName('cqw'), { tenantId });
    const created = await createSandbox(server, tenantId, { resources: { cpuMillis: 100, memoryMb: 100 } });
    const sandboxId = created.sandbox.id;
    const lease = await acquireLease(server, worker, sandboxId);
    const fencingToken = lease.lease.fencingToken;
    expect((await reportStatus(server, worker, sandboxId, fencingToken, 'RUNNING')).__typename).toBe('SandboxPayload');
    return { tenantId, worker, sandboxId, fencingToken };
  }

  async function channel(tenantId = agent.tenantId): Promise<{ id: string; name: string; secret: string }> {
    const name = uniqueName('cq')
      .toLowerCase()
      .replace(/[^a-z0-9_-]/g, '-');
    const res = await server.gql<{ createChannel: { secret: string; channel: { id: string; name: string } } }>(
      `mutation($input: CreateChannelInput!) { createChannel(input: $input) {
        ... on ChannelSecretPayload { secret channel { id name } } ${ERROR_FIELDS} } }`,
      { input: { tenantId, name, outboundUrl: receiver.url } },
    );
    const created = dataOf(res).createChannel;
    expect(created.secret, JSON.stringify(created)).toBeTruthy();
    return { ...created.channel, secret: created.secret };
  }

  const inbound = (ch: { id: string; secret: string }, body: Record<string, unknown> | string, tamper?: Tamper) =>
    signedInbound(server, ch, body, tamper);

  /** A person's first message through `ch` on `threadId`, which binds the thread to the channel. */
  async function bind(ch: { id: string; secret: string }, threadId: string, on: Agent = agent): Promise<void> {
    const sent = await inbound(ch, { threadId, sandboxId: localId(on.sandboxId), body: 'hello', sender: 'ada' });
    expect(sent.status, JSON.stringify(sent.json)).toBe(201);
  }

  async function ask(
    threadId: string,
    options: string[],
    allowFreeText = false,
    on: Agent = agent,
  ): Promise<QuestionView> {
    const res = await server.gql<{ postAgentQuestion: { __typename: string; question: QuestionView } }>(
      `mutation($input: PostAgentQuestionInput!) { postAgentQuestion(input: $input) { __typename
        ... on QuestionPayload { question { ${QUESTION} } } ${ERROR_FIELDS} } }`,
      {
        input: {
          sandboxId: on.sandboxId,
          fencingToken: on.fencingToken,
          prompt: `Which one? (${threadId})`,
          options,
          allowFreeText,
          threadId,
        },
      },
      on.worker.token,
    );
    const asked = dataOf(res).postAgentQuestion;
    expect(asked.__typename, JSON.stringify(asked)).toBe('QuestionPayload');
    return asked.question;
  }

  /** The delivery of `question` as the receiver got it (waits for it to arrive). */
  async function received(question: QuestionView): Promise<Received & { payload: QuestionPayload }> {
    const questionId = localId(question.id);
    const mine = () => receiver.requests.find((r) => r.payload.questionId === questionId);
    await until('the question to reach the receiver', () => mine() !== undefined);
    return mine() as Received & { payload: QuestionPayload };
  }

  async function questionView(id: string): Promise<QuestionView> {
    const res = await server.gql<{ node: QuestionView }>(
      `query($id: ID!) { node(id: $id) { ... on Question { ${QUESTION} } } }`,
      { id },
    );
    return dataOf(res).node;
  }

  async function sandboxView(sandboxId = agent.sandboxId) {
    const res = await server.gql<{
      sandbox: {
        agent: { phase: string } | null;
        openQuestions: { id: string }[];
        undeliveredMessages: { edges: { node: { id: string } }[] };
      };
    }>(
      `query($id: ID!) { sandbox(id: $id) { agent { phase } openQuestions { id }
        undeliveredMessages(first: 100) { edges { node { id } } } } }`,
      { id: sandboxId },
    );
    return dataOf(res).sandbox;
  }

  async function deliveryKinds(channelId: string): Promise<string[]> {
    const res = await server.gql<{ node: { deliveries: { edges: { node: { message: { kind: string } } }[] } } }>(
      `query($id: ID!) { node(id: $id) { ... on Channel { deliveries(first: 100) { edges { node {
        message { kind } } } } } } }`,
      { id: channelId },
    );
    return dataOf(res).node.deliveries.edges.map((e) => e.node.message.kind);
  }

  /** Rows a refused call must not add or change. */
  async function written() {
    const em = server.app.db.orm.em.fork();
    return {
      messages: await em.count(Message, {}),
      events: await em.count(Event, {}),
      nonces: await em.count(ChannelNonce, {}),
      answered: await em.count(Question, { status: 'ANSWERED' }),
      audit: await em.count(AuditEntry, {}),
    };
  }

  it("sends an agent's question on a bound thread out on that channel, signed, with the question id and options", async () => {
    const ch = await channel();
    const thread = uniqueName('ask');
    await bind(ch, thread);
    const question = await ask(thread, ['blue', 'green']);
    // It carries the channel's name, like the agent's messages on that thread.
    expect(question.message).toMatchObject({ kind: 'QUESTION', channel: ch.name, threadId: thread });

    const got = await received(question);
    expect(got.payload).toEqual({
      id: localId(question.message.id),
      channel: ch.name,
      threadId: thread,
      sandboxId: localId(agent.sandboxId),
      kind: 'QUESTION',
      body: `Which one? (${thread})`,
      questionId: localId(question.id),
      options: ['blue', 'green'],
      allowFreeText: false,
      createdAt: expect.any(String),
    });
    const timestamp = String(got.headers['x-flotilla-timestamp']);
    expect(got.headers['x-flotilla-signature']).toBe(sign(ch.secret, [timestamp, got.body]));
    expect(await deliveryKinds(ch.id)).toEqual(['QUESTION']);

    // A question on a thread no channel bound stays on the dashboard: nothing is queued.
    const local = await ask(uniqueName('local'), ['a', 'b']);
    expect(local.message.channel).toBe('agent');
    expect(await deliveryKinds(ch.id)).toEqual(['QUESTION']);
  });

  it('sends an answer given through the API (the dashboard) out on the channel the question went out on', async () => {
    const ch = await channel();
    const thread = uniqueName('dash');
    await bind(ch, thread);
    const question = await ask(thread, ['now', 'later']);
    await received(question);
    const res = await server.gql<{ answerQuestion: { __typename: string; question: QuestionView } }>(
      `mutation($input: AnswerQuestionInput!) { answerQuestion(input: $input) { __typename
        ... on QuestionPayload { question { ${QUESTION} } } ${ERROR_FIELDS} } }`,
      { input: { questionId: question.id, choice: 'later' } },
    );
    const answered = dataOf(res).answerQuestion;
    expect(answered.__typename, JSON.stringify(answered)).toBe('QuestionPayload');
    const answer = answered.question.answer as MessageView;
    expect(answer).toMatchObject({ kind: 'ANSWER', channel: ch.name, threadId: thread });

    // The receiver hears it, signed, as an ANSWER naming the question and the choice.
    const answerId = localId(answer.id);
    await until('the answer to reach the receiver', () => receiver.requests.some((r) => r.payload.id === answerId));
    const got = receiver.requests.find((r) => r.payload.id === answerId) as Received;
    expect(got.payload).toEqual({
      id: answerId,
      channel: ch.name,
      threadId: thread,
      sandboxId: localId(agent.sandboxId),
      kind: 'ANSWER',
      body: 'later',
      questionId: localId(question.id),
      choice: 'later',
      text: null,
      createdAt: expect.any(String),
    });
    expect(got.headers['x-flotilla-signature']).toBe(
      sign(ch.secret, [String(got.headers['x-flotilla-timestamp']), got.body]),
    );
    expect(await deliveryKinds(ch.id)).toEqual(['QUESTION', 'ANSWER']);
  });

  it('takes the answer through the inbound hook: the question is ANSWERED, the agent resumes, the answer reaches it', async () => {
    // An agent of its own, with no other question open.
    const asker = await runningAgent();
    const ch = await channel(asker.tenantId);
    const thread = uniqueName('ans');
    await bind(ch, thread, asker);
    const question = await ask(thread, ['ship', 'wait'], false, asker);
    expect((await sandboxView(asker.sandboxId)).agent?.phase).toBe('WAITING_FOR_INPUT');

    // The receiver answers from what it got: the question id, the thread and one of the options.
    const { payload } = await received(question);
    const answered = await inbound(ch, {
      threadId: payload.threadId,
      questionId: payload.questionId,
      choice: payload.options[1],
      sender: 'ada',
    });
    expect(answered.status, JSON.stringify(answered.json)).toBe(201);
    const after = await questionView(question.id);
    expect(answered.json).toEqual({
      messageId: localId((after.answer as MessageView).id),
      threadId: thread,
      sandboxId: localId(asker.sandboxId),
      questionId: localId(question.id),
      status: 'ANSWERED',
    });
    expect(after).toMatchObject({
      status: 'ANSWERED',
      answerChoice: 'wait',
      answerText: null,
      answeredBy: `channel:${localId(ch.id)}:ada`,
      answer: {
        kind: 'ANSWER',
        threadId: thread,
        channel: ch.name,
        senderKind: 'USER',
        senderId: 'ada',
        body: 'wait',
        deliveryState: 'PENDING',
      },
    });
    const sandbox = await sandboxView(asker.sandboxId);
    expect(sandbox.agent?.phase).toBe('THINKING');
    expect(sandbox.openQuestions).toEqual([]);
    // It waits for the worker like any person's message.
    expect(sandbox.undeliveredMessages.edges.map((e) => e.node.id)).toContain(after.answer?.id);
    // The answer is the agent's input, not something to send back out: only the question was queued.
    expect(await deliveryKinds(ch.id)).toEqual(['QUESTION']);

    // Free text, where the question allows it.
    const open = await ask(thread, [], true, asker);
    const byText = await inbound(ch, {
      threadId: thread,
      questionId: (await received(open)).payload.questionId,
      text: 'in an hour',
      sender: 'bob',
    });
    expect(byText.status, JSON.stringify(byText.json)).toBe(201);
    expect(await questionView(open.id)).toMatchObject({
      status: 'ANSWERED',
      answerChoice: null,
      answerText: 'in an hour',
      answeredBy: `channel:${localId(ch.id)}:bob`,
      answer: { kind: 'ANSWER', body: 'in an hour', senderId: 'bob', channel: ch.name },
    });

    // Audited under the channel, which proved itself by its signature.
    const audit = dataOf(
      await server.gql<{
        tenant: {
          auditEntries: { edges: { node: { action: string; outcome: string; actor: string; targetId: string } }[] };
        };
      }>(
        'query($t: ID!) { tenant(id: $t) { auditEntries(first: 100) { edges { node { action outcome actor targetId } } } } }',
        { t: asker.tenantId },
      ),
    ).tenant.auditEntries.edges.map((e) => e.node);
    expect(audit).toEqual(
      expect.arrayContaining([
        { action: 'answerQuestion', outcome: 'ok', actor: `channel:${localId(ch.id)}`, targetId: localId(question.id) },
      ]),
    );
  });

  it('lets exactly one answer win: a second gets 409 with a reason and writes nothing', async () => {
    const ch = await channel();
    const thread = uniqueName('twice');
    await bind(ch, thread);
    const question = await ask(thread, ['yes', 'no']);
    const questionId = localId(question.id);
    expect((await inbound(ch, { threadId: thread, questionId, choice: 'yes', sender: 'ada' })).status).toBe(201);
    const first = await questionView(question.id);

    const before = await written();
    const second = await inbound(ch, { threadId: thread, questionId, choice: 'no', sender: 'bob' });
    expect(second.status).toBe(409);
    expect(second.json).toEqual({
      error: 'conflict',
      code: 'QUESTION_CLOSED',
      reason: expect.stringMatching(/answered/),
      status: 'ANSWERED',
    });
    // Only the refusal's own audit entry; its nonce rolled back with it.
    expect(await written()).toEqual({ ...before, audit: before.audit + 1 });
    expect(await questionView(question.id)).toEqual(first);

    // Answers racing each other: one wins, every other one is told the question is closed.
    const raced = await ask(thread, ['a', 'b', 'c']);
    const racedId = localId(raced.id);
    const racing = await written();
    const statuses = await Promise.all(
      ['a', 'b', 'c', 'a', 'b', 'c'].map((choice, i) =>
        inbound(ch, { threadId: thread, questionId: racedId, choice, sender: `p${i}` }),
      ),
    );
    expect(statuses.map((s) => s.status).sort()).toEqual([201, 409, 409, 409, 409, 409]);
    const end = await written();
    expect(end.messages).toBe(racing.messages + 1);
    expect(end.answered).toBe(racing.answered + 1);
    expect(end.nonces).toBe(racing.nonces + 1);
    const winner = statuses.findIndex((s) => s.status === 201);
    expect((await questionView(raced.id)).answeredBy).toBe(`channel:${localId(ch.id)}:p${winner}`);
  });

  it('refuses a forged, stale or replayed answer with 401 and writes nothing', async () => {
    const ch = await channel();
    const thread = uniqueName('forge');
    await bind(ch, thread);
    const question = await ask(thread, ['go', 'stop']);
    const body = { threadId: thread, questionId: localId(question.id), choice: 'go', sender: 'mallory' };
    const start = await written();
    const now = Math.floor(Date.now() / 1000);
    const refusals = [
      await inbound(ch, body, { secret: 'whsec_guessed' }),
      await inbound(ch, body, { signature: 'v1=00' }),
      await inbound(ch, body, { timestamp: String(now - 360) }),
    ];
    for (const refused of refusals)
      expect(refused).toMatchObject({ status: 401, json: { error: 'unauthorized', reason: expect.any(String) } });
    expect(await written()).toEqual(start);
    expect(await questionView(question.id)).toMatchObject({ status: 'OPEN', answer: null, answeredBy: null });
    expect((await sandboxView()).agent?.phase).toBe('WAITING_FOR_INPUT');

    // A captured answer replayed after its original: refused for its nonce (not as a second answer).
    const accepted = await inbound(ch, { ...body, sender: 'ada' });
    expect(accepted.status).toBe(201);
    const afterOne = await written();
    const { timestamp, nonce, raw } = accepted.send;
    const replay = await inbound(ch, raw, { timestamp, nonce });
    expect(replay.status).toBe(401);
    expect(replay.json.reason).toMatch(/nonce/);
    expect(await written()).toEqual(afterOne);
  });

  it("refuses an answer that does not fit the question (400) or names one not on this channel's thread (404), writing nothing", async () => {
    const ch = await channel();
    const thread = uniqueName('bad');
    await bind(ch, thread);
    const question = await ask(thread, ['one', 'two']);
    const questionId = localId(question.id);
    const answer = (fields: Record<string, unknown>) =>
      inbound(ch, { threadId: thread, questionId, sender: 'ada', ...fields });

    // A question of another tenant's sandbox, one on a thread no channel bound, one bound to another channel.
    const stranger = await runningAgent();
    const strangerThread = uniqueName('str');
    await bind(await channel(stranger.tenantId), strangerThread, stranger);
    const foreign = await ask(strangerThread, ['one'], false, stranger);
    const unboundThread = uniqueName('unb');
    const unbound = await ask(unboundThread, ['one']);
    const otherChannel = await channel();
    const otherThread = uniqueName('oth');
    await bind(otherChannel, otherThread);
    const elsewhere = await ask(otherThread, ['one']);

    const start = await written();
    const badRequests = [
      await answer({ choice: 'three' }),
      await answer({ text: 'free text is not allowed here' }),
      await answer({ choice: 'one', text: 'both' }),
      await answer({}),
      await answer({ choice: 'one', body: 'an answer has no body' }),
      await answer({ choice: 'one', sandboxId: localId(agent.sandboxId) }),
      await answer({ choice: 7 }),
      await inbound(ch, { threadId: thread, choice: 'one', sender: 'ada' }),
    ];
    for (const refused of badRequests)
      expect(refused, JSON.stringify(refused.json)).toMatchObject({
        status: 400,
        json: { error: 'bad request', reason: expect.any(String) },
      });
    expect(badRequests[0].json).toMatchObject({ reason: expect.stringMatching(/one, two/), field: 'choice' });
    expect(badRequests[1].json.field).toBe('text');

    const notFound = [
      await inbound(ch, { threadId: strangerThread, questionId: localId(foreign.id), choice: 'one', sender: 'x' }),
      await inbound(ch, { threadId: unboundThread, questionId: localId(unbound.id), choice: 'one', sender: 'x' }),
      await inbound(ch, { threadId: otherThread, questionId: localId(elsewhere.id), choice: 'one', sender: 'x' }),
      // The right question under another thread of the channel.
      await inbound(ch, { threadId: otherThread, questionId, choice: 'one', sender: 'x' }),
      await answer({ questionId: randomUUID(), choice: 'one' }),
      await answer({ questionId: 'not-an-id', choice: 'one' }),
    ];
    for (const refused of notFound)
      expect(refused, JSON.stringify(refused.json)).toMatchObject({ status: 404, json: { error: 'not found' } });

    // Refused attempts are audited; nothing else is written, and every question is still open.
    const end = await written();
    expect({ ...end, audit: 0 }).toEqual({ ...start, audit: 0 });
    for (const q of [question, foreign, unbound, elsewhere])
      expect((await questionView(q.id)).status, q.id).toBe('OPEN');
    // The right answer still goes through.
    expect((await answer({ choice: 'two' })).status).toBe(201);
  });
});
