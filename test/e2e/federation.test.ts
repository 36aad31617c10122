import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { FLOTILLA_SUBGRAPH } from '../../examples/gateway/compose.js';
import { startFederation, startGateway, type RunningFederation } from '../../examples/gateway/launch.js';
import { SigningKeys } from '../../src/auth/keys.js';
import { TokenService } from '../../src/auth/tokens.js';
import { loadConfig } from '../../src/config/index.js';
import type { TenantRole } from '../../src/db/entities/member.js';
import { openOrm } from '../../src/db/orm.js';
import { DRIVERS, freshDatabaseUrl, tempDir } from '../helpers/databases.js';
import { localId, isRequestStatement, startTestServer, type GraphQLResponse, type TestServer } from '../helpers/server.js';

/** How many tenants the batching test resolves in one `_entities` call. */
const BATCH = 100;

const ENTITIES = /* GraphQL */ `
  query Entities($representations: [_Any!]!) {
    _entities(representations: $representations) { ... on Tenant { id slug } }
  }
`;

function tenantRef(id: string): { __typename: 'Tenant'; id: string } {
  return { __typename: 'Tenant', id };
}

function globalId(typename: string, id: string): string {
  return Buffer.from(`${typename}:${id}`, 'utf8').toString('base64url');
}

async function post<T>(url: string, query: string, variables: Record<string, unknown> = {}, token: string | null = null): Promise<GraphQLResponse<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: (await res.json()) as GraphQLResponse<T>['body'] };
}

/** Aliased mutations per request, below the server's alias limit. */
const TENANTS_PER_REQUEST = 20;

/** Creates tenants a batch of aliased mutations per request (they run in order); returns their global ids. */
async function createTenants(gql: (query: string) => Promise<GraphQLResponse>, slugs: string[]): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < slugs.length; start += TENANTS_PER_REQUEST) {
    const batch = slugs.slice(start, start + TENANTS_PER_REQUEST);
    const fields = batch.map(
      (slug, i) => `t${i}: createTenant(input: { slug: "${slug}", name: "Tenant ${slug}" }) { ... on CreateTenantPayload { tenant { id } } }`,
    );
    const res = await gql(`mutation { ${fields.join('\n')} }`);
    expect(res.body.errors).toBeUndefined();
    const data = res.body.data as Record<string, { tenant?: { id: string } }>;
    batch.forEach((slug, i) => {
      const id = data[`t${i}`]?.tenant?.id;
      if (!id) throw new Error(`tenant ${slug} was not created: ${JSON.stringify(data[`t${i}`])}`);
      ids.push(id);
    });
  }
  return ids;
}

describe.each(DRIVERS)('Flotilla as a federation subgraph (%s)', (kind) => {
  let server: TestServer;
  let statements: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { onQuery: (sql) => (isRequestStatement(sql) ? statements.push(sql) : undefined) });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** The SQL statements one operation issues. */
  async function countStatements(run: () => Promise<unknown>): Promise<number> {
    statements = [];
    await run();
    return statements.length;
  }

  it('serves _service.sdl exactly as committed in schema/subgraph.graphql, with Tenant keyed by id', async () => {
    const res = await server.gql<{ _service: { sdl: string } }>('{ _service { sdl } }');
    const sdl = res.body.data?._service.sdl ?? '';
    const committed = readFileSync('schema/subgraph.graphql', 'utf8');
    expect(committed.endsWith(`${sdl}\n`)).toBe(true);
    expect(sdl).toContain('@link(url: "https://specs.apollo.dev/federation/v2.6"');
    expect(sdl).toMatch(/type Tenant implements Node\s+@key\(fields: "id"\)/);
  });

  it('resolves representations of visible tenants and null for hidden, missing, malformed or mistyped ones', async () => {
    const [mine, theirs] = await createTenants((q) => server.gql(q), [`ent-mine-${kind}`, `ent-theirs-${kind}`]);
    const token = await server.apiToken(localId(mine), 'VIEWER');
    const missing = globalId('Tenant', '01900000-0000-7000-8000-000000000000');
    const representations = [
      tenantRef(mine),
      tenantRef(theirs),
      tenantRef(missing),
      tenantRef('not a global id'),
      tenantRef(globalId('Member', localId(mine))),
    ];

    const asTenant = await server.gql<{ _entities: ({ id: string; slug: string } | null)[] }>(ENTITIES, { representations }, token);
    expect(asTenant.body.errors).toBeUndefined();
    expect(asTenant.body.data?._entities).toEqual([{ id: mine, slug: `ent-mine-${kind}` }, null, null, null, null]);

    const asAdmin = await server.gql<{ _entities: ({ id: string } | null)[] }>(ENTITIES, { representations });
    expect(asAdmin.body.data?._entities.map((e) => e?.id ?? null)).toEqual([mine, theirs, null, null, null]);
  });

  it(`resolves ${BATCH} representations with the same number of SQL statements as one`, async () => {
    const slugs = Array.from({ length: BATCH }, (_, i) => `batch-${kind}-${String(i).padStart(3, '0')}`);
    const ids = await createTenants((q) => server.gql(q), slugs);

    let many: GraphQLResponse<{ _entities: ({ slug: string } | null)[] }> | undefined;
    // Warm up once: the first request of a token may also record its last use.
    await server.gql(ENTITIES, { representations: [tenantRef(ids[0])] });
    const one = await countStatements(() => server.gql(ENTITIES, { representations: [tenantRef(ids[0])] }));
    const hundred = await countStatements(async () => {
      many = await server.gql(ENTITIES, { representations: ids.map(tenantRef) });
    });

    expect(many?.body.data?._entities.map((e) => e?.slug)).toEqual(slugs);
    expect(one).toBeGreaterThan(0);
    expect(hundred).toBe(one);
  });
});

