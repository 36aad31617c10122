import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import { createTenant, dataOf, uniqueName } from '../helpers/fleet.js';
import { type Hs256Issuer, personToken } from '../helpers/replica.js';
import { isRequestStatement, localId, startTestServer, type TestServer } from '../helpers/server.js';

/**
 * A verified token is remembered per process: a repeated request costs no statement. Every
 * access change (revocation, a member removed, added or given another role) still takes effect
 * on the next request, on the replica that made it and, through the event log, on every other.
 */
const SSO: Hs256Issuer = {
  issuer: 'https://sso.identity-cache.invalid',
  audience: 'flotilla-identity-cache',
  secret: 'identity-cache-test-shared-secret-long-enough',
};
const ENV = {
  FLOTILLA_HS256_ISSUERS: JSON.stringify([SSO]),
};

const TENANT = 'query($t: ID!) { tenant(id: $t) { id slug } }';

function codeOf(res: { body: { errors?: readonly { extensions?: Record<string, unknown> }[] } }): unknown {
  return res.body.errors?.[0]?.extensions?.code;
}

interface Recorded {
  server: TestServer;
  /** The statements the server issued for the requests made inside `work`. */
  during(work: () => Promise<unknown>): Promise<string[]>;
}

async function recorded(start: (onQuery: (sql: string) => void) => Promise<TestServer>): Promise<Recorded> {
  let recording: string[] | null = null;
  const server = await start((sql) => {
    if (recording && isRequestStatement(sql)) recording.push(sql);
  });
  return {
    server,
    async during(work) {
      recording = [];
      try {
        await work();
        return recording;
      } finally {
        recording = null;
      }
    },
  };
}

describe.each(DRIVERS)('verified tokens cached per process on %s', (kind) => {
  let r: Recorded;
  let server: TestServer;
  let tenantId: string;

  beforeAll(async () => {
    r = await recorded((onQuery) => startTestServer(kind, { env: ENV, onQuery }));
    server = r.server;
    tenantId = await createTenant(server, uniqueName('ic'));
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers a repeated authenticated request without a statement', async () => {
    const token = await server.apiToken(localId(tenantId), 'VIEWER');
    const first = await r.during(() => server.gql('{ __typename }', {}, token));
    expect(first.some((sql) => /api_tokens/.test(sql))).toBe(true);
    const again = await r.during(async () => {
      for (let i = 0; i < 5; i++) expect((await server.gql('{ __typename }', {}, token)).status).toBe(200);
    });
    expect(again).toEqual([]);
  });

  it('refuses a revoked token on its next request', async () => {
    const created = dataOf(
      await server.gql<{ createApiToken: { token: string; apiToken: { id: string } } }>(
        'mutation($i: CreateApiTokenInput!) { createApiToken(input: $i) { ... on CreateApiTokenPayload { token apiToken { id } } } }',
        { i: { tenantId, role: 'VIEWER', ttlSeconds: 600 } },
      ),
    ).createApiToken;
    expect(dataOf(await server.gql(TENANT, { t: tenantId }, created.token))).toMatchObject({
      tenant: { id: tenantId },
    });
    const revoked = await server.gql<{ revokeToken: { __typename: string } }>(
      'mutation($i: RevokeTokenInput!) { revokeToken(input: $i) { __typename } }',
      { i: { tokenId: created.apiToken.id } },
    );
    expect(dataOf(revoked).revokeToken.__typename).toBe('RevokeTokenPayload');
    const after = await server.gql(TENANT, { t: tenantId }, created.token);
    expect(codeOf(after)).toBe('UNAUTHENTICATED');
  });

  it('sees a membership added, lowered and removed on the next request', async () => {
    const sub = uniqueName('person');
    const token = await personToken(SSO, sub);
    const asPerson = () => server.gql<{ tenant: { id: string } | null }>(TENANT, { t: tenantId }, token);
    // Known to the cache, with no role in the tenant yet.
    expect(dataOf(await asPerson()).tenant).toBeNull();
    const added = dataOf(
      await server.gql<{ addMember: { member: { id: string } } }>(
        'mutation($i: AddMemberInput!) { addMember(input: $i) { ... on AddMemberPayload { member { id } } } }',
        { i: { tenantId, subject: sub, role: 'ADMIN' } },
      ),
    ).addMember.member;
    expect(dataOf(await asPerson()).tenant).toMatchObject({ id: tenantId });
    const auditTrail = 'query($t: ID!) { tenant(id: $t) { auditEntries(first: 1) { edges { cursor } } } }';
    expect(codeOf(await server.gql(auditTrail, { t: tenantId }, token))).toBeUndefined();

    await server.gql('mutation($i: AddMemberInput!) { addMember(input: $i) { __typename } }', {
      i: { tenantId, subject: sub, role: 'VIEWER' },
    });
    expect(codeOf(await server.gql(auditTrail, { t: tenantId }, token))).toBe('FORBIDDEN');

    await server.gql('mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }', {
      i: { memberId: added.id },
    });
    expect(dataOf(await asPerson()).tenant).toBeNull();
  });
});

describe('verified tokens cached per replica on postgres', () => {
  let a: TestServer;
  let b: Recorded;
  let tenantId: string;

  beforeAll(async () => {
    a = await startTestServer('postgres', { env: ENV });
    b = await recorded((onQuery) =>
      startTestServer('postgres', { env: ENV, databaseUrl: a.databaseUrl, adminToken: a.adminToken, onQuery }),
    );
    tenantId = await createTenant(a, uniqueName('icr'));
  });
  afterAll(async () => {
    await b?.server.close();
    await a?.close();
  });

  it('refuses a token revoked on another replica once that replica has read the log', async () => {
    const created = dataOf(
      await a.gql<{ createApiToken: { token: string; apiToken: { id: string } } }>(
        'mutation($i: CreateApiTokenInput!) { createApiToken(input: $i) { ... on CreateApiTokenPayload { token apiToken { id } } } }',
        { i: { tenantId, role: 'VIEWER', ttlSeconds: 600 } },
      ),
    ).createApiToken;
    expect((await b.server.gql('{ __typename }', {}, created.token)).status).toBe(200);
    expect(await b.during(() => b.server.gql('{ __typename }', {}, created.token))).toEqual([]);

    await a.gql('mutation($i: RevokeTokenInput!) { revokeToken(input: $i) { __typename } }', {
      i: { tokenId: created.apiToken.id },
    });
    // B hears of it through NOTIFY; `settle` returns once B has read everything committed so far.
    await b.server.app.events().settle();
    expect(codeOf(await b.server.gql(TENANT, { t: tenantId }, created.token))).toBe('UNAUTHENTICATED');
  });

  it('drops a removed member on another replica', async () => {
    const sub = uniqueName('person');
    const token = await personToken(SSO, sub);
    const member = dataOf(
      await a.gql<{ addMember: { member: { id: string } } }>(
        'mutation($i: AddMemberInput!) { addMember(input: $i) { ... on AddMemberPayload { member { id } } } }',
        { i: { tenantId, subject: sub, role: 'VIEWER' } },
      ),
    ).addMember.member;
    await b.server.app.events().settle();
    expect(dataOf(await b.server.gql<{ tenant: unknown }>(TENANT, { t: tenantId }, token)).tenant).toMatchObject({
      id: tenantId,
    });
    await a.gql('mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }', {
      i: { memberId: member.id },
    });
    await b.server.app.events().settle();
    expect(dataOf(await b.server.gql<{ tenant: unknown }>(TENANT, { t: tenantId }, token)).tenant).toBeNull();
  });
});
