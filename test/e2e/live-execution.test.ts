import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import { createSandbox, createTenant, dataOf, registerWorker, uniqueName } from '../helpers/fleet.js';
import { isRequestStatement, startTestServer, subscribersReach, type TestServer } from '../helpers/server.js';

/**
 * Shared execution of live subscriptions: subscribers with the same operation, variables and
 * access share one execution per event. What a subscriber receives must be exactly what it
 * would receive executing alone, and the database work must not grow with the subscribers.
 */
const SCALAR = 'subscription($t: ID!) { tenantEvents(tenantId: $t, types: [MESSAGE_POSTED]) { cursor occurredAt } }';
const DASHBOARD = `subscription($t: ID!) { tenantEvents(tenantId: $t, types: [MESSAGE_POSTED]) {
  cursor type occurredAt
  sandbox { id name status agent { phase activity } worker { id name } }
  message { id body senderKind }
} }`;
const ADMIN_ONLY = `subscription($t: ID!) { tenantEvents(tenantId: $t, types: [MESSAGE_POSTED]) {
  cursor tenant { slug quota { maxSandboxes } usage { sandboxes } }
} }`;
const SEND = 'mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename } }';
const DELIVERY_TIMEOUT_MS = 20_000;

interface Collector {
  results: unknown[];
  /** Resolves once `count` results (or an error or completion) arrived. */
  until(count: number): Promise<unknown[]>;
  ended: Promise<'error' | 'complete'>;
  dispose(): void;
}

function collect(client: Client, query: string, variables: Record<string, unknown>): Collector {
  const results: unknown[] = [];
  let wake: () => void = () => undefined;
  let end: (how: 'error' | 'complete') => void = () => undefined;
  const ended = new Promise<'error' | 'complete'>((resolve) => {
    end = resolve;
  });
  const dispose = client.subscribe(
    { query, variables },
    {
      next: (value) => {
        results.push(value);
        wake();
      },
      error: () => end('error'),
      complete: () => end('complete'),
    },
  );
  return {
    results,
    ended,
    dispose,
    async until(count) {
      const deadline = Date.now() + DELIVERY_TIMEOUT_MS;
      while (results.length < count && Date.now() < deadline) {
        await Promise.race([new Promise<void>((r) => (wake = r)), new Promise((r) => setTimeout(r, 100))]);
      }
      return results;
    },
  };
}