/** The environment a user's shell would give the processes, without the test runner's FLOTILLA_*. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('FLOTILLA_')) env[k] = v;
  return { ...env, ...extra };
}

describe('federation through Hive Gateway (real processes)', () => {
  let federation: RunningFederation | undefined;
  let databaseUrl = '';
  let admin = '';

  const gateway = <T = Record<string, unknown>>(query: string, variables: Record<string, unknown> = {}, token: string | null = admin) =>
    post<T>(federation?.gatewayUrl ?? '', query, variables, token);

  /** An API token for a tenant role, minted against the running server's database and keys. */
  async function apiToken(tenantGlobalId: string, role: TenantRole): Promise<string> {
    const config = loadConfig({ FLOTILLA_DATABASE_URL: databaseUrl });
    const orm = await openOrm(config.databaseUrl);
    try {
      const keys = new SigningKeys(orm, undefined);
      await keys.init();
      const tokens = new TokenService(orm, keys, { issuer: config.tokenIssuer, audience: config.tokenAudience });
      const minted = await orm.em.fork().transactional((tx) =>
        tokens.mint(tx, { kind: 'API', subject: `api:${role.toLowerCase()}`, tenantId: localId(tenantGlobalId), role, ttlSeconds: 3600 }),
      );
      return minted.token;
    } finally {
      await orm.close(true);
    }
  }

  beforeAll(async () => {
    databaseUrl = await freshDatabaseUrl('sqlite');
    federation = await startFederation({
      flotillaEnv: cleanEnv({
        FLOTILLA_DATABASE_URL: databaseUrl,
        FLOTILLA_DATA_DIR: tempDir('flotilla-federation-'),
        FLOTILLA_LOG_LEVEL: 'warn',
        FLOTILLA_SHUTDOWN_TIMEOUT_MS: '2000',
      }),
    });
    if (!federation.adminToken) throw new Error('a fresh database should mint an admin token');
    admin = federation.adminToken;
  });
  afterAll(async () => {
    await federation?.stop();
  });

  const TENANT_WITH_BILLING = /* GraphQL */ `
    query Tenant($slug: String!) { tenant(slug: $slug) { id slug name billing { plan monthlyBudgetCents spentCents remainingCents } } }
  `;
  const SET_BUDGET = /* GraphQL */ `
    mutation SetBudget($id: ID!, $cents: Int!) { setBudget(tenantId: $id, cents: $cents, plan: TEAM) { slug billing { plan monthlyBudgetCents } } }
  `;

  it('creates a tenant, sets its budget and reads fields of both subgraphs in one query', async () => {
    const created = await gateway<{ createTenant: { tenant: { id: string; slug: string } } }>(
      'mutation { createTenant(input: { slug: "acme", name: "Acme" }) { ... on CreateTenantPayload { tenant { id slug } } } }',
    );
    expect(created.body.errors).toBeUndefined();
    const id = created.body.data?.createTenant.tenant.id ?? '';

    const budget = await gateway(SET_BUDGET, { id, cents: 12_500 });
    expect(budget.body).toEqual({ data: { setBudget: { slug: 'acme', billing: { plan: 'TEAM', monthlyBudgetCents: 12_500 } } } });

    const read = await gateway(TENANT_WITH_BILLING, { slug: 'acme' });
    expect(read.body).toEqual({
      data: {
        tenant: {
          id,
          slug: 'acme',
          name: 'Acme',
          billing: { plan: 'TEAM', monthlyBudgetCents: 12_500, spentCents: 0, remainingCents: 12_500 },
        },
      },
    });
  });

  it('refuses a caller without a token, in either subgraph', async () => {
    const read = await gateway<{ tenant: unknown }>(TENANT_WITH_BILLING, { slug: 'acme' }, null);
    expect(read.body.data?.tenant ?? null).toBeNull();
    expect(read.body.errors?.map((e) => e.extensions?.code)).toContain('UNAUTHENTICATED');

    const [tenantId] = await createTenants((q) => gateway(q), ['no-token']);
    const write = await gateway<{ setBudget: unknown }>(SET_BUDGET, { id: tenantId, cents: 1 }, null);
    expect(write.body.data?.setBudget ?? null).toBeNull();
    expect(write.body.errors?.map((e) => e.extensions?.code)).toContain('UNAUTHENTICATED');
  });

  it("shows a tenant's API token its own tenant only, and another tenant stays invisible even via _entities", async () => {
    const [mine, theirs] = await createTenants((q) => gateway(q), ['mine', 'theirs']);
    await gateway(SET_BUDGET, { id: theirs, cents: 99_900 });
    const token = await apiToken(mine, 'ADMIN');

    const list = await gateway<{ tenants: { edges: { node: { slug: string; billing: { plan: string } | null } }[] } }>(
      '{ tenants { edges { node { slug billing { plan } } } } }',
      {},
      token,
    );
    expect(list.body.errors).toBeUndefined();
    expect(list.body.data?.tenants.edges.map((e) => e.node)).toEqual([{ slug: 'mine', billing: { plan: 'FREE' } }]);

    const other = await gateway<{ tenant: unknown }>('query ($id: ID!) { tenant(id: $id) { slug billing { monthlyBudgetCents } } }', { id: theirs }, token);
    expect(other.body).toEqual({ data: { tenant: null } });

    // A tenant admin is not a platform admin: budgets are not theirs to set.
    const write = await gateway<{ setBudget: unknown }>(SET_BUDGET, { id: mine, cents: 1 }, token);
    expect(write.body.errors?.map((e) => e.extensions?.code)).toContain('FORBIDDEN');

    // Straight at the subgraphs, the way a gateway asks: the other tenant is null, not an error.
    const entities = await post<{ _entities: ({ slug: string } | null)[] }>(
      federation?.flotillaUrl ?? '',
      ENTITIES,
      { representations: [tenantRef(mine), tenantRef(theirs)] },
      token,
    );
    expect(entities.body).toEqual({ data: { _entities: [{ id: mine, slug: 'mine' }, null] } });
    const billing = await post<{ _entities: ({ billing: unknown } | null)[] }>(
      federation?.usageUrl ?? '',
      'query ($r: [_Any!]!) { _entities(representations: $r) { ... on Tenant { billing { monthlyBudgetCents } } } }',
      { r: [tenantRef(mine), tenantRef(theirs)] },
      token,
    );
    expect(billing.body).toEqual({ data: { _entities: [{ billing: { monthlyBudgetCents: 0 } }, { billing: null }] } });
  });
});

