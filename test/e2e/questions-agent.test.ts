import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import {
  AnswerQuestionDocument,
  CreateSandboxDocument,
  createClient,
  type FlotillaClient,
  type MessageFieldsFragment,
  MessagesDocument,
  OpenQuestionsDocument,
  SandboxDocument,
  type SandboxFieldsFragment,
} from '../../src/client/index.js';
import { WorkerAgent } from '../../src/worker/agent.js';
import { DRIVERS } from '../helpers/databases.js';
import { createTenant, type RegisteredWorker, registerWorker, uniqueName } from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** Real processes take real time; these bound each wait. */
const WAIT_MS = 20_000;
const POLL_MS = 100;
const HEARTBEAT_MS = 500;
/** The example agent: prints a question status line, reads the answer line from stdin, prints it. */
const ASK_AGENT = join(process.cwd(), 'examples', 'ask-agent.mjs');

/** The reference worker agent runs a real process that asks through its status line and is answered on stdin. */
describe.each(DRIVERS)('questions through the worker agent on %s', (kind) => {
  let server: TestServer;
  let sdk: FlotillaClient;
  const agents: WorkerAgent[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' } });
    sdk = createClient({ url: server.app.graphqlUrl, token: server.adminToken, webSocketImpl: WebSocket });
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
  });
  afterAll(async () => {
    await sdk?.close();
    await server?.close();
  });

  async function fleet(): Promise<{ tenantId: string; worker: RegisteredWorker }> {
    const tenantId = await createTenant(server, uniqueName('ask'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId, cpuMillis: 4000, memoryMb: 8192 });
    const agent = new WorkerAgent({
      url: server.app.graphqlUrl,
      token: worker.token,
      webSocketImpl: WebSocket,
      heartbeatIntervalMs: HEARTBEAT_MS,
    });
    agents.push(agent);
    await agent.start();
    return { tenantId, worker };
  }

  async function create(tenantId: string, args: string[]): Promise<string> {
    const res = await sdk.mutate(CreateSandboxDocument, {
      input: {
        tenantId,
        name: uniqueName('asker'),
        image: 'local/process',
        command: [process.execPath, ASK_AGENT, ...args],
        // Node reserves far more address space than it uses; the limit follows memory.
        resources: { cpuMillis: 250, memoryMb: 2048 },
      },
    });
    if (!res.ok || res.data.createSandbox.__typename !== 'SandboxPayload') throw new Error(JSON.stringify(res));
    return res.data.createSandbox.sandbox.id;
  }

  async function sandbox(id: string): Promise<SandboxFieldsFragment> {
    const res = await sdk.query(SandboxDocument, { id });
    if (!res.ok || !res.data.sandbox) throw new Error(res.ok ? 'sandbox not found' : res.error.message);
    return res.data.sandbox;
  }

  async function history(id: string): Promise<MessageFieldsFragment[]> {
    const res = await sdk.query(MessagesDocument, { sandboxId: id, first: 100 });
    if (!res.ok) throw new Error(res.error.message);
    return res.data.messages.edges.map((e) => e.node);
  }

  const agentLines = (messages: MessageFieldsFragment[]) =>
    messages.filter((m) => m.senderKind === 'AGENT' && m.kind === 'MESSAGE').flatMap((m) => m.body.split('\n'));

  /** Waits until the process's question is open, and returns it. */
  async function openQuestion(id: string) {
    return vi.waitFor(
      async () => {
        const res = await sdk.query(OpenQuestionsDocument, { sandboxId: id });
        const open = res.ok ? (res.data.sandbox?.openQuestions ?? []) : [];
        if (open.length !== 1) throw new Error(`${open.length} open questions`);
        return open[0];
      },
      { timeout: WAIT_MS, interval: POLL_MS },
    );
  }

  it('posts the process’s question, waits for input, and writes the chosen answer to its stdin as one JSON line', async () => {
    const { tenantId } = await fleet();
    const id = await create(tenantId, ['Deploy to production?', 'yes,no']);
    const question = await openQuestion(id);
    expect(question).toMatchObject({
      prompt: 'Deploy to production?',
      options: ['yes', 'no'],
      allowFreeText: false,
      status: 'OPEN',
      message: { channel: 'agent', threadId: 'main' },
    });
    expect((await sandbox(id)).agent?.phase).toBe('WAITING_FOR_INPUT');
    // What it printed before asking is posted before the question; the question line itself is not output.
    await vi.waitFor(
      async () =>
        expect((await history(id)).map((m) => [m.kind, m.body])).toEqual([
          ['MESSAGE', 'asker: I need a decision before I go on.'],
          ['QUESTION', 'Deploy to production?'],
        ]),
      { timeout: WAIT_MS, interval: POLL_MS },
    );

    const answered = await sdk.mutate(AnswerQuestionDocument, { input: { questionId: question.id, choice: 'yes' } });
    expect(answered.ok && answered.data.answerQuestion.__typename).toBe('QuestionPayload');
    expect((await sandbox(id)).agent?.phase).not.toBe('WAITING_FOR_INPUT');

    await vi.waitFor(
      async () =>
        expect(agentLines(await history(id))).toContain(
          `asker: received ${JSON.stringify({ questionId: question.id, choice: 'yes', text: null })}`,
        ),
      { timeout: WAIT_MS, interval: POLL_MS },
    );
    await vi.waitFor(async () => expect((await sandbox(id)).status).toBe('STOPPED'), {
      timeout: WAIT_MS,
      interval: POLL_MS,
    });
    const lines = agentLines(await history(id));
    expect(lines).toContain('asker: going ahead with yes');
    expect(lines.join('\n')).not.toContain('(not an answer)');
  });

  it('writes a free-text answer of several lines as one JSON line', async () => {
    const { tenantId } = await fleet();
    const id = await create(tenantId, ['What should the release note say?', '', '--free-text']);
    const question = await openQuestion(id);
    expect(question).toMatchObject({ options: [], allowFreeText: true });
    const text = 'Faster starts.\nFewer surprises.';
    const answered = await sdk.mutate(AnswerQuestionDocument, { input: { questionId: question.id, text } });
    expect(answered.ok && answered.data.answerQuestion.__typename).toBe('QuestionPayload');
    await vi.waitFor(
      async () =>
        expect(agentLines(await history(id))).toContain(
          `asker: received ${JSON.stringify({ questionId: question.id, choice: null, text })}`,
        ),
      { timeout: WAIT_MS, interval: POLL_MS },
    );
    await vi.waitFor(async () => expect((await sandbox(id)).status).toBe('STOPPED'), {
      timeout: WAIT_MS,
      interval: POLL_MS,
    });
    expect(agentLines(await history(id)).join('\n')).not.toContain('(not an answer)');
  });
});
