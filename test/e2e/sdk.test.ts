import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CreateTenantDocument,
  createClient,
  TenantsDocument,
  unwrapPayload,
  ViewerDocument,
} from '../../src/client/index.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** A proxy that drops the first `failures` connections, to look like a flaky network. */
async function flakyProxy(
  target: string,
  failures: number,
): Promise<{ url: string; attempts: () => number; close: () => Promise<void> }> {
  const upstream = new URL(target);
  let attempts = 0;
  const server: Server = createServer((req, res) => {
    attempts++;
    if (attempts <= failures) {
      req.socket.destroy();
      return;
    }
    const proxied = httpRequest(
      { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    req.pipe(proxied);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/graphql`,
    attempts: () => attempts,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe('the SDK (flotilla/client)', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('sqlite');
  });
  afterAll(async () => {
    await server?.close();
  });

  it('runs typed queries and mutations, with typed errors as discriminated results', async () => {
    const client = createClient({ url: server.app.graphqlUrl, token: server.adminToken });
    const viewer = await client.query(ViewerDocument);
    expect(viewer.ok && viewer.data.viewer.platformAdmin).toBe(true);

    const created = await client.mutate(CreateTenantDocument, { input: { slug: 'sdk-tenant', name: 'SDK' } });
    if (!created.ok) throw new Error(created.error.message);
    const payload = unwrapPayload(created.data.createTenant);
    expect(payload.ok && payload.payload.__typename === 'CreateTenantPayload' && payload.payload.tenant.slug).toBe(
      'sdk-tenant',
    );

    const again = await client.mutate(CreateTenantDocument, { input: { slug: 'sdk-tenant', name: 'SDK' } });
    if (!again.ok) throw new Error(again.error.message);
    const refused = unwrapPayload(again.data.createTenant);
    expect(refused).toEqual({
      ok: false,
      error: {
        typename: 'AlreadyExistsError',
        code: 'ALREADY_EXISTS',
        message: 'a tenant with slug "sdk-tenant" already exists',
      },
    });

    const page = await client.query(TenantsDocument, { first: 10 });
    expect(page.ok && page.data.tenants.edges.map((e) => e.node.slug)).toContain('sdk-tenant');
    await client.close();
  });

  it('reports a refused request as an error result, without retrying it', async () => {
    const proxy = await flakyProxy(server.app.graphqlUrl, 0);
    try {
      const client = createClient({ url: proxy.url, token: 'not-a-token' });
      const result = await client.query(ViewerDocument);
      expect(result).toMatchObject({ ok: false, error: { kind: 'graphql', code: 'UNAUTHENTICATED', status: 401 } });
      expect(proxy.attempts()).toBe(1);
    } finally {
      await proxy.close();
    }
  });

  it('retries network failures with backoff, and gives up after its retries', async () => {
    const flaky = await flakyProxy(server.app.graphqlUrl, 2);
    try {
      const client = createClient({ url: flaky.url, token: server.adminToken, retries: 3, backoffMs: 10 });
      const result = await client.query(ViewerDocument);
      expect(result.ok).toBe(true);
      expect(flaky.attempts()).toBe(3);
    } finally {
      await flaky.close();
    }
    const dead = await flakyProxy(server.app.graphqlUrl, 100);
    try {
      const client = createClient({ url: dead.url, token: server.adminToken, retries: 2, backoffMs: 10 });
      const result = await client.query(ViewerDocument);
      expect(result).toMatchObject({ ok: false, error: { kind: 'network', code: 'NETWORK_ERROR' } });
      expect(dead.attempts()).toBe(3);
    } finally {
      await dead.close();
    }
  });
});
