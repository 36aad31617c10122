import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  createClient,
  MessageAddedDocument,
  TenantEventsDocument,
  WorkerAssignmentsDocument,
} from '../../src/client/index.js';
import { readServerSentEvents } from '../../src/client/sse.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  registerWorker,
  reportStatus,
  uniqueName,
} from '../helpers/fleet.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';
import { take } from '../helpers/streams.js';

/** Reads GraphQL-over-SSE `next` payloads from a subscription request until `count` arrive. */
async function sseTake(
  url: string,
  token: string,
  query: string,
  variables: Record<string, unknown>,
  count: number,
): Promise<{ data?: Record<string, unknown>; errors?: { extensions?: { code?: string } }[] }[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 15_000);
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
    signal: controller.signal,
  });
  const results: { data?: Record<string, unknown>; errors?: { extensions?: { code?: string } }[] }[] = [];
  try {
    for await (const { event, data } of readServerSentEvents(res.body as unknown as AsyncIterable<Uint8Array>)) {
      if (event === 'next' && data) results.push(JSON.parse(data));
      if (event === 'complete' || results.length >= count) return results;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return results;
}

describe.each(DRIVERS)('subscriptions on %s', (kind) => {
  let server: TestServer;
  let tenantId: string;

  beforeAll(async () => {
    server = await startTestServer(kind);
    tenantId = await createTenant(server, uniqueName('subs'), {
      quota: { maxSandboxes: 50, maxCpuMillis: 100_000, maxMemoryMb: 100_000 },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  const client = (token = server.adminToken) =>
    createClient({ url: server.app.graphqlUrl, token, webSocketImpl: WebSocket });

  it('streams a tenant’s events live over graphql-ws, with current data for each event', async () => {
    const api = client();
    const stream = api.subscribe(TenantEventsDocument, { tenantId, types: ['SANDBOX_STATUS_CHANGED'] });
    const worker = await registerWorker(server, uniqueName('w'));
    const collected: {
      type: string;
      data: unknown;
      sandbox?: { id: string; status: string } | null;
      cursor: string;
    }[] = [];
    const done = (async () => {
      for await (const { tenantEvents } of stream) {
        collected.push(tenantEvents);
        if ((tenantEvents.data as { to?: string }).to === 'STARTING') break;
      }
    })();
    await new Promise((r) => setTimeout(r, 300)); // let the subscription start
    const created = await createSandbox(server, tenantId, { name: 'live-one' });
    const sandboxId = created.sandbox.id;
    expect(created.sandbox.status).toBe('SCHEDULED');
    await new Promise((r) => setTimeout(r, 300)); // the SCHEDULED event is delivered before the next change
    const lease = await acquireLease(server, worker, sandboxId);
    await reportStatus(server, worker, sandboxId, lease.lease.fencingToken, 'STARTING');
    await Promise.race([
      done,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no STARTING event')), 15_000)),
    ]);
    const mine = collected.filter((e) => e.sandbox?.id === sandboxId);
    // Each event resolves the sandbox as it is when that event is delivered, not as first cached.
    expect(mine[0]?.sandbox?.status).toBe('SCHEDULED');
    expect(mine.at(-1)?.sandbox?.status).toBe('STARTING');
    expect(new Set(collected.map((e) => e.cursor)).size).toBe(collected.length);
    await api.close();
  });

  it('replays after a cursor, then goes live, with no gap and no duplicate', async () => {
    const api = client();
    const first = await createSandbox(server, tenantId, { name: 'replay-a' });
    // Find the cursor of the first event of this tenant via the events query, then replay from it.
    const page = await server.gql<{
      events: { edges: { cursor: string; node: { type: string; sandbox: { id: string } | null } }[] };
    }>('query($t: ID!) { events(tenantId: $t, first: 100) { edges { cursor node { type sandbox { id } } } } }', {
      t: tenantId,
    });
    const edges = page.body.data?.events.edges ?? [];
    const mine = edges.filter((e) => e.node.sandbox?.id === first.sandbox.id);
    expect(mine.length).toBeGreaterThan(0);
    const before = edges[edges.indexOf(mine[0]) - 1]?.cursor ?? null;
    const stream = api.subscribe(TenantEventsDocument, { tenantId, after: before });
    const collected = take(stream, mine.length + 1, { close: true });
    const second = await createSandbox(server, tenantId, { name: 'replay-b' });
    const events = (await collected).map((e) => e.tenantEvents);
    expect(events.slice(0, mine.length).map((e) => e.cursor)).toEqual(mine.map((e) => e.cursor));
    expect(events.at(-1)?.sandbox?.id).toBe(second.sandbox.id);
    await api.close();
  });

  it('streams over SSE too, and refuses an invalid cursor clearly', async () => {
    const query =
      'subscription($t: ID!, $after: String) { tenantEvents(tenantId: $t, after: $after) { type cursor sandbox { name } } }';
    const pending = sseTake(server.app.graphqlUrl, server.adminToken, query, { t: tenantId }, 1);
    await new Promise((r) => setTimeout(r, 300));
    await createSandbox(server, tenantId, { name: 'over-sse' });
    const results = await pending;
    expect(results[0]?.data).toMatchObject({ tenantEvents: { sandbox: { name: 'over-sse' } } });

    const bad = await sseTake(
      server.app.graphqlUrl,
      server.adminToken,
      query,
      { t: tenantId, after: 'not-a-cursor' },
      1,
    );
    expect(bad[0]?.errors?.[0]?.extensions?.code).toBe('INVALID_CURSOR');
  });

  it('delivers messages and assignments only to those who may see them', async () => {
    const otherTenant = await createTenant(server, uniqueName('other'));
    const outsider = await server.apiToken(localId(otherTenant), 'ADMIN');
    const created = await createSandbox(server, tenantId, { name: 'private' });
    const sandboxId = created.sandbox.id;

    // Another tenant's member cannot subscribe to this sandbox: it reads as missing.
    const refused = client(outsider).subscribe(MessageAddedDocument, { sandboxId });
    await expect(take(refused, 1, { close: true })).rejects.toMatchObject({ error: { code: 'NOT_FOUND' } });

    const viewer = await server.apiToken(localId(tenantId), 'VIEWER');
    const messages = client(viewer).subscribe(MessageAddedDocument, { sandboxId });
    const got = take(messages, 1, { close: true });
    await new Promise((r) => setTimeout(r, 300));
    await server.gql('mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename } }', {
      i: { sandboxId, body: 'hello agent' },
    });
    const [message] = await got;
    expect(message.messageAdded).toMatchObject({ body: 'hello agent', senderKind: 'USER' });
    expect(message.messageAdded.eventCursor).toBeTruthy();

    // A worker dedicated to the other tenant is placed first for that tenant's sandboxes.
    const worker = await registerWorker(server, uniqueName('assign'), { tenantId: otherTenant });
    const assignments = client(worker.token).subscribe(WorkerAssignmentsDocument, { workerId: worker.id });
    const assigned = take(assignments, 1, { close: true });
    await new Promise((r) => setTimeout(r, 300));
    const placed = await createSandbox(server, otherTenant, { name: 'for-worker' });
    const [event] = await assigned;
    expect(event.workerAssignments).toMatchObject({
      type: 'SANDBOX_ASSIGNED',
      sandbox: { id: placed.sandbox.id, status: 'SCHEDULED' },
    });

    const foreign = client(worker.token).subscribe(WorkerAssignmentsDocument, {
      workerId: (await registerWorker(server, uniqueName('x'))).id,
    });
    await expect(take(foreign, 1, { close: true })).rejects.toMatchObject({ error: { code: 'FORBIDDEN' } });
  });
});