describe('gateway subscriptions to the Flotilla subgraph', () => {
  // Flotilla has no Subscription type in this branch yet, so a stand-in subgraph under Flotilla's
  // name checks what the gateway configuration promises: subscriptions reach it over graphql-ws,
  // carrying the client's token in connectionParams the way Flotilla's sockets authenticate.
  const STAND_IN_SDL = /* GraphQL */ `
    extend schema @link(url: "https://specs.apollo.dev/federation/v2.6", import: ["@key"])
    type Query { ping: String! }
    type Subscription { whoami: String! }
  `;
  let http: Server | undefined;
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  const overWebSocket: unknown[] = [];

  beforeAll(async () => {
    const schema = buildSubgraphSchema([
      {
        typeDefs: parse(STAND_IN_SDL),
        resolvers: {
          Query: { ping: () => 'pong' },
          Subscription: {
            whoami: {
              subscribe: async function* (_root: unknown, _args: unknown, ctx: { authorization: unknown }) {
                yield { whoami: String(ctx.authorization) };
              },
            },
          },
        },
      },
    ]);
    http = createServer((_req, res) => res.writeHead(404).end());
    useServer(
      {
        schema,
        onConnect: (ctx) => {
          overWebSocket.push(ctx.connectionParams?.authorization);
          return typeof ctx.connectionParams?.authorization === 'string';
        },
        context: (ctx) => ({ authorization: ctx.connectionParams?.authorization }),
      },
      new WebSocketServer({ server: http, path: '/graphql' }),
    );
    const server = http;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    gateway = await startGateway([{ name: FLOTILLA_SUBGRAPH, url: `http://127.0.0.1:${port}/graphql`, sdl: STAND_IN_SDL }]);
  });
  afterAll(async () => {
    await gateway?.stop();
    await new Promise((resolve) => (http ? http.close(resolve) : resolve(undefined)));
  });

  it('forwards a subscription over graphql-ws with the client token in connectionParams', async () => {
    const res = await fetch(gateway?.gatewayUrl ?? '', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: 'Bearer sub-token' },
      body: JSON.stringify({ query: 'subscription { whoami }' }),
    });
    const stream = await res.text(); // the stand-in completes after one event
    const events = stream.split('\n').filter((line) => line.startsWith('data: {'));
    expect(events.map((line) => JSON.parse(line.slice('data: '.length)) as unknown)).toEqual([{ data: { whoami: 'Bearer sub-token' } }]);
    expect(overWebSocket).toEqual(['Bearer sub-token']);
  });
});
