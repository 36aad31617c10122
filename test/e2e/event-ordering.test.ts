import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, TenantEventsDocument } from '../../src/client/index.js';
import type { LogEvent } from '../../src/events/reader.js';
import { decodeEventCursor } from '../../src/events/reader.js';
import { createSandbox, createTenant, dataOf, registerWorker, uniqueName } from '../helpers/fleet.js';
import { type ReplicaProcess, startReplicaProcess } from '../helpers/replica.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';
import { take } from '../helpers/streams.js';

const SEND =
  'mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename ... on MessagePayload { posted { id eventCursor } } } }';
type Sent = { sendMessage: { __typename: string; posted: { id: string; eventCursor: string } } };

const EVENTS =
  'query($t: ID!, $after: String) { events(tenantId: $t, first: 100, after: $after, types: [MESSAGE_POSTED]) { pageInfo { hasNextPage endCursor } edges { cursor node { message { id } } } } }';
type EventPage = {
  events: {
    pageInfo: { hasNextPage: boolean; endCursor: string | null };
    edges: { cursor: string; node: { message: { id: string } | null } }[];
  };
};

const MESSAGES =
  'query($s: ID!, $after: String) { messages(sandboxId: $s, first: 100, after: $after) { pageInfo { endCursor } edges { cursor node { id body eventCursor } } } }';
type MessagePage = {
  messages: {
    pageInfo: { endCursor: string | null };
    edges: { cursor: string; node: { id: string; body: string; eventCursor: string } }[];
  };
};

/** Every cursor after the previous one in log order (the order a cursor stands for). */
function inCursorOrder(cursors: readonly string[]): boolean {
  return cursors.every((c, i) => i === 0 || BigInt(decodeEventCursor(cursors[i - 1])) < BigInt(decodeEventCursor(c)));
}

/**
 * The event log without a cluster-wide lock: two replicas on one Postgres, many writers in
 * parallel transactions, readers on both. Order is commit order below the oldest running
 * transaction, so nobody skips or repeats an event, and a cursor resumes exactly.
 */
describe('commit-ordered log over two replicas on postgres', () => {
  let a: TestServer;
  let b: TestServer;
  let tenantId: string;

  beforeAll(async () => {
    a = await startTestServer('postgres');
    b = await startTestServer('postgres', { databaseUrl: a.databaseUrl, adminToken: a.adminToken });
    tenantId = await createTenant(a, uniqueName('order'), {
      quota: { maxSandboxes: 100, maxCpuMillis: 1_000_000, maxMemoryMb: 1_000_000 },
    });
    await registerWorker(a, uniqueName('order'), { cpuMillis: 1_000_000, memoryMb: 1_000_000 });
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  async function send(server: TestServer, sandboxId: string, body: string): Promise<Sent['sendMessage']['posted']> {
    const sent = dataOf(await server.gql<Sent>(SEND, { i: { sandboxId, body } })).sendMessage;
    expect(sent.__typename).toBe('MessagePayload');
    return sent.posted;
  }

  it('64 concurrent writers on two replicas: every reader on either sees every event once, in cursor order, and any cursor resumes exactly', async () => {
    const sandboxes = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => (await createSandbox(a, tenantId, { name: `o${i}` })).sandbox.id),
    );
    // A message before the writes: its cursor is where the GraphQL readers start.
    const start = (await send(a, sandboxes[0], 'before')).eventCursor;
    const writers = 64;
    const perWriter = 3;
    const total = writers * perWriter;

    // Readers on both replicas: through GraphQL over graphql-ws (from the cursor before the writes),
    // and on each hub directly, live from now (subscribed before the first write).
    const clients = [a, b].map((s) =>
      createClient({ url: s.app.graphqlUrl, token: a.adminToken, webSocketImpl: WebSocket }),
    );
    const viaGraphql = clients.map((client) =>
      take(client.subscribe(TenantEventsDocument, { tenantId, types: ['MESSAGE_POSTED'], after: start }), total, {
        close: true,
        timeoutMs: 60_000,
      }),
    );
    // "From now" is each hub's position: let both read the message before the writes first.
    await Promise.all([a, b].map((s) => s.app.events().settle()));
    const hubSubs = await Promise.all(
      [a, b].map((s) =>
        s.app.events().subscribe({ match: { tenantId: localId(tenantId), types: ['MESSAGE_POSTED'] } }),
      ),
    );
    const viaHub = hubSubs.map((sub) => take(sub, total, { timeoutMs: 60_000 }));

    // Each writer on its own sandbox (no shared row lock): their transactions really overlap.
    const posted = (
      await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          const ids: string[] = [];
          for (let k = 0; k < perWriter; k++)
            ids.push(localId((await send(w % 2 === 0 ? a : b, sandboxes[w % sandboxes.length], `w${w}-${k}`)).id));
          return ids;
        }),
      )
    ).flat();
    expect(new Set(posted).size).toBe(total);

    const graphqlSeen = (await Promise.all(viaGraphql)).map((events) =>
      events.map((e) => {
        const message = e.tenantEvents.message;
        return { cursor: e.tenantEvents.cursor, messageId: message ? localId(message.id) : null };
      }),
    );
    const hubSeen = (await Promise.all(viaHub)).map((events: LogEvent[]) =>
      events.map((e) => ({ cursor: e.cursor, messageId: e.messageId })),
    );
    const reference = graphqlSeen[0];
    for (const seen of [...graphqlSeen, ...hubSeen]) {
      // Exactly once each, every one of them, in cursor order, and the same sequence on every reader.
      expect(seen.map((e) => e.messageId).sort()).toEqual([...posted].sort());
      expect(inCursorOrder(seen.map((e) => e.cursor))).toBe(true);
      expect(seen).toEqual(reference);
    }
    // The paged log agrees.
    const paged: string[] = [];
    for (let after: string | null = start; ; ) {
      const page: EventPage = dataOf(await b.gql<EventPage>(EVENTS, { t: tenantId, after }));
      paged.push(...page.events.edges.map((e) => e.cursor));
      after = page.events.pageInfo.endCursor;
      if (!page.events.pageInfo.hasNextPage) break;
    }
    expect(paged).toEqual(reference.map((e) => e.cursor));

    // Resuming from any cursor a reader saw, on either replica, gives exactly the rest.
    const cursors = reference.map((e) => e.cursor);
    const resumed = await Promise.all(
      cursors.map((after, i) =>
        (i % 2 === 0 ? a : b).app
          .events()
          .subscribe({ match: { tenantId: localId(tenantId), types: ['MESSAGE_POSTED'] }, after }),
      ),
    );
    const rests = await Promise.all(resumed.map((sub, i) => take(sub, total - i - 1, { timeoutMs: 60_000 })));
    rests.forEach((rest, i) => {
      expect(rest.map((e) => e.cursor)).toEqual(cursors.slice(i + 1));
    });
    // …and nothing more: the next event each one gets is one written afterwards.
    const sentinel = await send(a, sandboxes[0], 'sentinel');
    for (const sub of [...resumed, ...hubSubs]) expect((await take(sub, 1))[0].messageId).toBe(localId(sentinel.id));
    await Promise.all([...resumed, ...hubSubs].map((sub) => sub.return?.()));
    await Promise.all(clients.map((c) => c.close()));
  }, 120_000);
});

