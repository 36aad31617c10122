// Walks the schema for every id argument and input field (type ID, name ending in id/Id/ids) of
// Query, Mutation and Subscription, and shows one behaviour for each: a malformed id or one of
// another type is VALIDATION_FAILED, and another tenant's object answers exactly like a missing one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import { createSandbox, createTenant, dataOf, registerWorker, uniqueName } from '../helpers/fleet.js';
import { type GraphQLResponse, localId, startTestServer, type TestServer } from '../helpers/server.js';

interface TypeRef {
  kind: string;
  name: string | null;
  ofType: TypeRef | null;
}
interface InputValue {
  name: string;
  type: TypeRef;
}
interface FullType {
  kind: string;
  name: string;
  fields: { name: string; args: InputValue[]; type: TypeRef }[] | null;
  inputFields: InputValue[] | null;
  enumValues: { name: string }[] | null;
}

const TYPE_REF = 'kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } }';
const INTROSPECT = `{ __schema { types { kind name
  fields { name type { ${TYPE_REF} } args { name type { ${TYPE_REF} } } }
  inputFields { name type { ${TYPE_REF} } }
  enumValues { name } } } }`;

const ROOTS = { Query: 'query', Mutation: 'mutation', Subscription: 'subscription' } as const;
const ID_NAME = /(^id|Id|^ids|Ids)$/;
/** Fields only a worker token may call; everything else is called as a tenant ADMIN. */
const WORKER_FIELDS = new Set([
  'acquireLease',
  'renewLease',
  'releaseLease',
  'reportSandboxStatus',
  'reportAgentStatus',
  'postAgentMessage',
  'postAgentQuestion',
  'reportMessageDelivery',
  'heartbeat',
  'workerAssignments',
]);
/** Valid fillers for required non-id scalars, by name; others get a default of their type. */
const FILLERS: Record<string, unknown> = {
  fencingToken: '1',
  image: 'ghcr.io/acme/agent:1',
  body: 'hi',
  prompt: 'Go on?',
  ttlSeconds: 60,
  cpuMillis: 100,
  memoryMb: 100,
};
/** Id names whose node type is not the name without its suffix. */
const ID_TYPE_ALIASES: Record<string, string> = {
  token: 'ApiToken',
  upToMessage: 'Message',
  waitForSandbox: 'Sandbox',
};
const NOWHERE = '00000000-0000-7000-8000-000000000000';

interface IdSite {
  root: keyof typeof ROOTS;
  field: string;
  /** Argument name, then input field names down to the id. */
  path: string[];
  list: boolean;
  /** The node type the id is of; null for `node`/`nodes`, which take any. */
  nodeType: string | null;
}

function named(type: TypeRef): TypeRef {
  return type.ofType ? named(type.ofType) : type;
}
function isList(type: TypeRef): boolean {
  return type.kind === 'LIST' || (type.kind === 'NON_NULL' && type.ofType?.kind === 'LIST');
}
function printType(type: TypeRef): string {
  if (type.kind === 'NON_NULL') return `${printType(type.ofType as TypeRef)}!`;
  if (type.kind === 'LIST') return `[${printType(type.ofType as TypeRef)}]`;
  return type.name as string;
}
function nodeTypeOf(field: string, name: string): string | null {
  if (field === 'node' || field === 'nodes') return null;
  const stem = name === 'id' || name === 'ids' ? field : name.replace(/Ids?$/, '');
  return ID_TYPE_ALIASES[stem] ?? stem.charAt(0).toUpperCase() + stem.slice(1);
}
function encode(typename: string, id: string): string {
  return Buffer.from(`${typename}:${id}`, 'utf8').toString('base64url');
}

