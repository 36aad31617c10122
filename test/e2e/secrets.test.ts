import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config/index.js';
import { listSecretKeys, rotateSecrets } from '../../src/ops/secrets-keys.js';
import { WorkerAgent } from '../../src/worker/agent.js';
import { DRIVERS, tempDir } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  type RegisteredWorker,
  type Result,
  registerWorker,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import {
  type GraphQLResponse,
  isRequestStatement,
  localId,
  startTestServer,
  subscribersReach,
  type TestServer,
} from '../helpers/server.js';

/** A FLOTILLA_SECRETS_KEY entry: `kid:` and 32 random bytes in base64. */
const keyEntry = (kid: string) => `${kid}:${randomBytes(32).toString('base64')}`;

/** A value no other text of a test run can contain by chance. */
const secretValue = (label: string) => `${label}-${randomBytes(12).toString('hex')}`;

const VAR_RESULT = `__typename ... on EnvVarPayload { envVar { name scope value updatedAt } } ${ERROR_FIELDS} ... on ValidationError { field }`;
const SECRET_RESULT = `__typename ... on SecretPayload { secret { name scope updatedAt } } ${ERROR_FIELDS} ... on ValidationError { field }`;
const RUNTIME = `runtimeEnvironment(fencingToken: $token) { __typename ... on RuntimeEnvironment { entries { name value secret } } ${ERROR_FIELDS} }`;

interface EnvView {
  name: string;
  scope: string;
  value?: string;
}

/** Every line a server logged, at trace level (SQL statements included). */
function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level: 'trace' }, sink), lines };
}

