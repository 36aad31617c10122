import { readFileSync } from 'node:fs';
import { buildSchema, type GraphQLInputType, getNamedType, isInputObjectType, isObjectType } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { schema } from '../../resolvers/index.js';
import { stringInputLimits } from '../../resolvers/input-lengths.js';
import { Sandbox } from '../../src/db/entities/sandbox.js';
import { Worker } from '../../src/db/entities/worker.js';
import {
  CURSOR_INPUT_MAX_LENGTH,
  ID_INPUT_MAX_LENGTH,
  JSON_INPUT_MAX_DEPTH,
  JSON_INPUT_MAX_LENGTH,
  REGION_MAX_LENGTH,
} from '../../src/domain/input-limits.js';
import { MAX_DOCUMENT_NESTING } from '../../src/server/token-limit.js';
import { DRIVERS } from '../helpers/databases.js';
import { createSandbox, createTenant, type RegisteredWorker, registerWorker, uniqueName } from '../helpers/fleet.js';
import { type GraphQLResponse, startTestServer, type TestServer, wsRequest } from '../helpers/server.js';

/**
 * Values that each reached INTERNAL_SERVER_ERROR once (issue 14, defect 15): every one is now a
 * coded client error, over HTTP and over graphql-ws, and changes nothing.
 */

type Body = GraphQLResponse['body'];

