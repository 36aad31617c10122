import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { AuditEntry } from '../../src/db/entities/audit-entry.js';
import { Tenant } from '../../src/db/entities/tenant.js';
import { DRIVERS } from '../helpers/databases.js';
import { localId, startTestServer, type TestServer, wsRequest } from '../helpers/server.js';

const CREATE_TENANT = /* GraphQL */ `
  mutation Create($input: CreateTenantInput!) {
    createTenant(input: $input) {
      __typename
      ... on CreateTenantPayload { tenant { id slug name quota { maxSandboxes maxCpuMillis maxMemoryMb } policy { allowedImages maxSandboxTtlSeconds } usage { sandboxes } } }
      ... on Error { message code }
      ... on ValidationError { field }
    }
  }
`;

interface CreateTenantData {
  createTenant: {
    __typename: string;
    tenant?: {
      id: string;
      slug: string;
      name: string;
      quota: Record<string, number>;
      policy: Record<string, unknown>;
      usage: { sandboxes: number };
    };
    message?: string;
    code?: string;
    field?: string;
  };
}

/** Opens a raw graphql-transport-ws socket and reports how the server closes it. */
function closeCodeFor(url: string, authorization: string | undefined): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, 'graphql-transport-ws');
    socket.on('open', () =>
      socket.send(JSON.stringify({ type: 'connection_init', payload: authorization ? { authorization } : {} })),
    );
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    socket.on('error', reject);
  });
}