describe.each(DRIVERS)('environment variables and secrets on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();
  const log = capturingLogger();
  const statements: string[] = [];
  /** Every response body of this suite's GraphQL calls, searched for leaked values. */
  const bodies: string[] = [];
  const kid = 'main1';

  beforeAll(async () => {
    server = await startTestServer(kind, {
      clock,
      logger: log.logger,
      onQuery: (sql) => statements.push(sql),
      env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000', FLOTILLA_SECRETS_KEY: keyEntry(kid) },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function gql<T>(query: string, variables?: Record<string, unknown>, token?: string | null) {
    const res: GraphQLResponse<T> = await server.gql<T>(query, variables, token);
    bodies.push(JSON.stringify(res.body));
    return res;
  }

  async function setVar(input: Record<string, unknown>, token?: string) {
    const res = await gql<{ setEnvVar: Result<{ envVar: EnvView; field?: string }> }>(
      `mutation($input: SetEnvVarInput!) { setEnvVar(input: $input) { ${VAR_RESULT} } }`,
      { input },
      token,
    );
    return dataOf(res).setEnvVar;
  }

  async function setSecret(input: Record<string, unknown>, token?: string) {
    const res = await gql<{ setSecret: Result<{ secret: EnvView; field?: string }> }>(
      `mutation($input: SetSecretInput!) { setSecret(input: $input) { ${SECRET_RESULT} } }`,
      { input },
      token,
    );
    return dataOf(res).setSecret;
  }

  async function remove(field: 'deleteEnvVar' | 'deleteSecret', input: Record<string, unknown>, token?: string) {
    const result = field === 'deleteEnvVar' ? VAR_RESULT : SECRET_RESULT;
    const res = await gql<Record<string, Result<{ envVar?: EnvView; secret?: EnvView }>>>(
      `mutation($input: DeleteEnvInput!) { ${field}(input: $input) { ${result} } }`,
      { input },
      token,
    );
    return dataOf(res)[field];
  }

  async function runtime(sandboxId: string, fencingToken: string, token: string) {
    const res = await gql<{
      sandbox: {
        runtimeEnvironment: Result<{ entries: { name: string; value: string; secret: boolean }[] }>;
      } | null;
    }>(
      `query($id: ID!, $token: String!) { sandbox(id: $id) { ${RUNTIME} } }`,
      { id: sandboxId, token: fencingToken },
      token,
    );
    return dataOf(res).sandbox;
  }

  /** A tenant with its own worker and one sandbox placed on it, its lease held by the worker. */
  async function placed(): Promise<{
    tenantId: string;
    worker: RegisteredWorker;
    sandboxId: string;
    fencingToken: string;
  }> {
    const tenantId = await createTenant(server, uniqueName('env'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    const created = await createSandbox(server, tenantId);
    expect(created.__typename).toBe('SandboxPayload');
    const lease = await acquireLease(server, worker, created.sandbox.id);
    expect(lease.__typename, JSON.stringify(lease)).toBe('LeasePayload');
    return { tenantId, worker, sandboxId: created.sandbox.id, fencingToken: lease.lease.fencingToken };
  }

  const asMap = (entries: { name: string; value: string }[]) =>
    Object.fromEntries(entries.map((e) => [e.name, e.value]));

  it("sets, overrides and deletes: the sandbox's own entry wins over the tenant's, by name", async () => {
    const { tenantId, worker, sandboxId, fencingToken } = await placed();
    expect(await setVar({ tenantId, name: 'GREETING', value: 'hello' })).toMatchObject({
      __typename: 'EnvVarPayload',
      envVar: { name: 'GREETING', scope: 'TENANT', value: 'hello' },
    });
    await setVar({ tenantId, name: 'MODE', value: 'tenant' });
    await setVar({ tenantId, sandboxId, name: 'MODE', value: 'sandbox' });
    const tenantSecret = secretValue('tenant');
    expect(await setSecret({ tenantId, name: 'API_KEY', value: tenantSecret })).toMatchObject({
      __typename: 'SecretPayload',
      secret: { name: 'API_KEY', scope: 'TENANT' },
    });

    const read = await gql<{
      tenant: { envVars: EnvView[]; secrets: EnvView[] };
      sandbox: { envVars: EnvView[]; secrets: EnvView[] };
    }>(
      `query($t: ID!, $s: ID!) {
        tenant(id: $t) { envVars { name scope value } secrets { name scope } }
        sandbox(id: $s) { envVars { name scope value } secrets { name scope } }
      }`,
      { t: tenantId, s: sandboxId },
    );
    expect(dataOf(read)).toEqual({
      tenant: {
        envVars: [
          { name: 'GREETING', scope: 'TENANT', value: 'hello' },
          { name: 'MODE', scope: 'TENANT', value: 'tenant' },
        ],
        secrets: [{ name: 'API_KEY', scope: 'TENANT' }],
      },
      sandbox: {
        envVars: [
          { name: 'GREETING', scope: 'TENANT', value: 'hello' },
          { name: 'MODE', scope: 'SANDBOX', value: 'sandbox' },
        ],
        secrets: [{ name: 'API_KEY', scope: 'TENANT' }],
      },
    });

    const first = await runtime(sandboxId, fencingToken, worker.token);
    expect(first?.runtimeEnvironment.__typename).toBe('RuntimeEnvironment');
    expect(first?.runtimeEnvironment.entries).toEqual([
      { name: 'API_KEY', value: tenantSecret, secret: true },
      { name: 'GREETING', value: 'hello', secret: false },
      { name: 'MODE', value: 'sandbox', secret: false },
    ]);

    // The sandbox's own secret wins; replacing a value keeps one entry.
    const own = secretValue('own');
    expect((await setSecret({ tenantId, sandboxId, name: 'API_KEY', value: 'first' })).__typename).toBe(
      'SecretPayload',
    );
    expect((await setSecret({ tenantId, sandboxId, name: 'API_KEY', value: own })).__typename).toBe('SecretPayload');
    await setVar({ tenantId, name: 'GREETING', value: 'hi' });
    expect(asMap((await runtime(sandboxId, fencingToken, worker.token))?.runtimeEnvironment.entries ?? [])).toEqual({
      API_KEY: own,
      GREETING: 'hi',
      MODE: 'sandbox',
    });

    // Deleting the sandbox's own entries uncovers the tenant's again.
    expect(await remove('deleteEnvVar', { tenantId, sandboxId, name: 'MODE' })).toMatchObject({
      __typename: 'EnvVarPayload',
      envVar: { name: 'MODE', scope: 'SANDBOX' },
    });
    expect(await remove('deleteSecret', { tenantId, sandboxId, name: 'API_KEY' })).toMatchObject({
      __typename: 'SecretPayload',
      secret: { name: 'API_KEY', scope: 'SANDBOX' },
    });
    expect(asMap((await runtime(sandboxId, fencingToken, worker.token))?.runtimeEnvironment.entries ?? [])).toEqual({
      API_KEY: tenantSecret,
      GREETING: 'hi',
      MODE: 'tenant',
    });
    await remove('deleteSecret', { tenantId, name: 'API_KEY' });
    expect(asMap((await runtime(sandboxId, fencingToken, worker.token))?.runtimeEnvironment.entries ?? [])).toEqual({
      GREETING: 'hi',
      MODE: 'tenant',
    });

    // Deleting what is not there, and a variable by a secret's name (or the other way round), are typed errors.
    expect(await remove('deleteSecret', { tenantId, name: 'API_KEY' })).toMatchObject({
      __typename: 'NotFoundError',
      code: 'NOT_FOUND',
    });
    expect(await remove('deleteSecret', { tenantId, name: 'GREETING' })).toMatchObject({ __typename: 'NotFoundError' });
    expect(await setSecret({ tenantId, name: 'GREETING', value: 'x' })).toMatchObject({
      __typename: 'AlreadyExistsError',
      code: 'ALREADY_EXISTS',
    });
    await setSecret({ tenantId, name: 'TOKEN', value: 'x' });
    expect(await setVar({ tenantId, name: 'TOKEN', value: 'x' })).toMatchObject({ __typename: 'AlreadyExistsError' });
    // A sandbox of another tenant is not a scope of this one.
    const other = await createTenant(server, uniqueName('env'));
    expect(await setVar({ tenantId: other, sandboxId, name: 'X', value: 'y' })).toMatchObject({
      __typename: 'NotFoundError',
    });
  });

  it('refuses bad names and values with a typed ValidationError that never quotes the value', async () => {
    const tenantId = await createTenant(server, uniqueName('env'));
    const value = secretValue('bad');
    for (const name of ['FLOTILLA_PORT_A', 'flotilla_x', '1ABC', 'A-B', 'A B', '', 'x'.repeat(129)]) {
      for (const result of [await setVar({ tenantId, name, value }), await setSecret({ tenantId, name, value })]) {
        expect(result, name).toMatchObject({ __typename: 'ValidationError', field: 'input.name' });
        expect(result.message).not.toContain(value);
      }
    }
    expect((await setVar({ tenantId, name: 'FLOTILLA_X', value })).message).toContain('reserved');
    expect(await setVar({ tenantId, name: 'A'.repeat(128), value: 'ok' })).toMatchObject({
      __typename: 'EnvVarPayload',
    });
    // 32 KiB of UTF-8: 16 Ki two-byte characters fit, one more does not.
    expect((await setSecret({ tenantId, name: 'BIG', value: 'é'.repeat(16 * 1024) })).__typename).toBe('SecretPayload');
    for (const big of ['é'.repeat(16 * 1024 + 1), 'x'.repeat(32 * 1024 + 1), `${value}\u0000`]) {
      const result = await setSecret({ tenantId, name: 'BIG', value: big });
      expect(result).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED' });
      expect(result.field).toMatch(/value$/);
      expect(result.message).not.toContain(value);
    }
  });

  it('lets an OPERATOR write variables, only an ADMIN write secrets, and no one of another tenant', async () => {
    const { tenantId, sandboxId } = await placed();
    const viewer = await server.apiToken(localId(tenantId), 'VIEWER');
    const operator = await server.apiToken(localId(tenantId), 'OPERATOR');
    const admin = await server.apiToken(localId(tenantId), 'ADMIN');
    const outsider = await server.apiToken(localId(await createTenant(server, uniqueName('env'))), 'ADMIN');

    expect(await setVar({ tenantId, name: 'A', value: '1' }, viewer)).toMatchObject({ __typename: 'ForbiddenError' });
    expect(await setVar({ tenantId, sandboxId, name: 'A', value: '1' }, operator)).toMatchObject({
      __typename: 'EnvVarPayload',
    });
    expect(await setSecret({ tenantId, name: 'S', value: 'v' }, operator)).toMatchObject({
      __typename: 'ForbiddenError',
    });
    expect(await setSecret({ tenantId, name: 'S', value: 'v' }, admin)).toMatchObject({ __typename: 'SecretPayload' });
    expect(await remove('deleteSecret', { tenantId, name: 'S' }, operator)).toMatchObject({
      __typename: 'ForbiddenError',
    });
    expect(await remove('deleteEnvVar', { tenantId, sandboxId, name: 'A' }, viewer)).toMatchObject({
      __typename: 'ForbiddenError',
    });
    for (const token of [outsider]) {
      expect(await setVar({ tenantId, name: 'B', value: '1' }, token)).toMatchObject({ __typename: 'ForbiddenError' });
      expect(await setSecret({ tenantId, name: 'B', value: '1' }, token)).toMatchObject({
        __typename: 'ForbiddenError',
      });
    }
    // A VIEWER reads names (and variables' values); another tenant reads nothing.
    const asViewer = await gql<{ tenant: { secrets: EnvView[] } }>(
      'query($t: ID!) { tenant(id: $t) { secrets { name scope } } }',
      { t: tenantId },
      viewer,
    );
    expect(dataOf(asViewer).tenant.secrets).toEqual([{ name: 'S', scope: 'TENANT' }]);
    const asOutsider = await gql<{ tenant: null; sandbox: null }>(
      'query($t: ID!, $s: ID!) { tenant(id: $t) { secrets { name } } sandbox(id: $s) { secrets { name } } }',
      { t: tenantId, s: sandboxId },
      outsider,
    );
    expect(dataOf(asOutsider)).toEqual({ tenant: null, sandbox: null });
  });

  it('gives the values only to the worker holding the lease with its current fencing token', async () => {
    const { tenantId, worker, sandboxId, fencingToken } = await placed();
    const value = secretValue('matrix');
    await setSecret({ tenantId, name: 'API_KEY', value });
    const before = bodies.length;

    // People, whatever their role (a platform admin too): a typed ForbiddenError, no value.
    for (const token of [
      await server.apiToken(localId(tenantId), 'VIEWER'),
      await server.apiToken(localId(tenantId), 'ADMIN'),
      server.adminToken,
    ]) {
      expect((await runtime(sandboxId, fencingToken, token))?.runtimeEnvironment).toMatchObject({
        __typename: 'ForbiddenError',
        code: 'FORBIDDEN',
      });
    }
    // Another tenant's person cannot even see the sandbox.
    const outsider = await server.apiToken(localId(await createTenant(server, uniqueName('env'))), 'ADMIN');
    expect(await runtime(sandboxId, fencingToken, outsider)).toBeNull();
    // Another worker (of another tenant, or of this one without the placement) sees no such sandbox.
    const stranger = await registerWorker(server, uniqueName('w'));
    expect(await runtime(sandboxId, fencingToken, stranger.token)).toBeNull();
    // The worker it is placed on, with a token that is not the current one: stale.
    expect((await runtime(sandboxId, '999', worker.token))?.runtimeEnvironment).toMatchObject({
      __typename: 'StaleFencingTokenError',
    });
    // Acquiring again bumps the token: the old one is stale from then on.
    const again = await acquireLease(server, worker, sandboxId);
    expect(again.lease.fencingToken).toBe(String(Number(fencingToken) + 1));
    expect((await runtime(sandboxId, fencingToken, worker.token))?.runtimeEnvironment).toMatchObject({
      __typename: 'StaleFencingTokenError',
    });
    for (const body of bodies.slice(before)) expect(body).not.toContain(value);

    const held = await runtime(sandboxId, again.lease.fencingToken, worker.token);
    expect(held?.runtimeEnvironment.entries).toEqual([{ name: 'API_KEY', value, secret: true }]);
  });

  it('never streams the runtime environment: selected in a subscription it is a ForbiddenError', async () => {
    const { tenantId, worker, sandboxId, fencingToken } = await placed();
    const value = secretValue('stream');
    await setSecret({ tenantId, name: 'API_KEY', value });
    const received: unknown[] = [];
    const client = server.ws(worker.token);
    const done = new Promise<void>((resolve, reject) => {
      client.subscribe(
        {
          query: `subscription($id: ID!, $token: String!) { sandboxEvents(sandboxId: $id) { type sandbox { ${RUNTIME} } } }`,
          variables: { id: sandboxId, token: fencingToken },
        },
        {
          next: (result) => {
            received.push(result);
            resolve();
          },
          error: (err) => reject(err instanceof Error ? err : new Error(JSON.stringify(err))),
          complete: () => resolve(),
        },
      );
    });
    // The worker's own fenced write makes an event on the sandbox (once the subscription is live).
    await subscribersReach(server, server.app.events().subscriberCount + 1);
    const report = await gql<{ reportAgentStatus: { __typename: string } }>(
      'mutation($input: ReportAgentStatusInput!) { reportAgentStatus(input: $input) { __typename } }',
      { input: { sandboxId, fencingToken, phase: 'THINKING' } },
      worker.token,
    );
    expect(dataOf(report).reportAgentStatus.__typename).toBe('SandboxPayload');
    await done;
    expect(received).toEqual([
      {
        data: {
          sandboxEvents: {
            type: 'AGENT_STATUS_CHANGED',
            sandbox: {
              runtimeEnvironment: {
                __typename: 'ForbiddenError',
                code: 'FORBIDDEN',
                message: 'runtimeEnvironment is read with a query, never in a subscription',
              },
            },
          },
        },
      },
    ]);
    expect(JSON.stringify(received)).not.toContain(value);
  });

  it("never returns, logs or records a secret's value: not in any response, log line, SQL statement, event or audit entry", async () => {
    const { tenantId, worker, sandboxId, fencingToken } = await placed();
    const value = secretValue('never');
    const own = secretValue('own');
    const before = bodies.length;
    const logsBefore = log.lines.length;
    const statementsBefore = statements.length;

    await setSecret({ tenantId, name: 'API_KEY', value });
    await setSecret({ tenantId, sandboxId, name: 'OWN_KEY', value: own });
    // Refused and failed writes carrying the value.
    await setSecret({ tenantId, name: 'FLOTILLA_NO', value }, await server.apiToken(localId(tenantId), 'OPERATOR'));
    await setSecret({ tenantId, name: 'bad name', value });
    await setSecret({ tenantId, name: 'API_KEY', value: `${value}\u0000` });

    const reads = await gql(
      `query($t: ID!, $s: ID!) {
        tenant(id: $t) { id secrets { name scope updatedAt } envVars { name value }
          auditEntries(first: 100) { edges { node { id actor action targetId outcome } } } }
        sandbox(id: $s) { id secrets { name scope updatedAt } envVars { name value } }
        node(id: $s) { id ... on Sandbox { secrets { name scope updatedAt } envVars { name value } } }
        tenantNode: node(id: $t) { id ... on Tenant { secrets { name scope updatedAt } envVars { name value } } }
        nodes(ids: [$t, $s]) { id ... on Sandbox { secrets { name } } ... on Tenant { secrets { name } } }
        events(tenantId: $t, first: 100) { edges { node { type data } } }
      }`,
      { t: tenantId, s: sandboxId },
    );
    expect(reads.body.errors, JSON.stringify(reads.body.errors)).toBeUndefined();
    await remove('deleteSecret', { tenantId, sandboxId, name: 'OWN_KEY' });
    await setSecret({ tenantId, sandboxId, name: 'OWN_KEY', value: own });

    // Over GET (where Yoga refuses mutations) the variables are in the URL: the request log keeps only the path.
    const viaGet = new URL(server.app.graphqlUrl);
    viaGet.searchParams.set('query', 'mutation($input: SetSecretInput!) { setSecret(input: $input) { __typename } }');
    viaGet.searchParams.set('variables', JSON.stringify({ input: { tenantId, name: 'VIA_GET', value } }));
    const get = await fetch(viaGet, { headers: { authorization: `Bearer ${server.adminToken}` } });
    bodies.push(await get.text());
    expect(get.status).toBeGreaterThanOrEqual(400);

    // The one way out: the lease holder's runtime environment.
    const held = await runtime(sandboxId, fencingToken, worker.token);
    expect(asMap(held?.runtimeEnvironment.entries ?? [])).toEqual({ API_KEY: value, OWN_KEY: own });
    const responses = bodies.slice(before, -1);
    expect(responses.length).toBeGreaterThan(5);
    for (const body of responses) {
      expect(body).not.toContain(value);
      expect(body).not.toContain(own);
    }

    const logged = log.lines.slice(logsBefore).join('');
    expect(logged).toContain('"statement"'); // trace logging was on: every statement was logged
    const sql = statements.slice(statementsBefore).join('\n');
    expect(sql).toMatch(/env_entries/);
    for (const text of [logged, sql]) {
      expect(text).not.toContain(value);
      expect(text).not.toContain(own);
      expect(text).not.toContain(Buffer.from(value).toString('base64'));
    }

    // At rest: only ciphertext with its key id; nothing in events or audit entries.
    const connection = server.app.db.orm.em.fork().getConnection();
    const rows = (await connection.execute(
      'select name, value, ciphertext, key_id from env_entries where tenant_id = ?',
      [localId(tenantId)],
    )) as { name: string; value: string | null; ciphertext: string; key_id: string }[];
    expect(rows.map((r) => r.name).sort()).toEqual(['API_KEY', 'OWN_KEY']);
    for (const row of rows) {
      expect(row.value).toBeNull();
      expect(row.key_id).toBe(kid);
      expect(row.ciphertext.length).toBeGreaterThan(value.length);
    }
    const tables = JSON.stringify([
      rows,
      await connection.execute('select * from events'),
      await connection.execute('select * from audit_entries'),
    ]);
    expect(tables).not.toContain(value);
    expect(tables).not.toContain(own);
    const audit = (await connection.execute('select action, outcome from audit_entries where tenant_id = ?', [
      localId(tenantId),
    ])) as { action: string; outcome: string }[];
    expect(audit.map((a) => `${a.action}:${a.outcome}`)).toEqual(
      expect.arrayContaining(['setSecret:ok', 'deleteSecret:ok', 'readRuntimeEnvironment:ok']),
    );
  });

  it('lists the variables and secrets of a page of sandboxes in two statements, whatever its size', async () => {
    /** A tenant with `count` sandboxes, each with its own variable and secret, plus tenant-wide ones. */
    async function seed(count: number): Promise<string> {
      const tenantId = await createTenant(server, uniqueName('env'), { quota: { maxSandboxes: 100 } });
      await registerWorker(server, uniqueName('w'), { tenantId, cpuMillis: 100_000, memoryMb: 100_000 });
      await setVar({ tenantId, name: 'SHARED', value: 'tenant' });
      await setSecret({ tenantId, name: 'SHARED_KEY', value: 'tenant' });
      for (let i = 0; i < count; i++) {
        const created = await createSandbox(server, tenantId, { resources: { cpuMillis: 10, memoryMb: 10 } });
        await setVar({ tenantId, sandboxId: created.sandbox.id, name: 'OWN', value: String(i) });
        await setSecret({ tenantId, sandboxId: created.sandbox.id, name: 'OWN_KEY', value: String(i) });
      }
      return tenantId;
    }
    async function statementsFor(tenantId: string, fields: string) {
      const before = statements.filter(isRequestStatement).length;
      const res = await gql<{ sandboxes: { edges: { node: { envVars?: EnvView[]; secrets?: EnvView[] } }[] } }>(
        `query($t: ID!) { sandboxes(tenantId: $t, first: 50) { edges { node { id ${fields} } } } }`,
        { t: tenantId },
      );
      return { count: statements.filter(isRequestStatement).length - before, nodes: dataOf(res).sandboxes.edges };
    }
    const small = await seed(2);
    const large = await seed(12);
    await statementsFor(small, ''); // the first request of a token may update its lastUsedAt
    const bare = await statementsFor(large, '');
    const few = await statementsFor(small, 'envVars { name scope value } secrets { name scope }');
    const many = await statementsFor(large, 'envVars { name scope value } secrets { name scope }');
    expect(many.nodes).toHaveLength(12);
    for (const { node } of many.nodes) {
      expect(node.envVars?.map((e) => `${e.name}:${e.scope}`)).toEqual(['OWN:SANDBOX', 'SHARED:TENANT']);
      expect(node.secrets?.map((e) => `${e.name}:${e.scope}`)).toEqual(['OWN_KEY:SANDBOX', 'SHARED_KEY:TENANT']);
    }
    expect(many.count).toBe(few.count);
    expect(many.count).toBe(bare.count + 2);
  });

  it("removes a deleted sandbox's own variables and secrets, and keeps the tenant's", async () => {
    const { tenantId, sandboxId } = await placed();
    await setVar({ tenantId, name: 'SHARED', value: 'x' });
    await setSecret({ tenantId, sandboxId, name: 'OWN_KEY', value: secretValue('gone') });
    await setVar({ tenantId, sandboxId, name: 'OWN', value: 'y' });
    const deleted = await gql<{ deleteSandbox: { __typename: string } }>(
      'mutation($id: ID!) { deleteSandbox(input: { sandboxId: $id }) { __typename } }',
      { id: sandboxId },
    );
    expect(dataOf(deleted).deleteSandbox.__typename).toBe('SandboxPayload');
    const rows = (await server.app.db.orm.em
      .fork()
      .getConnection()
      .execute('select name from env_entries where tenant_id = ?', [localId(tenantId)])) as { name: string }[];
    expect(rows.map((r) => r.name)).toEqual(['SHARED']);
  });

  it('binds a ciphertext to its entry: copied onto another row it does not decrypt, and the error names the key', async () => {
    const { tenantId, worker, sandboxId, fencingToken } = await placed();
    await setSecret({ tenantId, name: 'ONE', value: secretValue('one') });
    await setSecret({ tenantId, name: 'TWO', value: secretValue('two') });
    const connection = server.app.db.orm.em.fork().getConnection();
    await connection.execute(
      'update env_entries set ciphertext = (select ciphertext from env_entries where tenant_id = ? and name = ?) where tenant_id = ? and name = ?',
      [localId(tenantId), 'ONE', localId(tenantId), 'TWO'],
    );
    const res = await gql<{ sandbox: unknown }>(
      `query($id: ID!, $token: String!) { sandbox(id: $id) { ${RUNTIME} } }`,
      { id: sandboxId, token: fencingToken },
      worker.token,
    );
    expect(res.body.errors?.[0]).toMatchObject({ extensions: { code: 'UNAVAILABLE' } });
    expect(res.body.errors?.[0].message).toContain(`secret TWO does not decrypt with secrets key "${kid}"`);
  });
});

describe.each(DRIVERS)('rotating the secrets key on %s', (kind) => {
  const clock = new TestClock();
  const servers: TestServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  async function start(env: Record<string, string>, databaseUrl?: string, adminToken?: string): Promise<TestServer> {
    const server = await startTestServer(kind, {
      clock,
      databaseUrl,
      adminToken,
      env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000', ...env },
    });
    servers.push(server);
    return server;
  }

  async function stop(server: TestServer): Promise<void> {
    servers.splice(servers.indexOf(server), 1);
    await server.close();
  }

  async function setSecret(server: TestServer, input: Record<string, unknown>): Promise<void> {
    const res = await server.gql<{ setSecret: { __typename: string } }>(
      `mutation($input: SetSecretInput!) { setSecret(input: $input) { ${SECRET_RESULT} } }`,
      { input },
    );
    expect(dataOf(res).setSecret.__typename).toBe('SecretPayload');
  }

  /** The runtime environment as the lease holder reads it (a fresh lease each time), or the error. */
  async function runtimeOf(server: TestServer, worker: RegisteredWorker, sandboxId: string) {
    const lease = await acquireLease(server, worker, sandboxId);
    const res = await server.gql<{
      sandbox: { runtimeEnvironment: { entries?: { name: string; value: string }[] } };
    }>(
      `query($id: ID!, $token: String!) { sandbox(id: $id) { ${RUNTIME} } }`,
      { id: sandboxId, token: lease.lease.fencingToken },
      worker.token,
    );
    if (res.body.errors) return { error: res.body.errors[0].message };
    return Object.fromEntries((res.body.data?.sandbox.runtimeEnvironment.entries ?? []).map((e) => [e.name, e.value]));
  }

  async function keyIds(server: TestServer): Promise<Record<string, string>> {
    const rows = (await server.app.db.orm.em
      .fork()
      .getConnection()
      .execute('select name, key_id from env_entries where ciphertext is not null')) as {
      name: string;
      key_id: string;
    }[];
    return Object.fromEntries(rows.map((r) => [r.name, r.key_id]));
  }

  const captured = () => {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, output: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
  };

  it('FLOTILLA_SECRETS_KEY: old keys still decrypt, new writes use the first key, rotate-secrets moves the rest, and the old key can then go', async () => {
    const k1 = keyEntry('k1');
    const k2 = keyEntry('k2');
    const dataDir = tempDir('flotilla-data-');
    const first = await start({ FLOTILLA_SECRETS_KEY: k1, FLOTILLA_DATA_DIR: dataDir });
    const tenantId = await createTenant(first, uniqueName('rot'));
    const worker = await registerWorker(first, uniqueName('w'), { tenantId });
    const created = await createSandbox(first, tenantId);
    const sandboxId = created.sandbox.id;
    const values = { ONE: secretValue('one'), OWN: secretValue('own') };
    await setSecret(first, { tenantId, name: 'ONE', value: values.ONE });
    await setSecret(first, { tenantId, sandboxId, name: 'OWN', value: values.OWN });
    expect(await keyIds(first)).toEqual({ ONE: 'k1', OWN: 'k1' });
    const { databaseUrl, adminToken } = first;
    await stop(first);

    // Key 2 first: what key 1 encrypted still decrypts, new writes use key 2.
    const env2 = { FLOTILLA_SECRETS_KEY: `${k2},${k1}`, FLOTILLA_DATA_DIR: dataDir };
    const second = await start(env2, databaseUrl, adminToken);
    expect(await runtimeOf(second, worker, sandboxId)).toEqual(values);
    await setSecret(second, { tenantId, name: 'THREE', value: 'three' });
    expect(await keyIds(second)).toEqual({ ONE: 'k1', OWN: 'k1', THREE: 'k2' });

    await stop(second);

    // Without key 1 the secrets it encrypted do not decrypt: the error names the key, never garbage.
    const onlyK2 = { ...env2, FLOTILLA_SECRETS_KEY: k2 };
    const early = await start(onlyK2, databaseUrl, adminToken);
    expect(await runtimeOf(early, worker, sandboxId)).toEqual({ error: expect.stringContaining('secrets key "k1"') });
    await stop(early);

    // rotate-secrets re-encrypts everything under key 2, in batches.
    const config2 = loadConfig({ ...env2, FLOTILLA_DATABASE_URL: databaseUrl });
    const listed = captured();
    await listSecretKeys(config2, listed.output);
    expect(listed.out).toEqual(['k2  1 secret(s)  ENCRYPTING', 'k1  2 secret(s)']);
    const rotated = captured();
    expect(await rotateSecrets(config2, rotated.output)).toBe(0);
    expect(rotated.out).toEqual(['re-encrypted 2 secret(s) under key k2']);

    // Key 1 removed from the configuration: everything still decrypts.
    const third = await start(onlyK2, databaseUrl, adminToken);
    expect(await keyIds(third)).toEqual({ ONE: 'k2', OWN: 'k2', THREE: 'k2' });
    expect(await runtimeOf(third, worker, sandboxId)).toEqual({ ...values, THREE: 'three' });
  });

  it('the generated key file: created on first start, rotate-secrets adds a key and re-encrypts, a running server follows', async () => {
    const dataDir = tempDir('flotilla-data-');
    const server = await start({ FLOTILLA_DATA_DIR: dataDir });
    const tenantId = await createTenant(server, uniqueName('rot'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    const created = await createSandbox(server, tenantId);
    const value = secretValue('file');
    await setSecret(server, { tenantId, name: 'FILED', value });
    const [oldKid] = Object.values(await keyIds(server));

    const config = loadConfig({ FLOTILLA_DATA_DIR: dataDir, FLOTILLA_DATABASE_URL: server.databaseUrl });
    const rotated = captured();
    expect(await rotateSecrets(config, rotated.output)).toBe(0);
    expect(rotated.out).toEqual([expect.stringMatching(/^re-encrypted 1 secret\(s\) under key k\w+$/)]);
    const [newKid] = Object.values(await keyIds(server));
    expect(newKid).not.toBe(oldKid);
    // The running server had only the old key: it reads the file again for the new one.
    expect(await runtimeOf(server, worker, created.sandbox.id)).toEqual({ FILED: value });

    const { removeSecretKey } = await import('../../src/ops/secrets-keys.js');
    const removed = captured();
    expect(await removeSecretKey(config, newKid, removed.output)).toBe(1);
    expect(removed.err.join('')).toContain('still encrypts 1 secret');
    expect(await removeSecretKey(config, oldKid, captured().output)).toBe(0);
    const listed = captured();
    await listSecretKeys(config, listed.output);
    expect(listed.out).toEqual([`${newKid}  1 secret(s)  ENCRYPTING`]);
    expect(await runtimeOf(server, worker, created.sandbox.id)).toEqual({ FILED: value });
  });
});

describe.each(DRIVERS)('the worker agent gives a real process its environment on %s', (kind) => {
  const WAIT_MS = 20_000;
  let server: TestServer;
  const agents: WorkerAgent[] = [];
  const agentLog: string[] = [];

  beforeAll(async () => {
    server = await startTestServer(kind, { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' } });
  });
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await server?.close();
  });

  async function startAgent(worker: RegisteredWorker): Promise<void> {
    const record = (level: string) => (msg: string, data?: Record<string, unknown>) =>
      agentLog.push(JSON.stringify({ level, msg, ...data }));
    const agent = new WorkerAgent({
      url: server.app.graphqlUrl,
      token: worker.token,
      webSocketImpl: WebSocket,
      heartbeatIntervalMs: 500,
      stopGraceMs: 600,
      logger: { info: record('info'), warn: record('warn') },
    });
    agents.push(agent);
    await agent.start();
  }

  async function gqlOk<T>(query: string, variables: Record<string, unknown>): Promise<T> {
    return dataOf(await server.gql<T>(query, variables));
  }

  async function statusOf(id: string): Promise<{ status: string; statusReason: string | null }> {
    return (
      await gqlOk<{ sandbox: { status: string; statusReason: string | null } }>(
        'query($id: ID!) { sandbox(id: $id) { status statusReason } }',
        { id },
      )
    ).sandbox;
  }

  async function waitForStatus(id: string, status: string) {
    return vi.waitFor(
      async () => {
        const s = await statusOf(id);
        if (s.status !== status) throw new Error(`still ${s.status} (${s.statusReason ?? ''}), waiting for ${status}`);
        return s;
      },
      { timeout: WAIT_MS, interval: 100 },
    );
  }

  async function messagesOf(id: string): Promise<string> {
    const page = await gqlOk<{ messages: { edges: { node: { body: string } }[] } }>(
      'query($id: ID!) { messages(sandboxId: $id, first: 100) { edges { node { body } } } }',
      { id },
    );
    return page.messages.edges.map((e) => e.node.body).join('\n');
  }

  async function set(field: 'setEnvVar' | 'setSecret', input: Record<string, unknown>): Promise<void> {
    const type = field === 'setEnvVar' ? 'SetEnvVarInput' : 'SetSecretInput';
    const res = await gqlOk<Record<string, { __typename: string }>>(
      `mutation($input: ${type}!) { ${field}(input: $input) { __typename } }`,
      { input },
    );
    expect(res[field].__typename).toMatch(/Payload$/);
  }

  /** Writes what the process sees to a file, and prints only whether it saw the secret. */
  const REPORT = [
    "const fs = require('node:fs');",
    "const seen = ['API_KEY', 'GREETING', 'MODE', 'FLOTILLA_SANDBOX_ID'].map((k) => [k, process.env[k] ?? null]);",
    'fs.writeFileSync(process.argv[1], JSON.stringify(Object.fromEntries(seen)));',
    "console.log('secret present: ' + (process.env.API_KEY ? 'yes' : 'no'));",
  ].join('\n');

  it('injects the merged variables and decrypted secrets into the process, and nowhere else', async () => {
    const tenantId = await createTenant(server, uniqueName('agent-env'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    const tenantSecret = secretValue('tenant');
    const ownSecret = secretValue('own');
    await set('setEnvVar', { tenantId, name: 'GREETING', value: 'hello' });
    await set('setEnvVar', { tenantId, name: 'MODE', value: 'tenant' });
    await set('setSecret', { tenantId, name: 'API_KEY', value: tenantSecret });
    const out = join(tempDir('flotilla-env-'), 'seen.json');
    // Created before the agent runs, so the sandbox's own entries are set before its process starts.
    const created = await createSandbox(server, tenantId, {
      name: 'env-reader',
      image: 'local/process',
      command: [process.execPath, '-e', REPORT, out],
      resources: { cpuMillis: 250, memoryMb: 256 },
    });
    const sandboxId = created.sandbox.id;
    await set('setSecret', { tenantId, sandboxId, name: 'API_KEY', value: ownSecret });
    await set('setEnvVar', { tenantId, sandboxId, name: 'MODE', value: 'sandbox' });

    await startAgent(worker);
    await waitForStatus(sandboxId, 'STOPPED');
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual({
      API_KEY: ownSecret,
      GREETING: 'hello',
      MODE: 'sandbox',
      FLOTILLA_SANDBOX_ID: sandboxId,
    });
    await vi.waitFor(async () => expect(await messagesOf(sandboxId)).toContain('secret present: yes'), {
      timeout: WAIT_MS,
      interval: 100,
    });
    // Not in the sandbox's output stream, not in the agent's log lines.
    const seenElsewhere = `${await messagesOf(sandboxId)}\n${agentLog.join('\n')}`;
    expect(agentLog.join('\n')).toContain('sandbox running');
    expect(seenElsewhere).not.toContain(ownSecret);
    expect(seenElsewhere).not.toContain(tenantSecret);
  });

  it('fails the sandbox, naming the key, when a secret cannot be decrypted (and starts no process)', async () => {
    const tenantId = await createTenant(server, uniqueName('agent-env'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    await set('setSecret', { tenantId, name: 'API_KEY', value: secretValue('lost') });
    // As if it had been written under a key this server no longer has.
    await server.app.db.orm.em
      .fork()
      .getConnection()
      .execute("update env_entries set key_id = 'retired' where tenant_id = ?", [localId(tenantId)]);
    const out = join(tempDir('flotilla-env-'), 'seen.json');
    const created = await createSandbox(server, tenantId, {
      name: 'env-reader',
      image: 'local/process',
      command: [process.execPath, '-e', REPORT, out],
      resources: { cpuMillis: 250, memoryMb: 256 },
    });
    await startAgent(worker);
    const failed = await waitForStatus(created.sandbox.id, 'FAILED');
    expect(failed.statusReason).toContain('could not read its environment');
    expect(failed.statusReason).toContain('secrets key "retired"');
    expect(existsSync(out)).toBe(false);
  });
});