async function liveMetric(server: TestServer, name: string): Promise<number> {
  const text = await (await fetch(`${server.app.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? Number.NaN);
}

describe.each(DRIVERS)('shared execution of live subscriptions on %s', (kind) => {
  let shared: TestServer;
  let alone: TestServer;
  let tenantId: string;
  let sandboxId: string;
  let worker: { id: string; token: string };
  const statements: string[] = [];

  const apiToken = async (role: 'VIEWER' | 'ADMIN') => {
    const res = await shared.gql<{ createApiToken: { token: string; apiToken: { id: string } } }>(
      'mutation($i: CreateApiTokenInput!) { createApiToken(input: $i) { ... on CreateApiTokenPayload { token apiToken { id } } } }',
      { i: { tenantId, role, ttlSeconds: 3600 } },
    );
    return dataOf(res).createApiToken;
  };
  const send = async (body: string) => {
    const res = await shared.gql<{ sendMessage: { __typename: string } }>(SEND, { i: { sandboxId, body } });
    expect(dataOf(res).sendMessage.__typename).toBe('MessagePayload');
  };

  beforeAll(async () => {
    shared = await startTestServer(kind, { onQuery: (sql) => statements.push(sql) });
    // A second server on the same database, each subscriber executing alone: the reference.
    alone = await startTestServer(kind, {
      databaseUrl: shared.databaseUrl,
      adminToken: shared.adminToken,
      env: { FLOTILLA_SHARED_SUBSCRIPTION_EXECUTION: 'false' },
    });
    tenantId = await createTenant(shared, uniqueName('live'), {
      quota: { maxSandboxes: 10, maxCpuMillis: 100_000, maxMemoryMb: 100_000 },
    });
    worker = await registerWorker(shared, uniqueName('w'));
    const created = await createSandbox(shared, tenantId, { name: 'watched' });
    sandboxId = created.sandbox.id;
  });
  afterAll(async () => {
    await alone?.close();
    await shared?.close();
  });

  it('gives every role and selection exactly the payloads it gets executing alone', async () => {
    const admin = shared.adminToken;
    const viewer = (await apiToken('VIEWER')).token;
    const otherViewer = (await apiToken('VIEWER')).token;
    const tenantAdmin = (await apiToken('ADMIN')).token;
    const cases = [
      ...[admin, viewer, otherViewer, tenantAdmin].flatMap((token) =>
        [SCALAR, DASHBOARD, ADMIN_ONLY].map((query) => ({ token, query })),
      ),
    ];
    const vars = { t: tenantId };
    const onShared = cases.map(({ token, query }) => collect(shared.ws(token), query, vars));
    const onAlone = cases.map(({ token, query }) => collect(alone.ws(token), query, vars));
    await subscribersReach(shared, cases.length);
    await subscribersReach(alone, cases.length);
    const executionsBefore = await liveMetric(shared, 'flotilla_live_executions');

    const events = 3;
    for (let i = 0; i < events; i++) await send(`hello ${i}`);
    // The second server hears another in-process bus: have its hub read the log now.
    await alone.app.events().settle();

    for (const [i, c] of cases.entries()) {
      const got = await onShared[i].until(events);
      const expected = await onAlone[i].until(events);
      expect(got).toHaveLength(events);
      expect(got, `${c.query.slice(0, 60)}…`).toEqual(expected);
    }
    // The dashboard selection really read the sandbox, its worker and the message.
    const dashboard = onShared[1].results[0] as { data: { tenantEvents: { message: { body: string } } } };
    expect(dashboard.data.tenantEvents.message.body).toBe('hello 0');
    // A viewer cannot read the quota: the field is refused for viewers, and only for them.
    const viewerAdminOnly = onShared[5].results[0] as { errors?: unknown[] };
    const adminAdminOnly = onShared[2].results[0] as { errors?: unknown[] };
    expect(adminAdminOnly.errors).toBeUndefined();
    expect(JSON.stringify(viewerAdminOnly)).toEqual(JSON.stringify(onAlone[5].results[0]));

    // The two viewers have the same access: they share groups. Executions: events × groups, not × subscribers.
    const groups = 3 * 3; // admin, viewer (both viewer tokens), tenant admin × three selections
    expect(await liveMetric(shared, 'flotilla_live_groups')).toBe(groups);
    expect((await liveMetric(shared, 'flotilla_live_executions')) - executionsBefore).toBe(events * groups);
    for (const c of [...onShared, ...onAlone]) c.dispose();
    await subscribersReach(shared, 0);
    await subscribersReach(alone, 0);
    expect(await liveMetric(shared, 'flotilla_live_groups')).toBe(0);
  });

  it('gives a worker token exactly its own assignments, with what it may see of them', async () => {
    const query = `subscription($w: ID!) { workerAssignments(workerId: $w) {
      cursor type sandbox { id name status tenant { slug } worker { id name } } worker { id name }
    } }`;
    const onShared = [collect(shared.ws(worker.token), query, { w: worker.id })];
    const onAlone = [collect(alone.ws(worker.token), query, { w: worker.id })];
    // The platform admin may follow the worker too: a second group, same event.
    onShared.push(collect(shared.ws(shared.adminToken), query, { w: worker.id }));
    onAlone.push(collect(alone.ws(shared.adminToken), query, { w: worker.id }));
    await subscribersReach(shared, 2);
    await subscribersReach(alone, 2);
    const created = await createSandbox(shared, tenantId, { name: 'assigned' });
    expect(created.sandbox.status).toBe('SCHEDULED');
    await alone.app.events().settle();
    for (const [i, stream] of onShared.entries()) {
      const got = await stream.until(1);
      expect(got).toHaveLength(1);
      expect(got).toEqual(await onAlone[i].until(1));
    }
    expect(JSON.stringify(onShared[0].results[0])).toContain('"name":"assigned"');
    for (const c of [...onShared, ...onAlone]) c.dispose();
    await subscribersReach(shared, 0);
    await subscribersReach(alone, 0);
  });

  it('reads the database a fixed number of times per event, however many subscribe', async () => {
    const viewer = (await apiToken('VIEWER')).token;
    const statementsFor = async (subscribers: number, tokens = [viewer, shared.adminToken]) => {
      const sockets = tokens.map((token) => shared.ws(token));
      const streams = Array.from({ length: subscribers }, (_, i) =>
        collect(sockets[i % sockets.length], DASHBOARD, { t: tenantId }),
      );
      await subscribersReach(shared, subscribers);
      // A first event, fully delivered, so the measured one starts from a quiet server.
      await send('ping');
      for (const s of streams) await s.until(1);
      await shared.app.events().settle();
      statements.length = 0;
      const marker = `count ${subscribers}`;
      await send(marker);
      for (const s of streams) await s.until(2);
      await shared.app.events().settle();
      const reads = statements.filter((sql) => isRequestStatement(sql) && /\bselect\b/i.test(sql)).length;
      for (const s of streams) {
        expect(s.results).toHaveLength(2);
        expect(JSON.stringify(s.results[1])).toContain(marker);
        s.dispose();
      }
      for (const socket of sockets) await socket.dispose();
      await subscribersReach(shared, 0);
      return reads;
    };
    const few = await statementsFor(2);
    const many = await statementsFor(40);
    expect(few).toBeGreaterThan(0);
    expect(many).toBe(few);
    // The viewer's and the admin's groups share the batch's reads: one group reads as much as two.
    const oneGroup = await statementsFor(20, [shared.adminToken]);
    expect(few).toBe(oneGroup);
  });

  it('ends a revoked member of a group at once; the rest of the group goes on', async () => {
    const kept = await apiToken('VIEWER');
    const revoked = await apiToken('VIEWER');
    const keptStream = collect(shared.ws(kept.token), DASHBOARD, { t: tenantId });
    const revokedStream = collect(shared.ws(revoked.token), DASHBOARD, { t: tenantId });
    await subscribersReach(shared, 2);
    await send('before');
    await keptStream.until(1);
    await revokedStream.until(1);

    const res = await shared.gql<{ revokeToken: { __typename: string } }>(
      'mutation($i: RevokeTokenInput!) { revokeToken(input: $i) { __typename } }',
      { i: { tokenId: revoked.apiToken.id } },
    );
    expect(dataOf(res).revokeToken.__typename).toBe('RevokeTokenPayload');
    await send('after');
    await keptStream.until(2);
    await shared.app.events().settle();
    expect(await revokedStream.ended).toBeDefined();
    expect(JSON.stringify(keptStream.results[1])).toContain('after');
    expect(revokedStream.results).toHaveLength(1);
    expect(JSON.stringify(revokedStream.results)).not.toContain('after');
    keptStream.dispose();
  });

  it('lets a member whose stream the hub ends (revoked on another replica) leave its group', async () => {
    const other = await startTestServer(kind, { databaseUrl: shared.databaseUrl, adminToken: shared.adminToken });
    try {
      const revoked = await apiToken('VIEWER');
      // On the other replica the socket stays open: the hub ends the stream itself, by an error.
      const stream = collect(other.ws(revoked.token), DASHBOARD, { t: tenantId });
      await subscribersReach(other, 1);
      expect(await liveMetric(other, 'flotilla_live_groups')).toBe(1);
      const res = await shared.gql<{ revokeToken: { __typename: string } }>(
        'mutation($i: RevokeTokenInput!) { revokeToken(input: $i) { __typename } }',
        { i: { tokenId: revoked.apiToken.id } },
      );
      expect(dataOf(res).revokeToken.__typename).toBe('RevokeTokenPayload');
      await other.app.events().settle();
      expect(await stream.ended).toBe('error');
      await subscribersReach(other, 0);
      expect(await liveMetric(other, 'flotilla_live_groups')).toBe(0);
    } finally {
      await other.close();
    }
  });
});