describe.each(DRIVERS)('id arguments on %s', (kind) => {
  let server: TestServer;
  let types: Map<string, FullType>;
  let sites: IdSite[];
  let adminToken: string;
  let workerToken: string;
  /** A visible object of each node type, and one of another tenant. */
  const mine: Record<string, string> = {};
  const theirs: Record<string, string> = {};

  beforeAll(async () => {
    server = await startTestServer(kind, { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '1000000' } });
    const schema = dataOf(await server.gql<{ __schema: { types: FullType[] } }>(INTROSPECT)).__schema;
    types = new Map(schema.types.map((t) => [t.name, t]));
    sites = findSites();

    for (const [side, ids] of [
      ['mine', mine],
      ['theirs', theirs],
    ] as const) {
      ids.Tenant = await createTenant(server, uniqueName(`ids-${side}`));
      const worker = await registerWorker(server, uniqueName(`ids-${side}`), { tenantId: ids.Tenant });
      ids.Worker = worker.id;
      if (side === 'mine') workerToken = worker.token;
      const sandbox = await createSandbox(server, ids.Tenant);
      ids.Sandbox = sandbox.sandbox.id;
      const made = dataOf(
        await server.gql<{
          sendMessage: { posted: { id: string } };
          addMember: { member: { id: string } };
          createApiToken: { apiToken: { id: string } };
          createChannel: { channel: { id: string } };
        }>(
          `mutation($m: SendMessageInput!, $a: AddMemberInput!, $t: CreateApiTokenInput!, $c: CreateChannelInput!) {
            sendMessage(input: $m) { ... on MessagePayload { posted { id } } }
            addMember(input: $a) { ... on AddMemberPayload { member { id } } }
            createApiToken(input: $t) { ... on CreateApiTokenPayload { apiToken { id } } }
            createChannel(input: $c) { ... on ChannelSecretPayload { channel { id } } } }`,
          {
            m: { sandboxId: ids.Sandbox, body: 'hello' },
            a: { tenantId: ids.Tenant, subject: uniqueName('someone'), role: 'VIEWER' },
            t: { tenantId: ids.Tenant, role: 'VIEWER', ttlSeconds: 3600 },
            c: { tenantId: ids.Tenant, name: 'ids', outboundUrl: 'http://127.0.0.1:9/' },
          },
        ),
      );
      ids.Message = made.sendMessage.posted.id;
      ids.Member = made.addMember.member.id;
      ids.ApiToken = made.createApiToken.apiToken.id;
      // A question needs the worker holding the sandbox's lease; its first token is 1 (the fencingToken filler).
      const asked = dataOf(
        await server.gql<{ acquireLease: { __typename: string }; postAgentQuestion: { question: { id: string } } }>(
          `mutation($l: AcquireLeaseInput!, $q: PostAgentQuestionInput!) {
            acquireLease(input: $l) { __typename }
            postAgentQuestion(input: $q) { ... on QuestionPayload { question { id } } } }`,
          {
            l: { sandboxId: ids.Sandbox, ttlSeconds: 3600 },
            q: { sandboxId: ids.Sandbox, fencingToken: '1', prompt: 'Go on?', options: ['x'] },
          },
          worker.token,
        ),
      );
      ids.Question = asked.postAgentQuestion.question.id;
      ids.Channel = made.createChannel.channel.id;
    }
    adminToken = await server.apiToken(localId(mine.Tenant), 'ADMIN', uniqueName('ids-admin'));
  });
  afterAll(async () => {
    await server?.close();
  });

  function findSites(): IdSite[] {
    const found: IdSite[] = [];
    const walk = (root: IdSite['root'], field: string, value: InputValue, path: string[], seen: Set<string>) => {
      const type = named(value.type);
      if (type.name === 'ID' && ID_NAME.test(value.name)) {
        found.push({ root, field, path, list: isList(value.type), nodeType: nodeTypeOf(field, value.name) });
      } else if (type.kind === 'INPUT_OBJECT' && type.name && !seen.has(type.name)) {
        for (const inner of types.get(type.name)?.inputFields ?? [])
          walk(root, field, inner, [...path, inner.name], new Set([...seen, type.name]));
      }
    };
    for (const root of Object.keys(ROOTS) as IdSite['root'][])
      for (const field of types.get(root)?.fields ?? [])
        for (const arg of field.args) walk(root, field.name, arg, [arg.name], new Set());
    return found;
  }

  /** A valid value for a required input of this type, with `override` at `path`. */
  function fill(type: TypeRef, name: string, field: string, path: string[], override: unknown): unknown {
    if (type.kind === 'NON_NULL') return fill(type.ofType as TypeRef, name, field, path, override);
    if (path.length === 0 && override !== undefined) return override;
    if (type.kind === 'LIST') return [fill(type.ofType as TypeRef, name, field, path, override)];
    if (type.kind === 'INPUT_OBJECT') {
      const value: Record<string, unknown> = {};
      for (const inner of types.get(type.name as string)?.inputFields ?? []) {
        if (inner.name === path[0]) value[inner.name] = fill(inner.type, inner.name, field, path.slice(1), override);
        else if (inner.type.kind === 'NON_NULL') value[inner.name] = fill(inner.type, inner.name, field, [], undefined);
      }
      return value;
    }
    if (type.kind === 'ENUM') return types.get(type.name as string)?.enumValues?.[0]?.name;
    if (name in FILLERS) return FILLERS[name];
    if (type.name === 'ID') {
      const nodeType = nodeTypeOf(field, name);
      expect(nodeType && mine[nodeType], `no filler for id ${field}.${name}`).toBeTruthy();
      return mine[nodeType as string];
    }
    if (type.name === 'Int') return 1;
    if (type.name === 'Boolean') return false;
    if (type.name === 'JSON') return {};
    return 'x';
  }

  /** Calls the site's field with `id` at its path, as the caller the field needs. */
  async function call(site: IdSite, id: string): Promise<GraphQLResponse> {
    const field = types.get(site.root)?.fields?.find((f) => f.name === site.field);
    if (!field) throw new Error(`${site.root}.${site.field} vanished`);
    const args = field.args.filter((a) => a.name === site.path[0] || a.type.kind === 'NON_NULL');
    const variables = Object.fromEntries(
      args.filter((a) => a.name !== site.path[0]).map((a) => [a.name, fill(a.type, a.name, site.field, [], undefined)]),
    );
    const arg = args.find((a) => a.name === site.path[0]) as InputValue;
    variables[arg.name] = fill(arg.type, arg.name, site.field, site.path.slice(1), site.list ? [id] : id);
    const returned = types.get(named(field.type).name as string);
    const selection =
      returned?.kind === 'UNION'
        ? '{ __typename ... on Error { code message } }'
        : returned?.name?.endsWith('Connection')
          ? '{ __typename totalCount }'
          : returned?.kind === 'OBJECT' || returned?.kind === 'INTERFACE'
            ? '{ __typename }'
            : '';
    const operation = `${ROOTS[site.root]}(${args.map((a) => `$${a.name}: ${printType(a.type)}`).join(', ')}) {
      ${site.field}(${args.map((a) => `${a.name}: $${a.name}`).join(', ')}) ${selection} }`;
    const token = WORKER_FIELDS.has(site.field) ? workerToken : adminToken;
    if (site.root !== 'Subscription') return server.gql(operation, variables, token);
    return subscribeOnce(operation, variables, token);
  }

  /** The first answer of a subscription (its error or first event), or "open" when nothing comes. */
  async function subscribeOnce(query: string, variables: Record<string, unknown>, token: string) {
    const client = server.ws(token);
    const body = await new Promise<GraphQLResponse['body']>((resolve) => {
      const timer = setTimeout(() => resolve({ data: { open: true } }), 1500);
      const stop = client.subscribe(
        { query, variables },
        {
          next: (value) => {
            clearTimeout(timer);
            stop();
            resolve(value as GraphQLResponse['body']);
          },
          error: (err) => {
            clearTimeout(timer);
            resolve({ errors: (Array.isArray(err) ? err : [err]) as GraphQLResponse['body']['errors'] });
          },
          complete: () => undefined,
        },
      );
    });
    await client.dispose();
    return { status: 200, body };
  }

  /** The code a caller sees: the typed error's, else the first GraphQL error's. */
  function codeOf(res: GraphQLResponse, site: IdSite): string | undefined {
    const result = (res.body.data as Record<string, { code?: string } | null> | null | undefined)?.[site.field];
    return result?.code ?? res.body.errors?.[0]?.extensions?.code;
  }

  /** The answer with uuids and their global ids blanked, so two ids can be compared. */
  function shapeOf(res: GraphQLResponse): string {
    return JSON.stringify(res.body).replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<uuid>');
  }

  it('finds the id arguments of every root type, each of a known node type', () => {
    const names = sites.map((s) => `${s.field}(${s.path.join('.')})`);
    for (const expected of [
      'node(id)',
      'nodes(ids)',
      'tenant(id)',
      'sandboxes(filter.workerId)',
      'messageAdded(sandboxId)',
    ])
      expect(names).toContain(expected);
    expect(new Set(sites.map((s) => s.root))).toEqual(new Set(['Query', 'Mutation', 'Subscription']));
    for (const site of sites)
      if (site.nodeType !== null) expect(theirs[site.nodeType], `${site.field}(${site.path.join('.')})`).toBeTruthy();
  });

  it('has no id arguments outside the root types, where this walk would miss them', () => {
    const outside = [...types.values()]
      .filter((t) => t.kind === 'OBJECT' && !(t.name in ROOTS) && !t.name.startsWith('__'))
      .flatMap((t) =>
        (t.fields ?? []).flatMap((f) =>
          f.args.filter((a) => named(a.type).name === 'ID').map((a) => `${t.name}.${f.name}(${a.name})`),
        ),
      );
    expect(outside).toEqual([]);
  });

  it('refuses a malformed id or one of another type with VALIDATION_FAILED, everywhere', async () => {
    for (const site of sites) {
      const label = `${site.field}(${site.path.join('.')})`;
      const wrongType = encode(site.nodeType === 'Sandbox' ? 'Tenant' : 'Sandbox', NOWHERE);
      for (const bad of ['not-an-id', site.nodeType === null ? null : wrongType]) {
        if (bad === null) continue;
        const res = await call(site, bad);
        expect(codeOf(res, site), `${label} with ${bad}: ${JSON.stringify(res.body)}`).toBe('VALIDATION_FAILED');
      }
    }
  });

  it("answers another tenant's object exactly like a missing one, everywhere", async () => {
    for (const site of sites) {
      const label = `${site.field}(${site.path.join('.')})`;
      const nodeType = site.nodeType ?? 'Sandbox';
      const [foreign, missing] = [await call(site, theirs[nodeType]), await call(site, encode(nodeType, NOWHERE))];
      expect(shapeOf(foreign), label).toBe(shapeOf(missing));
    }
  });
});
