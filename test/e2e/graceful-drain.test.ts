import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * SIGTERM's first step (the preStop pattern): readiness turns false for FLOTILLA_SHUTDOWN_DRAIN_MS
 * while the server still serves everything, so a load balancer takes it out first; only then do
 * sockets close with 1001 and new requests get refused.
 */
const DRAIN_MS = 1_500;

describe('graceful drain on shutdown', () => {
  let server: TestServer | null = null;
  afterAll(async () => {
    await server?.close();
  });

  it('reads not ready while still serving, then stops', async () => {
    server = await startTestServer('sqlite', { env: { FLOTILLA_SHUTDOWN_DRAIN_MS: String(DRAIN_MS) } });
    const { app, adminToken } = server;
    expect((await fetch(`${app.url}/readyz`)).status).toBe(200);
    const socket = new WebSocket(app.graphqlUrl.replace(/^http/, 'ws'), 'graphql-transport-ws');
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    });
    const closedWith = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));

    const stopped = app.close();
    const ready = await fetch(`${app.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ reason: 'shutting down' });
    // Still serving while draining: queries answer and open sockets stay open.
    const query = await fetch(app.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    expect(query.status).toBe(200);
    expect(socket.readyState).toBe(WebSocket.OPEN);

    await stopped;
    expect(await closedWith).toBe(1001);
    await expect(fetch(`${app.url}/healthz`)).rejects.toThrow();
    server = null;
  });
});