/** A value nested `depth` objects deep, as JSON text (JSON.stringify itself cannot build it). */
function nestedJson(depth: number): string {
  return `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

/** A selection nested `depth` levels deep. */
function nestedSelection(depth: number): string {
  return `{ ${'viewer { '.repeat(depth)}subject${' }'.repeat(depth)} }`;
}

const HEARTBEAT = 'mutation($i: HeartbeatInput!) { heartbeat(input: $i) { __typename ... on Error { code message } } }';
const REGISTER =
  'mutation($i: RegisterWorkerInput!) { registerWorker(input: $i) { __typename ... on Error { code message } ... on ValidationError { field } } }';

/** POSTs a request body given as text, for values the client side cannot serialise. */
async function postRaw(server: TestServer, body: string, token: string): Promise<{ status: number; body: Body }> {
  const res = await fetch(server.app.graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body,
  });
  return { status: res.status, body: (await res.json()) as Body };
}

/**
 * Sends one graphql-ws `subscribe` frame given as text on a fresh socket and returns the first
 * answer for it (`next` payload or `error` errors), and whether the socket stayed open.
 */
async function wsRaw(
  server: TestServer,
  token: string,
  payload: string,
): Promise<{ errors: Body['errors']; open: boolean }> {
  const socket = new WebSocket(server.app.graphqlUrl.replace(/^http/, 'ws'), 'graphql-transport-ws');
  try {
    return await new Promise((resolve, reject) => {
      socket.on('open', () =>
        socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })),
      );
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as { type: string; payload?: unknown };
        if (message.type === 'connection_ack') socket.send(`{"id":"1","type":"subscribe","payload":${payload}}`);
        if (message.type === 'next')
          resolve({ errors: (message.payload as Body).errors, open: socket.readyState === socket.OPEN });
        if (message.type === 'error')
          resolve({ errors: message.payload as Body['errors'], open: socket.readyState === socket.OPEN });
      });
      socket.on('close', (code, reason) => reject(new Error(`socket closed: ${code} ${reason.toString()}`)));
      socket.on('error', reject);
    });
  } finally {
    socket.close();
  }
}

const codeOf = (body: Body | { errors?: Body['errors'] }) => body.errors?.[0]?.extensions?.code;

describe('string inputs', () => {
  it('every String and ID input of the schema, argument or input field, has a length limit', () => {
    // Walked from the printed schema, independently of the code that enforces the limits.
    const printed = buildSchema(readFileSync('schema/schema.graphql', 'utf8'));
    const coordinates: string[] = [];
    const isString = (t: GraphQLInputType) => ['String', 'ID'].includes(getNamedType(t).name);
    for (const type of Object.values(printed.getTypeMap())) {
      if (type.name.startsWith('__')) continue;
      if (isInputObjectType(type))
        for (const field of Object.values(type.getFields()))
          if (isString(field.type)) coordinates.push(`${type.name}.${field.name}`);
      if (isObjectType(type))
        for (const field of Object.values(type.getFields()))
          for (const arg of field.args)
            if (isString(arg.type)) coordinates.push(`${type.name}.${field.name}(${arg.name})`);
    }
    const limits = stringInputLimits(schema);
    expect(coordinates.length).toBeGreaterThan(50);
    for (const coordinate of coordinates) {
      const limit = limits.get(coordinate);
      expect({ coordinate, limited: limit !== undefined && limit > 0 && limit <= 1024 * 1024 }).toEqual({
        coordinate,
        limited: true,
      });
    }
    expect(limits.get('RegisterWorkerInput.region')).toBe(REGION_MAX_LENGTH);
    expect(limits.get('PlacementInput.region')).toBe(REGION_MAX_LENGTH);
  });
});

describe.each(DRIVERS)('hostile values on %s', (kind) => {
  let server: TestServer;
  let tenantId: string;
  let worker: RegisteredWorker;

  beforeAll(async () => {
    server = await startTestServer(kind, { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' } });
    tenantId = await createTenant(server, uniqueName('hostile'));
    worker = await registerWorker(server, uniqueName('w'), { tenantId });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function counts(): Promise<{ workers: number; sandboxes: number }> {
    const em = server.app.db.orm.em.fork();
    return { workers: await em.count(Worker, {}), sandboxes: await em.count(Sandbox, {}) };
  }

  it('refuses a selection nested thousands of levels deep with QUERY_TOO_DEEP, over HTTP and WebSocket', async () => {
    const deep = nestedSelection(2400);
    const http = await server.gql(deep);
    expect(codeOf(http.body)).toBe('QUERY_TOO_DEEP');
    expect(http.body.errors?.[0].message).toContain(`${MAX_DOCUMENT_NESTING}`);

    const overSocket = await wsRaw(server, server.adminToken, JSON.stringify({ query: deep }));
    expect({ code: codeOf(overSocket), open: overSocket.open }).toEqual({ code: 'QUERY_TOO_DEEP', open: true });

    // Far below the cap, the depth limit proper still decides.
    expect(codeOf((await server.gql(nestedSelection(40))).body)).toBe('QUERY_TOO_DEEP');
    expect((await server.gql('{ viewer { subject } }')).body.errors).toBeUndefined();
  });

  it('refuses JSON inputs nested too deep or too long with VALIDATION_FAILED, over HTTP and WebSocket', async () => {
    const deep = `{"query":${JSON.stringify(HEARTBEAT)},"variables":{"i":{"observed":${nestedJson(5000)}}}}`;
    const http = await postRaw(server, deep, worker.token);
    expect(codeOf(http.body)).toBe('VALIDATION_FAILED');
    expect(http.body.errors?.[0].message).toContain(`at most ${JSON_INPUT_MAX_DEPTH} levels`);

    const overSocket = await wsRaw(
      server,
      worker.token,
      `{"query":${JSON.stringify(HEARTBEAT)},"variables":{"i":{"observed":${nestedJson(5000)}}}}`,
    );
    expect({ code: codeOf(overSocket), open: overSocket.open }).toEqual({ code: 'VALIDATION_FAILED', open: true });

    const long = await server.gql(
      HEARTBEAT,
      { i: { observed: { log: 'x'.repeat(JSON_INPUT_MAX_LENGTH) } } },
      worker.token,
    );
    expect(codeOf(long.body)).toBe('VALIDATION_FAILED');
    expect(long.body.errors?.[0].message).toContain(`at most ${JSON_INPUT_MAX_LENGTH} characters`);

    // Within the limits, the same input is taken.
    const fine = await server.gql<{ heartbeat: { __typename: string } }>(
      HEARTBEAT,
      { i: { observed: JSON.parse(nestedJson(JSON_INPUT_MAX_DEPTH - 1)) } },
      worker.token,
    );
    expect(fine.body.data?.heartbeat.__typename).toBe('WorkerPayload');
  });

  it('gives a variable of the wrong type the BAD_USER_INPUT code, over HTTP and WebSocket', async () => {
    const query = 'query($n: Int) { tenants(first: $n) { totalCount } }';
    const http = await server.gql(query, { n: 'many' });
    expect(codeOf(http.body)).toBe('BAD_USER_INPUT');
    expect(http.body.errors?.[0].message).toMatch(/\$n/);
    expect(codeOf((await wsRequest(server.ws(), query, { n: 'many' })) as Body)).toBe('BAD_USER_INPUT');
  });

  it('refuses over-long strings with a typed ValidationError or VALIDATION_FAILED, over HTTP and WebSocket', async () => {
    const before = await counts();
    const input = (region: string) => ({
      i: { name: uniqueName('long'), region, capacity: { cpuMillis: 1000, memoryMb: 1024 } },
    });
    const refused = { __typename: 'ValidationError', code: 'VALIDATION_FAILED', field: 'input.region' };

    const http = await server.gql<{ registerWorker: Record<string, unknown> }>(REGISTER, input('r'.repeat(100_000)));
    expect(http.body.data?.registerWorker).toMatchObject(refused);
    const client = server.ws();
    const overSocket = await wsRequest<{ registerWorker: Record<string, unknown> }>(
      client,
      REGISTER,
      input('r'.repeat(REGION_MAX_LENGTH + 1)),
    );
    expect(overSocket.data?.registerWorker).toMatchObject(refused);

    const placed = await createSandbox(server, tenantId, { placement: { region: 'r'.repeat(REGION_MAX_LENGTH + 1) } });
    expect(placed).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED' });

    const id = await server.gql('query($id: ID!) { sandbox(id: $id) { id } }', {
      id: 'x'.repeat(ID_INPUT_MAX_LENGTH + 1),
    });
    expect(codeOf(id.body)).toBe('VALIDATION_FAILED');
    const after = await server.gql('query($after: String) { tenants(after: $after) { totalCount } }', {
      after: 'c'.repeat(CURSOR_INPUT_MAX_LENGTH + 1),
    });
    expect(codeOf(after.body)).toBe('VALIDATION_FAILED');
    const subscribed = await wsRequest(
      client,
      'subscription($t: ID!, $a: String) { tenantEvents(tenantId: $t, after: $a) { cursor } }',
      { t: tenantId, a: 'c'.repeat(CURSOR_INPUT_MAX_LENGTH + 1) },
    );
    expect(codeOf(subscribed as Body)).toBe('VALIDATION_FAILED');
    expect(await counts()).toEqual(before);

    // At the limit, a region is taken.
    const atLimit = await server.gql<{ registerWorker: { __typename: string } }>(
      REGISTER,
      input('r'.repeat(REGION_MAX_LENGTH)),
    );
    expect(atLimit.body.data?.registerWorker.__typename).toBe('RegisterWorkerPayload');
  });
});
