import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { isRequestStatement, localId, startTestServer, type TestServer } from '../helpers/server.js';

type Typed = { __typename: string; code?: string; message?: string; field?: string | null; status?: string } & Record<
  string,
  unknown
>;

interface QuestionView {
  id: string;
  prompt: string;
  options: string[];
  allowFreeText: boolean;
  status: string;
  answerChoice: string | null;
  answerText: string | null;
  answeredBy: string | null;
  answeredAt: string | null;
  message: { id: string; kind: string; threadId: string; channel: string; senderKind: string; body: string };
  answer: { id: string; kind: string; threadId: string; channel: string; senderKind: string; body: string } | null;
}

const MESSAGE = 'id kind threadId channel senderKind body';
const QUESTION = `id prompt options allowFreeText status answerChoice answerText answeredBy answeredAt
  message { ${MESSAGE} } answer { ${MESSAGE} }`;
const QUESTION_RESULT = `__typename ... on QuestionPayload { question { ${QUESTION} } } ${ERROR_FIELDS}
  ... on ValidationError { field } ... on QuestionClosedError { status }`;

/** A person writes only with a tenant role of OPERATOR or more; the answers below use one. */
describe.each(DRIVERS)('questions with answers on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();
  let recording: string[] | null = null;

  beforeAll(async () => {
    server = await startTestServer(kind, {
      clock,
      onQuery: (sql) => (isRequestStatement(sql) ? recording?.push(sql) : undefined),
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A RUNNING sandbox on its tenant's own worker (new ones unless given), which holds its lease. */
  async function running(
    ttlSeconds = 60,
    on?: { tenantId: string; worker: RegisteredWorker },
  ): Promise<{
    tenantId: string;
    worker: RegisteredWorker;
    sandboxId: string;
    token: string;
    operator: string;
  }> {
    const tenantId = on?.tenantId ?? (await createTenant(server, uniqueName('q')));
    const worker = on?.worker ?? (await registerWorker(server, uniqueName('w'), { tenantId }));
    const created = await createSandbox(server, tenantId, { resources: { cpuMillis: 100, memoryMb: 100 } });
    const sandboxId = created.sandbox.id;
    const lease = await acquireLease(server, worker, sandboxId, ttlSeconds);
    expect(lease.__typename).toBe('LeasePayload');
    const token = lease.lease.fencingToken;
    expect((await reportStatus(server, worker, sandboxId, token, 'RUNNING')).__typename).toBe('SandboxPayload');
    const operator = await server.apiToken(localId(tenantId), 'OPERATOR', uniqueName('operator'));
    return { tenantId, worker, sandboxId, token, operator };
  }

  async function ask(
    worker: RegisteredWorker,
    input: Record<string, unknown>,
  ): Promise<Typed & { question: QuestionView }> {
    const res = await server.gql<{ postAgentQuestion: Typed & { question: QuestionView } }>(
      `mutation($input: PostAgentQuestionInput!) { postAgentQuestion(input: $input) { ${QUESTION_RESULT} } }`,
      { input: { options: [], ...input } },
      worker.token,
    );
    return dataOf(res).postAgentQuestion;
  }

  async function answer(token: string, input: Record<string, unknown>): Promise<Typed & { question: QuestionView }> {
    const res = await server.gql<{ answerQuestion: Typed & { question: QuestionView } }>(
      `mutation($input: AnswerQuestionInput!) { answerQuestion(input: $input) { ${QUESTION_RESULT} } }`,
      { input },
      token,
    );
    return dataOf(res).answerQuestion;
  }

  async function sandboxQuestions(sandboxId: string): Promise<{
    openQuestions: QuestionView[];
    agent: { phase: string; activity: string | null } | null;
    messages: { totalCount: number; edges: { node: QuestionView['message'] & { question: { id: string } | null } }[] };
  }> {
    const res = await server.gql<{
      sandbox: {
        openQuestions: QuestionView[];
        agent: { phase: string; activity: string | null } | null;
        messages: {
          totalCount: number;
          edges: { node: QuestionView['message'] & { question: { id: string } | null } }[];
        };
      };
    }>(
      `query($id: ID!) { sandbox(id: $id) { openQuestions { ${QUESTION} } agent { phase activity }
        messages(first: 100) { totalCount edges { node { ${MESSAGE} question { id } } } } } }`,
      { id: sandboxId },
    );
    return dataOf(res).sandbox;
  }

  it('lets the lease holder ask: a QUESTION message, an open question, and the agent waiting for input', async () => {
    const { tenantId, worker, sandboxId, token } = await running();
    const asked = await ask(worker, {
      sandboxId,
      fencingToken: token,
      prompt: 'Deploy to production?',
      options: ['yes', 'no'],
      threadId: 'deploy-1',
      channel: 'ops',
    });
    expect(asked).toMatchObject({
      __typename: 'QuestionPayload',
      question: {
        prompt: 'Deploy to production?',
        options: ['yes', 'no'],
        allowFreeText: false,
        status: 'OPEN',
        answer: null,
        answeredAt: null,
        message: { kind: 'QUESTION', threadId: 'deploy-1', channel: 'ops', senderKind: 'AGENT' },
      },
    });
    const view = await sandboxQuestions(sandboxId);
    expect(view.openQuestions.map((q) => q.id)).toEqual([asked.question.id]);
    expect(view.agent).toMatchObject({ phase: 'WAITING_FOR_INPUT', activity: 'Deploy to production?' });
    expect(view.messages.edges.map((e) => e.node)).toEqual([
      expect.objectContaining({ kind: 'QUESTION', body: 'Deploy to production?', question: { id: asked.question.id } }),
    ]);
    // The agent status change is in the event log, as reportAgentStatus's is.
    const events = dataOf(
      await server.gql<{
        events: { edges: { node: { type: string; data: { to?: string }; sandbox: { id: string } | null } }[] };
      }>(
        'query($t: ID!) { events(tenantId: $t, first: 100, types: [AGENT_STATUS_CHANGED]) { edges { node { type data sandbox { id } } } } }',
        { t: tenantId },
      ),
    ).events.edges.map((e) => e.node);
    expect(events.map((e) => [e.sandbox?.id, e.data.to])).toEqual([[sandboxId, 'WAITING_FOR_INPUT']]);
  });

  it('refuses a stale fencing token, another worker and a person, writing nothing', async () => {
    const { tenantId, worker, sandboxId, token } = await running(5);
    // The lease runs out and the same worker takes it over: the old token is stale.
    clock.advance(6);
    const again = await acquireLease(server, worker, sandboxId, 60);
    expect(BigInt(again.lease.fencingToken)).toBe(BigInt(token) + 1n);
    const other = await registerWorker(server, uniqueName('other'), { tenantId });
    const question = { sandboxId, prompt: 'May I?', options: ['yes'] };

    expect(await ask(worker, { ...question, fencingToken: token })).toMatchObject({
      __typename: 'StaleFencingTokenError',
      code: 'STALE_FENCING_TOKEN',
    });
    expect(await ask(other, { ...question, fencingToken: again.lease.fencingToken })).toMatchObject({
      __typename: 'NotFoundError',
      code: 'NOT_FOUND',
    });
    const person = await server.gql<{ postAgentQuestion: Typed }>(
      `mutation($input: PostAgentQuestionInput!) { postAgentQuestion(input: $input) { __typename ${ERROR_FIELDS} } }`,
      { input: { ...question, fencingToken: again.lease.fencingToken } },
    );
    expect(dataOf(person).postAgentQuestion).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });

    const view = await sandboxQuestions(sandboxId);
    expect(view.openQuestions).toEqual([]);
    expect(view.messages.totalCount).toBe(0);
    expect(view.agent).toBeNull();
    // The current holder's token works.
    expect((await ask(worker, { ...question, fencingToken: again.lease.fencingToken })).__typename).toBe(
      'QuestionPayload',
    );
  });

  it('validates a question: options or free text, option count, length and duplicates, the prompt', async () => {
    const { worker, sandboxId, token } = await running();
    const base = { sandboxId, fencingToken: token, prompt: 'Which one?' };
    const cases: [Record<string, unknown>, string][] = [
      [{ options: [] }, 'input.options'],
      [{ options: [], allowFreeText: false }, 'input.options'],
      [{ options: Array.from({ length: 21 }, (_, i) => `o${i}`) }, 'input.options'],
      [{ options: ['a', 'a'] }, 'input.options'],
      [{ options: ['a', '  '] }, 'input.options.1'],
      [{ options: ['a'], prompt: '   ' }, 'input.prompt'],
      [{ options: ['a'], threadId: 'bad thread' }, 'input.threadId'],
      [{ options: ['a'], channel: 'Bad Channel' }, 'input.channel'],
    ];
    for (const [input, field] of cases) {
      expect(await ask(worker, { ...base, ...input }), JSON.stringify(input)).toMatchObject({
        __typename: 'ValidationError',
        field,
      });
    }
    // Longer than the limit is refused before the service runs (resolvers/input-lengths.ts).
    const long = await ask(worker, { ...base, options: ['x'.repeat(201)] });
    expect(long).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED' });
    expect((await sandboxQuestions(sandboxId)).messages.totalCount).toBe(0);
    // Free text alone is a question too.
    expect(await ask(worker, { ...base, options: [], allowFreeText: true })).toMatchObject({
      question: { options: [], allowFreeText: true, status: 'OPEN' },
    });
  });

  it('takes a choice among the options, or text only when allowed; one of the two; an OPERATOR only', async () => {
    const { tenantId, worker, sandboxId, token, operator } = await running();
    const choiceOnly = (await ask(worker, { sandboxId, fencingToken: token, prompt: 'Go?', options: ['yes', 'no'] }))
      .question;
    const wordsToo = (
      await ask(worker, { sandboxId, fencingToken: token, prompt: 'Why?', options: ['skip'], allowFreeText: true })
    ).question;
    const viewer = await server.apiToken(localId(tenantId), 'VIEWER', uniqueName('viewer'));
    const stranger = await server.apiToken(localId(await createTenant(server, uniqueName('other'))), 'ADMIN');

    expect(await answer(operator, { questionId: choiceOnly.id, choice: 'maybe' })).toMatchObject({
      __typename: 'ValidationError',
      field: 'input.choice',
    });
    expect(await answer(operator, { questionId: choiceOnly.id, text: 'yes please' })).toMatchObject({
      __typename: 'ValidationError',
      field: 'input.text',
    });
    expect(await answer(operator, { questionId: choiceOnly.id })).toMatchObject({ __typename: 'ValidationError' });
    expect(await answer(operator, { questionId: choiceOnly.id, choice: 'yes', text: 'yes' })).toMatchObject({
      __typename: 'ValidationError',
    });
    expect(await answer(operator, { questionId: wordsToo.id, text: '   ' })).toMatchObject({
      __typename: 'ValidationError',
      field: 'input.text',
    });
    expect(await answer(viewer, { questionId: choiceOnly.id, choice: 'yes' })).toMatchObject({
      __typename: 'ForbiddenError',
    });
    expect(await answer(stranger, { questionId: choiceOnly.id, choice: 'yes' })).toMatchObject({
      __typename: 'NotFoundError',
    });
    expect(await answer(operator, { questionId: 'not-an-id', choice: 'yes' })).toMatchObject({
      __typename: 'ValidationError',
      field: 'input.questionId',
    });
    expect(await answer(operator, { questionId: sandboxId, choice: 'yes' })).toMatchObject({
      __typename: 'ValidationError',
      field: 'input.questionId',
    });
    expect((await sandboxQuestions(sandboxId)).openQuestions).toHaveLength(2);

    const chosen = await answer(operator, { questionId: choiceOnly.id, choice: 'no' });
    expect(chosen).toMatchObject({
      __typename: 'QuestionPayload',
      question: { status: 'ANSWERED', answerChoice: 'no', answerText: null, answer: { kind: 'ANSWER', body: 'no' } },
    });
    const written = await answer(operator, { questionId: wordsToo.id, text: 'because\nit is late' });
    expect(written).toMatchObject({
      question: { status: 'ANSWERED', answerChoice: null, answerText: 'because\nit is late' },
    });
    expect(written.question.answeredAt).toBeTruthy();
    expect(written.question.answeredBy).toMatch(/^operator-/);
  });

  it('lets exactly one of many concurrent answers win; the others get QuestionClosedError', async () => {
    const { worker, sandboxId, token, operator } = await running();
    const asked = await ask(worker, {
      sandboxId,
      fencingToken: token,
      prompt: 'Which region?',
      options: ['eu', 'us', 'ap'],
      threadId: 'regions',
      channel: 'ops',
    });
    const choices = ['eu', 'us', 'ap'];
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => answer(operator, { questionId: asked.question.id, choice: choices[i % 3] })),
    );
    const byType = new Map<string, number>();
    for (const r of results) byType.set(r.__typename, (byType.get(r.__typename) ?? 0) + 1);
    expect(Object.fromEntries(byType)).toEqual({ QuestionPayload: 1, QuestionClosedError: 11 });
    for (const r of results.filter((r) => r.__typename === 'QuestionClosedError'))
      expect(r).toMatchObject({ code: 'QUESTION_CLOSED', status: 'ANSWERED' });
    const winner = results.find((r) => r.__typename === 'QuestionPayload')?.question;

    const view = await sandboxQuestions(sandboxId);
    const answers = view.messages.edges.map((e) => e.node).filter((m) => m.kind === 'ANSWER');
    expect(answers).toHaveLength(1);
    // In the question's thread and channel, linked to it, saying the winning choice.
    expect(answers[0]).toMatchObject({
      threadId: 'regions',
      channel: 'ops',
      senderKind: 'USER',
      body: winner?.answerChoice,
      question: { id: asked.question.id },
    });
    expect(view.openQuestions).toEqual([]);
    expect(view.agent?.phase).toBe('THINKING');
  });

  it('keeps the agent WAITING_FOR_INPUT until the last open question is answered', async () => {
    const { worker, sandboxId, token, operator } = await running();
    const first = (await ask(worker, { sandboxId, fencingToken: token, prompt: 'First?', options: ['a'] })).question;
    const second = (await ask(worker, { sandboxId, fencingToken: token, prompt: 'Second?', options: ['b'] })).question;
    expect((await sandboxQuestions(sandboxId)).openQuestions.map((q) => q.prompt)).toEqual(['First?', 'Second?']);

    expect((await answer(operator, { questionId: second.id, choice: 'b' })).__typename).toBe('QuestionPayload');
    let view = await sandboxQuestions(sandboxId);
    expect(view.openQuestions.map((q) => q.id)).toEqual([first.id]);
    expect(view.agent?.phase).toBe('WAITING_FOR_INPUT');

    expect((await answer(operator, { questionId: first.id, choice: 'a' })).__typename).toBe('QuestionPayload');
    view = await sandboxQuestions(sandboxId);
    expect(view.openQuestions).toEqual([]);
    expect(view.agent).toEqual({ phase: 'THINKING', activity: null });
    // Answering again is a conflict, and changes nothing.
    expect(await answer(operator, { questionId: first.id, choice: 'a' })).toMatchObject({
      __typename: 'QuestionClosedError',
      status: 'ANSWERED',
    });
    expect(view.messages.edges.map((e) => e.node.kind)).toEqual(['QUESTION', 'QUESTION', 'ANSWER', 'ANSWER']);
    expect((await sandboxQuestions(sandboxId)).messages.totalCount).toBe(4);
  });

  it('cancels open questions when the sandbox stops, fails or is deleted', async () => {
    for (const end of ['stop', 'fail', 'delete'] as const) {
      const { worker, sandboxId, token, operator } = await running();
      const asked = (await ask(worker, { sandboxId, fencingToken: token, prompt: `Before ${end}?`, options: ['ok'] }))
        .question;
      if (end === 'fail') {
        expect((await reportStatus(server, worker, sandboxId, token, 'FAILED', { exitCode: 1 })).__typename).toBe(
          'SandboxPayload',
        );
      } else {
        const field = end === 'stop' ? 'stopSandbox' : 'deleteSandbox';
        const res = await server.gql<Record<string, Typed>>(
          `mutation($input: SandboxRefInput!) { ${field}(input: $input) { __typename ${ERROR_FIELDS} } }`,
          { input: { sandboxId } },
          operator,
        );
        expect(dataOf(res)[field].__typename).toBe('SandboxPayload');
      }
      const closed = await answer(operator, { questionId: asked.id, choice: 'ok' });
      if (end === 'delete') {
        // A deleted sandbox's question reads as missing, like the sandbox.
        expect(closed).toMatchObject({ __typename: 'NotFoundError' });
      } else {
        expect(closed, end).toMatchObject({ __typename: 'QuestionClosedError', status: 'CANCELLED' });
        expect((await sandboxQuestions(sandboxId)).openQuestions).toEqual([]);
      }
      const node = dataOf(
        await server.gql<{ node: { status: string } | null }>(
          'query($id: ID!) { node(id: $id) { ... on Question { status } } }',
          { id: asked.id },
        ),
      ).node;
      expect(node, end).toEqual(end === 'delete' ? null : { status: 'CANCELLED' });
    }
  });

  it('lists the open questions of a page of sandboxes, with their messages, in as many statements for 6 as for 2', async () => {
    const LIST = `query($t: ID!) { sandboxes(tenantId: $t, first: 100) { edges { node { id
      openQuestions { id prompt options message { id kind } }
      lastMessage { kind question { id status answerChoice } } } } } }`;
    async function seed(count: number): Promise<string> {
      const tenantId = await createTenant(server, uniqueName('n1q'));
      const worker = await registerWorker(server, uniqueName('w'), { tenantId });
      for (let i = 0; i < count; i++) {
        const { sandboxId, token, operator } = await running(60, { tenantId, worker });
        for (const prompt of ['one?', 'two?'])
          await ask(worker, { sandboxId, fencingToken: token, prompt, options: ['y'] });
        const open = (await sandboxQuestions(sandboxId)).openQuestions;
        // Each sandbox keeps one open question; the other is answered, so its last message is an ANSWER.
        expect((await answer(operator, { questionId: open[1].id, choice: 'y' })).__typename).toBe('QuestionPayload');
      }
      return tenantId;
    }
    async function statementsFor(tenantId: string) {
      recording = [];
      const res = await server.gql<{
        sandboxes: { edges: { node: { openQuestions: QuestionView[]; lastMessage: { kind: string } } }[] };
      }>(LIST, { t: tenantId });
      const count = recording.length;
      recording = null;
      return { count, nodes: dataOf(res).sandboxes.edges.map((e) => e.node) };
    }
    const [few, many] = [await seed(2), await seed(6)];
    await statementsFor(few);
    const small = await statementsFor(few);
    const large = await statementsFor(many);
    expect(small.nodes).toHaveLength(2);
    expect(large.nodes).toHaveLength(6);
    for (const node of large.nodes) {
      expect(node.openQuestions).toMatchObject([{ prompt: 'one?', message: { kind: 'QUESTION' } }]);
      expect(node.lastMessage).toMatchObject({ kind: 'ANSWER', question: { status: 'ANSWERED', answerChoice: 'y' } });
    }
    expect(large.count).toBe(small.count);
  });
});
