import { readFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type RunningFederation, startFederation } from '../../examples/gateway/launch.js';
import { costCentsPerHour } from '../../examples/usage-subgraph/schema.js';
import { SigningKeys } from '../../src/auth/keys.js';
import { TokenService } from '../../src/auth/tokens.js';
import { readServerSentEvents } from '../../src/client/sse.js';
import { loadConfig } from '../../src/config/index.js';
import type { TenantRole } from '../../src/db/entities/member.js';
import { openOrm } from '../../src/db/orm.js';
import { DRIVERS, freshDatabaseUrl, tempDir } from '../helpers/databases.js';
import {
  type GraphQLResponse,
  isRequestStatement,
  localId,
  startTestServer,
  type TestServer,
} from '../helpers/server.js';

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

async function post<T>(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  token: string | null = null,
): Promise<GraphQLResponse<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: (await res.json()) as GraphQLResponse<T>['body'] };
}

/** What a subscriber receives: one result per event, or the errors that refused it. */
interface StreamResult {
  data?: Record<string, unknown> | null;
  errors?: readonly { message: string; extensions?: { code?: unknown } }[];
}

/** How long a subscription at the gateway may take to deliver what a test waits for. */
const STREAM_TIMEOUT_MS = 15_000;

/**
 * Subscribes over graphql-ws at `url` (the token in connectionParams, as Flotilla's clients send
 * it) and collects results until `count` arrived, the stream ended, or it was refused.
 */
async function wsTake(
  url: string,
  token: string | null,
  query: string,
  variables: Record<string, unknown>,
  count: number,
): Promise<StreamResult[]> {
  const client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
  });
  const results: StreamResult[] = [];
  const stream = client.iterate<Record<string, unknown>>({ query, variables });
  const timer = setTimeout(() => void stream.return?.(), STREAM_TIMEOUT_MS);
  try {
    for await (const result of stream) {
      results.push(result as StreamResult);
      if (results.length >= count) break;
    }
  } catch (err) {
    // An `error` message: the operation was refused; report it the way `next` errors read.
    const errors = Array.isArray(err)
      ? (err as StreamResult['errors'])
      : [{ message: String((err as { reason?: string }).reason ?? err) }];
    results.push({ errors });
  } finally {
    clearTimeout(timer);
    await client.dispose();
  }
  return results;
}

