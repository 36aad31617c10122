import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import {
  createClient,
  FatalSubscriptionError,
  MessageAddedDocument,
  TenantEventsDocument,
} from '../../src/client/index.js';
import { acquireLease, createSandbox, createTenant, registerWorker, uniqueName } from '../helpers/fleet.js';
import { type ReplicaProcess, startReplicaProcess } from '../helpers/replica.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { take } from '../helpers/streams.js';

/**
 * Several replicas on one Postgres: each holds its own LISTEN connection and hub, so a write on
 * one reaches subscribers on another, a client resumes on another replica after one dies, and
 * access changes end streams everywhere.
 */
const HS_ISSUER = 'https://sso.test.invalid';
const HS_SECRET = 'replica-test-shared-secret-of-enough-bytes!';
const AUDIENCE = 'flotilla-replicas';
const ISSUERS = JSON.stringify([{ issuer: HS_ISSUER, audience: AUDIENCE, secret: HS_SECRET }]);

/** Starts `flotilla serve` as a real process on the same database; resolves with its GraphQL URL. */
function startReplica(databaseUrl: string): Promise<ReplicaProcess> {
  return startReplicaProcess(databaseUrl, { env: { FLOTILLA_HS256_ISSUERS: ISSUERS } });
}

const settle = () => new Promise((r) => setTimeout(r, 400));

/** How many subscribers a replica's hub holds (read from its /metrics). */
async function subscribersOn(graphqlUrl: string): Promise<number> {
  const text = await (await fetch(new URL('/metrics', graphqlUrl))).text();
  return Number(/^flotilla_event_subscribers (\d+)/m.exec(text)?.[1] ?? 0);
}

/** Waits until a replica's hub holds at least `count` subscribers. */
async function subscribersReachOn(graphqlUrl: string, count: number): Promise<void> {
  await vi.waitFor(async () => expect(await subscribersOn(graphqlUrl)).toBeGreaterThanOrEqual(count), {
    timeout: 20_000,
    interval: 50,
  });
}

