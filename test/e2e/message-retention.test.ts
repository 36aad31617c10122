import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Message } from '../../src/db/entities/message.js';
import { pruneExpiredMessages } from '../../src/domain/message-retention.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  registerWorker,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { isRequestStatement, localId, startTestServer, type TestServer } from '../helpers/server.js';

const DAY = 24 * 3600;

const UPDATE_RETENTION = `mutation($input: UpdateTenantInput!) { updateTenant(input: $input) { __typename
  ... on UpdateTenantPayload { tenant { messageRetentionDays } } ${ERROR_FIELDS} } }`;
const SEND = `mutation($input: SendMessageInput!) { sendMessage(input: $input) { __typename
  ... on MessagePayload { posted { id eventCursor } } ${ERROR_FIELDS} } }`;
const MESSAGES = `query($id: ID!, $after: String) { messages(sandboxId: $id, first: 100, after: $after) {
  edges { node { body } } } }`;

/**
 * Message retention is per tenant and off by default; the elected domain sweeper deletes messages
 * past it in bounded batches, wakes up for it only when the oldest message of such a tenant falls
 * due, and a message cursor from before what it deleted is refused as expired.
 */
describe.each(DRIVERS)('message retention on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();
  const statements: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, {
      clock,
      onQuery: (sql) => {
        if (isRequestStatement(sql)) statements.push(sql);
      },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function tenantWithSandbox() {
    const tenantId = await createTenant(server, uniqueName('ret'));
    await registerWorker(server, uniqueName('w'), { tenantId });
    const created = await createSandbox(server, tenantId);
    expect(created.__typename, JSON.stringify(created)).toBe('SandboxPayload');
    return { tenantId, sandboxId: created.sandbox.id };
  }

  async function send(sandboxId: string, body: string): Promise<string> {
    const res = dataOf(
      await server.gql<{ sendMessage: { __typename: string; posted: { eventCursor: string } } }>(SEND, {
        input: { sandboxId, body },
      }),
    );
    expect(res.sendMessage.__typename).toBe('MessagePayload');
    return res.sendMessage.posted.eventCursor;
  }

  const bodies = async (sandboxId: string) =>
    (
      await server.app.db.orm.em
        .fork()
        .find(Message, { sandbox: localId(sandboxId) }, { orderBy: { eventTxId: 'asc', eventId: 'asc' } })
    ).map((m) => m.body);

  const setRetention = async (tenantId: string, days: number | null, token?: string) =>
    dataOf(
      await server.gql<{
        updateTenant: { __typename: string; code?: string; tenant?: { messageRetentionDays: number | null } };
      }>(UPDATE_RETENTION, { input: { tenantId, messageRetentionDays: days } }, token),
    ).updateTenant;

  it('is set by a tenant ADMIN only, in whole days from 1 to 3650, and cleared with null', async () => {
    const { tenantId } = await tenantWithSandbox();
    const operator = await server.apiToken(localId(tenantId), 'OPERATOR');
    const admin = await server.apiToken(localId(tenantId), 'ADMIN');
    expect((await setRetention(tenantId, 7, operator)).code).toBe('FORBIDDEN');
    expect(await setRetention(tenantId, 0, admin)).toMatchObject({ __typename: 'ValidationError' });
    expect(await setRetention(tenantId, 3651, admin)).toMatchObject({ __typename: 'ValidationError' });
    expect(await setRetention(tenantId, 7, admin)).toMatchObject({ tenant: { messageRetentionDays: 7 } });
    expect(await setRetention(tenantId, null, admin)).toMatchObject({ tenant: { messageRetentionDays: null } });
  });

  it('is off by default: a sweep far in the future keeps every message', async () => {
    const { tenantId, sandboxId } = await tenantWithSandbox();
    await send(sandboxId, 'kept-1');
    await send(sandboxId, 'kept-2');
    const res = dataOf(
      await server.gql<{ tenant: { messageRetentionDays: number | null } }>(
        'query($id: ID!) { tenant(id: $id) { messageRetentionDays } }',
        { id: tenantId },
      ),
    );
    expect(res.tenant.messageRetentionDays).toBeNull();
    clock.advance(300 * DAY); // within the admin token's year
    const result = await server.app.sweeper.runOnce();
    expect(result?.messagesPruned).toBe(0);
    expect(await bodies(sandboxId)).toEqual(['kept-1', 'kept-2']);
  });

  it("deletes a tenant's messages past its retention in bounded batches, and no other tenant's", async () => {
    const kept = await tenantWithSandbox();
    const pruned = await tenantWithSandbox();
    for (let i = 1; i <= 7; i++) await send(pruned.sandboxId, `old-${i}`);
    await send(kept.sandboxId, 'other-old');
    expect(await setRetention(pruned.tenantId, 2)).toMatchObject({ tenant: { messageRetentionDays: 2 } });
    clock.advance(DAY);
    await send(pruned.sandboxId, 'recent');
    clock.advance(DAY + 60);

    // At most 2 statements of 3 rows each: the oldest 6 go, the rest waits for the next sweep.
    statements.length = 0;
    const first = await pruneExpiredMessages(server.app.db.orm, clock.now(), 2, 0, 3);
    expect(first).toBe(6);
    expect(statements.filter((s) => /delete from ["`]messages["`]/i.test(s))).toHaveLength(2);
    expect(await bodies(pruned.sandboxId)).toEqual(['old-7', 'recent']);

    const swept = await server.app.sweeper.runOnce();
    expect(swept?.messagesPruned).toBe(1);
    expect(await bodies(pruned.sandboxId)).toEqual(['recent']);
    expect(await bodies(kept.sandboxId)).toEqual(['other-old']);
    // Through the API too: the page starts at the oldest message kept.
    const page = dataOf(
      await server.gql<{ messages: { edges: { node: { body: string } }[] } }>(MESSAGES, { id: pruned.sandboxId }),
    );
    expect(page.messages.edges.map((e) => e.node.body)).toEqual(['recent']);
  });

  it('wakes up for the oldest message falling due, and issues no statement before', async () => {
    const { tenantId, sandboxId } = await tenantWithSandbox();
    expect(await setRetention(tenantId, 1)).toMatchObject({ tenant: { messageRetentionDays: 1 } });
    await send(sandboxId, 'due-tomorrow');
    await server.app.sweeper.runOnce();
    statements.length = 0;
    for (let i = 0; i < 20; i++) {
      clock.advance(3600 - 10);
      await server.app.sweeper.runIfDue();
    }
    // 20 hours of passes: the sweeper never looked for messages to prune (its due-time read is one
    // statement it makes anyway, at most once a minute).
    const pruning = (sql: string) => /["`](messages|message_retention_days)["`]/.test(sql);
    expect(statements.filter(pruning)).toEqual([]);
    expect(await bodies(sandboxId)).toEqual(['due-tomorrow']);
    clock.advance(5 * 3600);
    const result = await server.app.sweeper.runIfDue();
    // This one, and any other tenant's that fell due meanwhile.
    expect(result?.messagesPruned).toBeGreaterThanOrEqual(1);
    expect(statements.filter(pruning).length).toBeGreaterThan(0);
    expect(await bodies(sandboxId)).toEqual([]);
  });

  it('refuses a message cursor from before pruned messages as expired, and pages on from a kept one', async () => {
    const { tenantId, sandboxId } = await tenantWithSandbox();
    const first = await send(sandboxId, 'first');
    const second = await send(sandboxId, 'second');
    const newestPruned = await send(sandboxId, 'third');
    expect(await setRetention(tenantId, 1)).toMatchObject({ tenant: { messageRetentionDays: 1 } });
    clock.advance(DAY + 60);
    const kept = await send(sandboxId, 'fourth');
    await send(sandboxId, 'fifth');
    await server.app.sweeper.runOnce();
    expect(await bodies(sandboxId)).toEqual(['fourth', 'fifth']);

    // Messages after these cursors were deleted: paging on would skip them silently.
    for (const after of [first, second]) {
      const res = await server.gql(MESSAGES, { id: sandboxId, after });
      expect(res.body.errors?.[0]?.extensions?.code, JSON.stringify(res.body)).toBe('INVALID_CURSOR');
    }
    // After the newest pruned message nothing is missing; after a kept one, paging goes on.
    const pageAfter = async (after: string) =>
      dataOf(
        await server.gql<{ messages: { edges: { node: { body: string } }[] } }>(MESSAGES, { id: sandboxId, after }),
      ).messages.edges.map((e) => e.node.body);
    expect(await pageAfter(newestPruned)).toEqual(['fourth', 'fifth']);
    expect(await pageAfter(kept)).toEqual(['fifth']);

    // A replay of the live stream from before the pruned messages is refused the same way.
    const client = server.ws();
    const error = await new Promise<unknown>((resolve) => {
      client.subscribe(
        {
          query: 'subscription($id: ID!, $after: String) { messageAdded(sandboxId: $id, after: $after) { body } }',
          variables: { id: sandboxId, after: second },
        },
        { next: (value) => resolve(value.errors ?? value), error: resolve, complete: () => resolve('complete') },
      );
    });
    expect(JSON.stringify(error)).toContain('INVALID_CURSOR');
  });
});

/** The platform default (FLOTILLA_MESSAGE_RETENTION_SECONDS) applies where a tenant set none. */
describe.each(DRIVERS)('platform message retention on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer(kind, { clock, env: { FLOTILLA_MESSAGE_RETENTION_SECONDS: '3600' } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("prunes after the platform's retention where the tenant set none, and after the tenant's own where it did", async () => {
    const gqlData = async <T>(query: string, variables: Record<string, unknown>) =>
      dataOf(await server.gql<T>(query, variables));
    const sandboxOf = async () => {
      const tenantId = await createTenant(server, uniqueName('plat'));
      await registerWorker(server, uniqueName('w'), { tenantId });
      const created = await createSandbox(server, tenantId);
      expect(created.__typename, JSON.stringify(created)).toBe('SandboxPayload');
      return { tenantId, sandboxId: created.sandbox.id };
    };
    const platform = await sandboxOf();
    const own = await sandboxOf();
    const updated = await gqlData<{ updateTenant: { tenant: { messageRetentionDays: number } } }>(UPDATE_RETENTION, {
      input: { tenantId: own.tenantId, messageRetentionDays: 1 },
    });
    expect(updated.updateTenant.tenant.messageRetentionDays).toBe(1);
    for (const { sandboxId } of [platform, own]) await gqlData(SEND, { input: { sandboxId, body: 'two hours old' } });
    clock.advance(2 * 3600);
    await server.app.sweeper.runOnce();
    const left = async (sandboxId: string) =>
      (await server.app.db.orm.em.fork().find(Message, { sandbox: localId(sandboxId) })).map((m) => m.body);
    expect(await left(platform.sandboxId)).toEqual([]);
    expect(await left(own.sandboxId)).toEqual(['two hours old']);
  });
});