/** Subscribes over GraphQL-over-SSE at `url` (token in the Authorization header) until `count` results. */
async function sseTake(
  url: string,
  token: string | null,
  query: string,
  variables: Record<string, unknown>,
  count: number,
): Promise<StreamResult[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), STREAM_TIMEOUT_MS);
  const results: StreamResult[] = [];
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify({ query, variables }),
      signal: controller.signal,
    });
    for await (const { event, data } of readServerSentEvents(res.body as unknown as AsyncIterable<Uint8Array>)) {
      if (data.startsWith('{')) results.push(JSON.parse(data) as StreamResult);
      if (results.length >= count || event === 'complete') return results;
    }
  } catch (err) {
    if (!controller.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return results;
}

function codesOf(results: StreamResult[]): unknown[] {
  return results.flatMap((r) => r.errors?.map((e) => e.extensions?.code) ?? []);
}

/** Aliased mutations per request, below the server's alias limit. */
const TENANTS_PER_REQUEST = 20;

/** Creates tenants a batch of aliased mutations per request (they run in order); returns their global ids. */
async function createTenants(gql: (query: string) => Promise<GraphQLResponse>, slugs: string[]): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < slugs.length; start += TENANTS_PER_REQUEST) {
    const batch = slugs.slice(start, start + TENANTS_PER_REQUEST);
    const fields = batch.map(
      (slug, i) =>
        `t${i}: createTenant(input: { slug: "${slug}", name: "Tenant ${slug}" }) { ... on CreateTenantPayload { tenant { id } } }`,
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
    server = await startTestServer(kind, {
      onQuery: (sql) => (isRequestStatement(sql) ? statements.push(sql) : undefined),
    });
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

    const asTenant = await server.gql<{ _entities: ({ id: string; slug: string } | null)[] }>(
      ENTITIES,
      { representations },
      token,
    );
    expect(asTenant.body.errors).toBeUndefined();
    expect(asTenant.body.data?._entities).toEqual([{ id: mine, slug: `ent-mine-${kind}` }, null, null, null, null]);

    const asAdmin = await server.gql<{ _entities: ({ id: string } | null)[] }>(ENTITIES, { representations });
    expect(asAdmin.body.data?._entities.map((e) => e?.id ?? null)).toEqual([mine, theirs, null, null, null]);
  });

  it('answers null, never an error, for a representation that is not an object or names no entity type', async () => {
    const [mine] = await createTenants((q) => server.gql(q), [`ent-odd-${kind}`]);
    const representations = [
      {},
      { id: mine },
      { __typename: 'NoSuchType', id: mine },
      { __typename: 'Query', id: mine },
      { __typename: 'TenantRole', id: mine },
      { __typename: 7, id: mine },
      { __typename: null, id: mine },
      'Tenant',
      42,
      [tenantRef(mine)],
      tenantRef(mine),
    ];
    const res = await server.gql<{ _entities: ({ id: string } | null)[] }>(ENTITIES, { representations });
    expect(res.body.errors).toBeUndefined();
    expect(res.body.data?._entities).toEqual([
      ...representations.slice(0, -1).map(() => null),
      { id: mine, slug: `ent-odd-${kind}` },
    ]);
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

  const gateway = <T = Record<string, unknown>>(
    query: string,
    variables: Record<string, unknown> = {},
    token: string | null = admin,
  ) => post<T>(federation?.gatewayUrl ?? '', query, variables, token);

  /** An API token for a tenant role, minted against the running server's database and keys. */
  async function apiToken(tenantGlobalId: string, role: TenantRole): Promise<string> {
    const config = loadConfig({ FLOTILLA_DATABASE_URL: databaseUrl });
    const orm = await openOrm(config.databaseUrl);
    try {
      const keys = new SigningKeys(orm, undefined);
      await keys.init();
      const tokens = new TokenService(orm, keys, { issuer: config.tokenIssuer, audience: config.tokenAudience });
      const minted = await orm.em.fork().transactional((tx) =>
        tokens.mint(tx, {
          kind: 'API',
          subject: `api:${role.toLowerCase()}`,
          tenantId: localId(tenantGlobalId),
          role,
          ttlSeconds: 3600,
        }),
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
    expect(budget.body).toEqual({
      data: { setBudget: { slug: 'acme', billing: { plan: 'TEAM', monthlyBudgetCents: 12_500 } } },
    });

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

    const other = await gateway<{ tenant: unknown }>(
      'query ($id: ID!) { tenant(id: $id) { slug billing { monthlyBudgetCents } } }',
      { id: theirs },
      token,
    );
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

  const ENRICHED_EVENTS = /* GraphQL */ `
    subscription Enriched($t: ID!, $after: String) {
      tenantEvents(tenantId: $t, after: $after, types: [SANDBOX_STATUS_CHANGED]) {
        type
        sandbox { name costCentsPerHour }
        tenant { slug billing { plan monthlyBudgetCents } }
      }
    }
  `;
  const CREATE_SANDBOX = /* GraphQL */ `
    mutation CreateSandbox($input: CreateSandboxInput!) {
      createSandbox(input: $input) { __typename ... on SandboxPayload { sandbox { id } } ... on Error { code message } }
    }
  `;
  const SANDBOX_RESOURCES = { cpuMillis: 1500, memoryMb: 2048 };

  /** A tenant with a budget, a worker to place its sandboxes and one sandbox; its latest event cursor. */
  async function fleet(slug: string): Promise<{ tenantId: string; cursor: string }> {
    const [tenantId] = await createTenants((q) => gateway(q), [slug]);
    await gateway(SET_BUDGET, { id: tenantId, cents: 50_000 });
    const worker = await gateway<{ registerWorker: { __typename: string } }>(
      'mutation ($input: RegisterWorkerInput!) { registerWorker(input: $input) { __typename } }',
      { input: { name: `${slug}-worker`, capacity: { cpuMillis: 8000, memoryMb: 16_384 } } },
    );
    expect(worker.body.data?.registerWorker.__typename).toBe('RegisterWorkerPayload');
    await createSandboxAtGateway(tenantId, `${slug}-first`);
    const events = await gateway<{ events: { edges: { cursor: string }[] } }>(
      'query ($t: ID!) { events(tenantId: $t, first: 100) { edges { cursor } } }',
      {
        t: tenantId,
      },
    );
    const cursor = events.body.data?.events.edges.at(-1)?.cursor;
    if (!cursor) throw new Error(`no events for ${slug}: ${JSON.stringify(events.body)}`);
    return { tenantId, cursor };
  }

  async function createSandboxAtGateway(tenantId: string, name: string): Promise<void> {
    const res = await gateway<{ createSandbox: { __typename: string } }>(CREATE_SANDBOX, {
      input: { tenantId, name, image: 'ghcr.io/acme/agent:1', command: ['agent'], resources: SANDBOX_RESOURCES },
    });
    expect(res.body.data?.createSandbox, JSON.stringify(res.body)).toMatchObject({ __typename: 'SandboxPayload' });
  }

  const enriched = (slug: string, name: string) => ({
    tenantEvents: {
      type: 'SANDBOX_STATUS_CHANGED',
      sandbox: { name, costCentsPerHour: costCentsPerHour(SANDBOX_RESOURCES) },
      tenant: { slug, billing: { plan: 'TEAM', monthlyBudgetCents: 50_000 } },
    },
  });

  // Subscribing after the latest cursor means the event arrives whether the gateway's upstream
  // subscription starts before the mutation (live) or after it (replay): no sleep needed.
  it.each([
    ['graphql-ws', wsTake],
    ['SSE', sseTake],
  ])(
    'streams Flotilla events enriched with both subgraphs to a tenant token subscribed at the gateway over %s',
    async (transport, take) => {
      const slug = `live-${transport === 'SSE' ? 'sse' : 'ws'}`;
      const { tenantId, cursor } = await fleet(slug);
      const viewer = await apiToken(tenantId, 'VIEWER');

      const pending = take(federation?.gatewayUrl ?? '', viewer, ENRICHED_EVENTS, { t: tenantId, after: cursor }, 1);
      await createSandboxAtGateway(tenantId, `${slug}-second`);
      const results = await pending;

      expect(results).toEqual([{ data: enriched(slug, `${slug}-second`) }]);
    },
  );

  it.each([
    ['graphql-ws', wsTake],
    ['SSE', sseTake],
  ])(
    "refuses another tenant's token (NOT_FOUND) and a missing or forged token (UNAUTHENTICATED) over %s",
    async (transport, take) => {
      const slug = `guarded-${transport === 'SSE' ? 'sse' : 'ws'}`;
      const { tenantId, cursor } = await fleet(slug);
      const [otherTenant] = await createTenants((q) => gateway(q), [`${slug}-other`]);
      const outsider = await apiToken(otherTenant, 'ADMIN');
      const url = federation?.gatewayUrl ?? '';
      // After `cursor`, a permitted subscriber would get this sandbox's event at once, by replay.
      await createSandboxAtGateway(tenantId, `${slug}-second`);

      const foreign = await take(url, outsider, ENRICHED_EVENTS, { t: tenantId, after: cursor }, 1);
      expect(foreign.flatMap((r) => (r.data?.tenantEvents ? [r.data.tenantEvents] : []))).toEqual([]);
      expect(codesOf(foreign)).toContain('NOT_FOUND');

      const anonymous = await take(url, null, ENRICHED_EVENTS, { t: tenantId, after: cursor }, 1);
      expect(anonymous.flatMap((r) => (r.data?.tenantEvents ? [r.data.tenantEvents] : []))).toEqual([]);
      expect(codesOf(anonymous)).toContain('UNAUTHENTICATED');

      // A token Flotilla does not accept is refused at once with Flotilla's own answer.
      const forged = await take(url, 'not.a.token', ENRICHED_EVENTS, { t: tenantId, after: cursor }, 1);
      expect(forged.flatMap((r) => (r.data?.tenantEvents ? [r.data.tenantEvents] : []))).toEqual([]);
      expect(codesOf(forged)).toContain('UNAUTHENTICATED');
    },
  );
});