describe.each(DRIVERS)('server on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers a query and a mutation over HTTP', async () => {
    const viewer = await server.gql<{ viewer: { subject: string; platformAdmin: boolean } }>(
      '{ viewer { subject platformAdmin } }',
    );
    expect(viewer.status).toBe(200);
    expect(viewer.body.data?.viewer).toEqual({ subject: 'platform-admin', platformAdmin: true });

    const created = await server.gql<CreateTenantData>(CREATE_TENANT, {
      input: {
        slug: 'http-acme',
        name: 'Acme',
        quota: { maxSandboxes: 3 },
        policy: { allowedImages: ['ghcr.io/acme/*'] },
      },
    });
    const tenant = created.body.data?.createTenant;
    expect(created.body.errors).toBeUndefined();
    expect(tenant?.__typename).toBe('CreateTenantPayload');
    expect(tenant?.tenant).toMatchObject({
      slug: 'http-acme',
      name: 'Acme',
      quota: { maxSandboxes: 3, maxCpuMillis: 8000, maxMemoryMb: 16384 },
      policy: { allowedImages: ['ghcr.io/acme/*'], maxSandboxTtlSeconds: null },
      usage: { sandboxes: 0 },
    });

    const id = tenant?.tenant?.id as string;
    const byId = await server.gql<{ tenant: { slug: string }; node: { __typename: string; slug: string } }>(
      'query($id: ID!) { tenant(id: $id) { slug } node(id: $id) { __typename ... on Tenant { slug } } }',
      { id },
    );
    expect(byId.body.data).toEqual({
      tenant: { slug: 'http-acme' },
      node: { __typename: 'Tenant', slug: 'http-acme' },
    });
    const bySlug = await server.gql<{ tenant: { id: string } }>('{ tenant(slug: "http-acme") { id } }');
    expect(bySlug.body.data?.tenant.id).toBe(id);
  });

  it('answers a query over SSE', async () => {
    const res = await fetch(server.app.graphqlUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        authorization: `Bearer ${server.adminToken}`,
      },
      body: JSON.stringify({ query: '{ viewer { subject } }' }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const text = await res.text();
    const next = text.split('\n\n').find((block) => block.includes('event: next'));
    const data = JSON.parse(
      next
        ?.split('\n')
        .find((l) => l.startsWith('data: '))
        ?.slice(6) ?? 'null',
    );
    expect(data).toEqual({ data: { viewer: { subject: 'platform-admin' } } });
    expect(text).toContain('event: complete');
  });

  it('answers a query over WebSocket (graphql-ws)', async () => {
    const client = server.ws();
    const result = await wsRequest<{ viewer: { subject: string } }>(client, '{ viewer { subject } }');
    expect(result.data?.viewer.subject).toBe('platform-admin');
    const created = await wsRequest<CreateTenantData>(client, CREATE_TENANT, {
      input: { slug: 'ws-tenant', name: 'Over WS' },
    });
    expect(created.data?.createTenant.__typename).toBe('CreateTenantPayload');
  });

  it('refuses requests without a valid token, over HTTP and WebSocket', async () => {
    const none = await server.gql('{ viewer { subject } }', undefined, null);
    expect(none.status).toBe(401);
    expect(none.body.errors?.[0].extensions?.code).toBe('UNAUTHENTICATED');
    expect(none.body.data ?? null).toBeNull();

    const garbage = await server.gql('{ viewer { subject } }', undefined, 'not-a-jwt');
    expect(garbage.status).toBe(401);

    // Flip one character of the payload: the signature no longer matches.
    const [h, p, s] = server.adminToken.split('.');
    const tampered = `${h}.${p.slice(0, -2)}${p.at(-2) === 'A' ? 'B' : 'A'}${p.at(-1)}.${s}`;
    const forged = await server.gql('{ viewer { subject } }', undefined, tampered);
    expect(forged.status).toBe(401);
    expect(forged.body.errors?.[0].extensions?.code).toBe('UNAUTHENTICATED');

    const wsUrl = server.app.graphqlUrl.replace(/^http/, 'ws');
    expect((await closeCodeFor(wsUrl, undefined)).code).toBe(4403);
    expect((await closeCodeFor(wsUrl, `Bearer ${tampered}`)).code).toBe(4403);
  });

  it('returns typed errors and writes nothing for bad input', async () => {
    const before = await server.app.db.orm.em.fork().count(Tenant, {});
    const badSlug = await server.gql<CreateTenantData>(CREATE_TENANT, { input: { slug: 'NO SPACES', name: 'x' } });
    expect(badSlug.body.data?.createTenant).toMatchObject({
      __typename: 'ValidationError',
      code: 'VALIDATION_FAILED',
      field: 'input.slug',
    });
    const badQuota = await server.gql<CreateTenantData>(CREATE_TENANT, {
      input: { slug: 'neg-quota', name: 'x', quota: { maxSandboxes: -1 } },
    });
    expect(badQuota.body.data?.createTenant).toMatchObject({
      __typename: 'ValidationError',
      field: 'input.quota.maxSandboxes',
    });
    await server.gql(CREATE_TENANT, { input: { slug: 'taken', name: 'First' } });
    const dup = await server.gql<CreateTenantData>(CREATE_TENANT, { input: { slug: 'taken', name: 'Second' } });
    expect(dup.body.data?.createTenant).toMatchObject({ __typename: 'AlreadyExistsError', code: 'ALREADY_EXISTS' });
    expect(await server.app.db.orm.em.fork().count(Tenant, {})).toBe(before + 1);
    const taken = await server.app.db.orm.em.fork().findOneOrFail(Tenant, { slug: 'taken' });
    expect(taken.name).toBe('First');
  });

  it('reports malformed GraphQL, unknown fields and invalid ids clearly, without stack traces', async () => {
    const syntax = await server.gql('{ viewer { subject ');
    expect(syntax.body.errors?.[0].extensions?.code).toBe('GRAPHQL_PARSE_FAILED');
    const unknown = await server.gql('{ viewer { nope } }');
    expect(unknown.body.errors?.[0].extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(unknown.body.errors?.[0].message).toContain('nope');
    const badId = await server.gql('{ node(id: "definitely-not-an-id") { id } }');
    expect(badId.body.errors?.[0]).toMatchObject({
      extensions: { code: 'VALIDATION_FAILED' },
      message: '"definitely-not-an-id" is not a valid id',
    });
    const missing = await server.gql<{ node: null }>('query($id: ID!) { node(id: $id) { id } }', {
      id: Buffer.from('Tenant:01900000-0000-7000-8000-000000000000').toString('base64url'),
    });
    expect(missing.body.data?.node).toBeNull();
    const tooMany = await server.gql('{ tenants(first: 101) { totalCount } }');
    expect(tooMany.body.errors?.[0].extensions?.code).toBe('VALIDATION_FAILED');
    for (const res of [syntax, unknown, badId, tooMany])
      expect(JSON.stringify(res.body)).not.toMatch(/stack|at .*\.ts:\d+/);
  });

  it('pages tenants with cursors', async () => {
    for (const slug of ['page-a', 'page-b', 'page-c']) await server.gql(CREATE_TENANT, { input: { slug, name: slug } });
    const query =
      'query($after: String) { tenants(first: 2, after: $after) { totalCount edges { cursor node { slug } } pageInfo { hasNextPage endCursor } } }';
    type Page = {
      tenants: {
        totalCount: number;
        edges: { node: { slug: string } }[];
        pageInfo: { hasNextPage: boolean; endCursor: string };
      };
    };
    const seen: string[] = [];
    let after: string | null = null;
    let total = 0;
    for (;;) {
      const page: Page = (await server.gql<Page>(query, { after })).body.data as Page;
      total = page.tenants.totalCount;
      seen.push(...page.tenants.edges.map((e) => e.node.slug));
      if (!page.tenants.pageInfo.hasNextPage) break;
      after = page.tenants.pageInfo.endCursor;
    }
    expect(seen.length).toBe(total);
    expect(new Set(seen).size).toBe(total);
    expect(seen).toEqual(expect.arrayContaining(['page-a', 'page-b', 'page-c']));
    const bad = await server.gql('{ tenants(after: "bm90LWEtY3Vyc29y") { totalCount } }');
    expect(bad.body.errors?.[0].extensions?.code).toBe('VALIDATION_FAILED');
  });

  it('shows a tenant member only its own tenant, and lets only platform admins create tenants', async () => {
    const own = (await server.gql<CreateTenantData>(CREATE_TENANT, { input: { slug: 'own-tenant', name: 'Own' } })).body
      .data?.createTenant.tenant;
    const other = (
      await server.gql<CreateTenantData>(CREATE_TENANT, { input: { slug: 'other-tenant', name: 'Other' } })
    ).body.data?.createTenant.tenant;
    const token = await server.apiToken(localId(own?.id as string), 'ADMIN');

    const list = await server.gql<{ tenants: { totalCount: number; edges: { node: { slug: string } }[] } }>(
      '{ tenants { totalCount edges { node { slug } } } }',
      undefined,
      token,
    );
    expect(list.body.data?.tenants.edges.map((e) => e.node.slug)).toEqual(['own-tenant']);
    expect(list.body.data?.tenants.totalCount).toBe(1);
    const foreign = await server.gql<{ tenant: null; node: null; bySlug: null }>(
      'query($id: ID!) { tenant(id: $id) { slug } node(id: $id) { id } bySlug: tenant(slug: "other-tenant") { slug } }',
      { id: other?.id },
      token,
    );
    expect(foreign.body.data).toEqual({ tenant: null, node: null, bySlug: null });

    const refused = await server.gql<CreateTenantData>(CREATE_TENANT, { input: { slug: 'sneaky', name: 'x' } }, token);
    expect(refused.body.data?.createTenant).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });
    expect(await server.app.db.orm.em.fork().count(Tenant, { slug: 'sneaky' })).toBe(0);
  });

  it('audits every createTenant, refused ones included', async () => {
    await server.gql(CREATE_TENANT, { input: { slug: 'audited', name: 'Audited' } });
    await server.gql(CREATE_TENANT, { input: { slug: 'audited', name: 'Again' } });
    const entries = await server.app.db.orm.em
      .fork()
      .find(AuditEntry, { action: 'createTenant' }, { orderBy: { id: 'desc' }, limit: 2 });
    expect(entries.map((e) => e.outcome)).toEqual(['ALREADY_EXISTS', 'ok']);
    expect(entries[1].actor).toBe('platform-admin');
    expect(entries[1].targetId).not.toBeNull();
  });

  it('serves health, readiness, metrics, the JWKS and GraphiQL', async () => {
    const base = server.app.url;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready' });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/flotilla_http_requests_total\{route="\/graphql",status="200"\} \d+/);
    const jwks = (await (await fetch(`${base}/.well-known/jwks.json`)).json()) as {
      keys: { kid: string; d?: string }[];
    };
    expect(jwks.keys.length).toBeGreaterThan(0);
    expect(jwks.keys.every((k) => k.kid && k.d === undefined)).toBe(true);
    const page = await fetch(server.app.graphqlUrl, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('GraphiQL');
  });
});

describe('graceful shutdown', () => {
  it('closes WebSockets with 1001 and stops accepting connections', async () => {
    const server = await startTestServer('sqlite');
    const socket = new WebSocket(server.app.graphqlUrl.replace(/^http/, 'ws'), 'graphql-transport-ws');
    await new Promise<void>((resolve) => socket.on('open', () => resolve()));
    socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${server.adminToken}` } }));
    await new Promise<void>((resolve) => socket.on('message', () => resolve()));
    const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
    await server.close();
    expect(await closed).toBe(1001);
    await expect(fetch(`${server.app.url}/healthz`)).rejects.toThrow();
  });
});