describe('replicas on one Postgres', () => {
  let a: TestServer;
  let b: ReplicaProcess;
  let tenantId: string;

  beforeAll(async () => {
    a = await startTestServer('postgres', { env: { FLOTILLA_HS256_ISSUERS: ISSUERS } });
    b = await startReplica(a.databaseUrl);
    tenantId = await createTenant(a, uniqueName('replicas'), {
      quota: { maxSandboxes: 100, maxCpuMillis: 1_000_000, maxMemoryMb: 1_000_000 },
    });
    // Room for every sandbox these tests create (without any worker, createSandbox answers NO_CAPACITY).
    await registerWorker(a, uniqueName('shared'), { cpuMillis: 1_000_000, memoryMb: 1_000_000 });
  });
  afterAll(async () => {
    if (b?.child.exitCode === null) b.child.kill('SIGKILL');
    await a?.close();
  });

  it('delivers a mutation on A to a subscriber on B, over graphql-ws and over SSE', async () => {
    const base = await subscribersOn(b.url);
    const onB = createClient({ url: b.url, token: a.adminToken, webSocketImpl: WebSocket });
    const ws = take(onB.subscribe(TenantEventsDocument, { tenantId, types: ['SANDBOX_STATUS_CHANGED'] }), 1, {
      close: true,
    });
    const sseClient = createClient({ url: b.url, token: a.adminToken, transport: 'sse' });
    const sse = take(sseClient.subscribe(TenantEventsDocument, { tenantId, types: ['SANDBOX_STATUS_CHANGED'] }), 1, {
      close: true,
    });
    // Both streams are open on B (each first reads where it starts, then subscribes).
    await subscribersReachOn(b.url, base + 2);
    const created = await createSandbox(a, tenantId, { name: 'across' });
    const [viaWs] = await ws;
    const [viaSse] = await sse;
    expect(viaWs.tenantEvents.sandbox?.id).toBe(created.sandbox.id);
    expect(viaSse.tenantEvents.cursor).toBe(viaWs.tenantEvents.cursor);
    await onB.close();
  });

  it('delivers an agent message far over the 8000-byte NOTIFY limit whole', async () => {
    const worker = await registerWorker(a, uniqueName('big'));
    const created = await createSandbox(a, tenantId, { name: 'big-message' });
    const sandboxId = created.sandbox.id;
    const lease = await acquireLease(a, worker, created.sandbox.id);
    const onB = createClient({ url: b.url, token: a.adminToken, webSocketImpl: WebSocket });
    const base = await subscribersOn(b.url);
    const got = take(onB.subscribe(MessageAddedDocument, { sandboxId }), 1, { close: true });
    await subscribersReachOn(b.url, base + 1);
    const body = `${'x'.repeat(40_000)}✓`;
    const posted = await a.gql<{ postAgentMessage: { __typename: string } }>(
      'mutation($i: PostAgentMessageInput!) { postAgentMessage(input: $i) { __typename } }',
      { i: { sandboxId, fencingToken: lease.lease.fencingToken, body } },
      worker.token,
    );
    expect(posted.body.data?.postAgentMessage.__typename).toBe('MessagePayload');
    const [message] = await got;
    expect(message.messageAdded.body).toBe(body);
    await onB.close();
  });

  it('ends a removed member’s tenant stream on another replica, saying why, and refuses it afterwards', async () => {
    const slug = uniqueName('members');
    const memberTenant = await createTenant(a, slug);
    await a.gql('mutation($i: AddMemberInput!) { addMember(input: $i) { __typename } }', {
      i: { tenantId: memberTenant, subject: 'sso:alice', role: 'VIEWER' },
    });
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(HS_ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('sso:alice')
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(HS_SECRET));
    const alice = createClient({ url: b.url, token, webSocketImpl: WebSocket, backoffMs: 50 });
    const base = await subscribersOn(b.url);
    const events: string[] = [];
    // What ended the live stream (the SDK then tries again), and what ended the SDK stream for good.
    const endedBy: string[] = [];
    let refused: unknown = null;
    const watching = (async () => {
      try {
        const stream = alice.subscribe(
          TenantEventsDocument,
          { tenantId: memberTenant },
          { onReconnect: (_attempt, err) => endedBy.push((err as Error).message) },
        );
        for await (const { tenantEvents } of stream) events.push(tenantEvents.type);
      } catch (err) {
        refused = err;
      }
    })();
    await subscribersReachOn(b.url, base + 1);
    await createSandbox(a, memberTenant, { name: 'seen' });
    const members = await a.gql<{ tenant: { members: { edges: { node: { id: string; subject: string } }[] } } }>(
      'query($id: ID!) { tenant(id: $id) { members { edges { node { id subject } } } } }',
      { id: memberTenant },
    );
    const memberId = members.body.data?.tenant.members.edges.find((e) => e.node.subject === 'sso:alice')?.node.id;
    await a.gql('mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }', { i: { memberId } });
    // Bounded by the test's timeout only: how soon it ends is a benchmark figure, not a test.
    await watching;
    expect(endedBy[0]).toMatch(/membership of a tenant was removed/);
    expect(refused).toBeInstanceOf(FatalSubscriptionError);
    // Alice now holds no role in any tenant, so the field's declared gate (tenantMember) refuses her.
    expect((refused as FatalSubscriptionError).error.code).toBe('FORBIDDEN');
    const countBefore = events.length;
    await createSandbox(a, memberTenant, { name: 'not-seen' });
    await settle();
    expect(events.length).toBe(countBefore);
    expect(events).toContain('SANDBOX_STATUS_CHANGED');
    await alice.close();
  });

  it('lets a client resume on A with its last cursor after B is killed mid-stream, missing nothing', async () => {
    const resumeTenant = await createTenant(a, uniqueName('resume'), {
      quota: { maxSandboxes: 100, maxCpuMillis: 1_000_000, maxMemoryMb: 1_000_000 },
    });
    const worker = await registerWorker(a, uniqueName('resume-w'), {
      tenantId: resumeTenant,
      cpuMillis: 100_000,
      memoryMb: 100_000,
    });
    const created = await createSandbox(a, resumeTenant, { name: 'chatty' });
    const lease = await acquireLease(a, worker, created.sandbox.id);
    const total = 40;
    const post = (n: number) =>
      a.gql(
        'mutation($i: PostAgentMessageInput!) { postAgentMessage(input: $i) { __typename } }',
        {
          i: { sandboxId: created.sandbox.id, fencingToken: lease.lease.fencingToken, body: `line ${n}` },
        },
        worker.token,
      );

    const onB = createClient({ url: b.url, token: a.adminToken, webSocketImpl: WebSocket, retries: 0 });
    const base = await subscribersOn(b.url);
    const received: { cursor: string; body: string }[] = [];
    const stop = new AbortController();
    const first = (async () => {
      try {
        for await (const { messageAdded } of onB.subscribe(
          MessageAddedDocument,
          { sandboxId: created.sandbox.id },
          { signal: stop.signal },
        )) {
          received.push({ cursor: messageAdded.eventCursor as string, body: messageAdded.body });
          if (received.length === 10) {
            b.child.kill('SIGKILL');
            // What B had sent before it died may still be in flight; the client then gives up on B.
            setTimeout(() => stop.abort(), 500);
          }
        }
      } catch {
        // the replica died; the caller resumes elsewhere below
      }
    })();
    await subscribersReachOn(b.url, base + 1);
    const writing = (async () => {
      for (let n = 0; n < total; n++) await post(n);
    })();
    await Promise.race([first, new Promise((r) => setTimeout(r, 8_000))]);
    void onB.close();
    const last = received.at(-1)?.cursor;
    expect(received.length).toBeGreaterThanOrEqual(10);
    expect(last).toBeTruthy();

    const onA = createClient({ url: a.app.graphqlUrl, token: a.adminToken, webSocketImpl: WebSocket });
    await writing;
    const rest = await take(
      onA.subscribe(MessageAddedDocument, { sandboxId: created.sandbox.id, after: last }),
      total - received.length,
      { close: true },
    );
    const all = [...received.map((r) => r.body), ...rest.map((r) => r.messageAdded.body)];
    expect(all).toEqual(Array.from({ length: total }, (_, n) => `line ${n}`));
    await onA.close();
  });
});