/** `flotilla serve` as a real process on the same database, with its clock `skewMs` ahead of this one's. */
function startSkewedReplica(databaseUrl: string, skewMs: number): Promise<ReplicaProcess> {
  const skew = `const now = Date.now; Date.now = () => now() + ${skewMs};`;
  return startReplicaProcess(databaseUrl, {
    nodeFlags: ['--import', `data:text/javascript,${encodeURIComponent(skew)}`],
  });
}

/**
 * Message ids are time-ordered UUIDs made on each replica's clock before commit, so they are not
 * commit order across replicas. Paging must follow the log position instead, or a reader that
 * passed one replica's message skips an earlier-stamped one another replica commits later.
 */
describe('message paging across replicas with skewed clocks on postgres', () => {
  let a: TestServer;
  let ahead: ReplicaProcess;
  let sandboxId: string;

  beforeAll(async () => {
    a = await startTestServer('postgres');
    ahead = await startSkewedReplica(a.databaseUrl, 60_000);
    const tenantId = await createTenant(a, uniqueName('skew'));
    await registerWorker(a, uniqueName('skew'));
    sandboxId = (await createSandbox(a, tenantId, { name: 'skew' })).sandbox.id;
  });
  afterAll(async () => {
    if (ahead?.child.exitCode === null) ahead.child.kill('SIGKILL');
    await a?.close();
  });

  it('a message committed later on a replica whose clock is behind still comes after the reader’s cursor', async () => {
    const onAhead = async (body: string) => {
      const res = await fetch(ahead.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${a.adminToken}` },
        body: JSON.stringify({ query: SEND, variables: { i: { sandboxId, body } } }),
      });
      const sent = ((await res.json()) as { data: Sent }).data.sendMessage;
      expect(sent.__typename).toBe('MessagePayload');
      return sent.posted;
    };
    const page = async (after: string | null) =>
      dataOf(await a.gql<MessagePage>(MESSAGES, { s: sandboxId, after })).messages;

    const first = await onAhead('from the replica ahead');
    const seen = await page(null);
    expect(seen.edges.map((e) => e.node.body)).toEqual(['from the replica ahead']);
    // Stamped a minute earlier than the first, committed after it.
    const late = await a.gql<Sent>(SEND, { i: { sandboxId, body: 'from the replica behind' } });
    const second = dataOf(late).sendMessage.posted;
    expect(second.id < first.id).toBe(true);

    const next = await page(seen.pageInfo.endCursor);
    expect(next.edges.map((e) => e.node.body)).toEqual(['from the replica behind']);
    // A message's cursor is its event's: the same one messageAdded and the events log hand out.
    expect(next.edges[0].cursor).toBe(second.eventCursor);
    expect(seen.edges[0].node.eventCursor).toBe(first.eventCursor);
  });
});
