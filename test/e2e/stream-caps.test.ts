import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { DRIVERS } from '../helpers/databases.js';
import { createTenant, uniqueName } from '../helpers/fleet.js';
import { startTestServer, subscribersReach, type TestServer } from '../helpers/server.js';

/** Caps on what one token holds open (issue 14, defect 13), set low so a test reaches them. */
const MAX_SUBSCRIPTIONS_PER_SOCKET = 2;
const MAX_SOCKETS_PER_TOKEN = 2;
const MAX_SSE_STREAMS_PER_TOKEN = 2;
const WAIT = { timeout: 15_000, interval: 20 };

const TENANT_EVENTS = 'subscription($t: ID!) { tenantEvents(tenantId: $t) { cursor type } }';
const CREATE_API_TOKEN =
  'mutation($i: CreateApiTokenInput!) { createApiToken(input: $i) { ... on CreateApiTokenPayload { token apiToken { id } } } }';
const REVOKE_TOKEN = 'mutation($i: RevokeTokenInput!) { revokeToken(input: $i) { __typename } }';

interface Frame {
  id?: string;
  type: string;
  payload?: unknown;
}

/** A raw graphql-transport-ws socket: its frames as they arrive, and how it closed. */
class RawSocket {
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly acked: Promise<void>;
  private readonly socket: WebSocket;

  constructor(url: string, token: string) {
    this.socket = new WebSocket(url, 'graphql-transport-ws');
    this.closed = new Promise((resolve) =>
      this.socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    this.acked = new Promise((resolve, reject) => {
      this.socket.on('message', (data) => {
        const frame = JSON.parse(data.toString()) as Frame;
        this.frames.push(frame);
        if (frame.type === 'connection_ack') resolve();
      });
      void this.closed.then((c) => reject(new Error(`closed before the ack: ${c.code} ${c.reason}`)));
    });
    this.acked.catch(() => undefined);
    this.socket.on('open', () =>
      this.socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })),
    );
  }

  subscribe(id: string, query: string, variables: Record<string, unknown>): void {
    this.socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query, variables } }));
  }

  complete(id: string): void {
    this.socket.send(JSON.stringify({ id, type: 'complete' }));
  }

  /** The errors an operation was refused with (an `error` frame, or a `next` frame carrying errors). */
  async errorOf(id: string): Promise<{ message: string; extensions?: { code?: string } }[]> {
    const refusal = () =>
      this.frames.find(
        (f) => f.id === id && (f.type === 'error' || (f.type === 'next' && (f.payload as { errors?: unknown }).errors)),
      );
    await vi.waitFor(() => expect(refusal()).toBeDefined(), WAIT);
    const frame = refusal() as Frame;
    return (frame.type === 'error' ? frame.payload : (frame.payload as { errors: unknown }).errors) as never;
  }

  close(): void {
    this.socket.close();
  }
}

/** An open SSE subscription: its response, and an abort that closes it from the client. */
interface SseStream {
  response: Response;
  abort(): void;
}

describe.each(DRIVERS)('caps on live streams on %s', (kind) => {
  let server: TestServer;
  let wsUrl: string;
  let tenantId: string;

  beforeAll(async () => {
    server = await startTestServer(kind, {
      env: {
        FLOTILLA_MAX_SUBSCRIPTIONS_PER_SOCKET: String(MAX_SUBSCRIPTIONS_PER_SOCKET),
        FLOTILLA_MAX_SOCKETS_PER_TOKEN: String(MAX_SOCKETS_PER_TOKEN),
        FLOTILLA_MAX_SSE_STREAMS_PER_TOKEN: String(MAX_SSE_STREAMS_PER_TOKEN),
        FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000',
      },
    });
    wsUrl = server.app.graphqlUrl.replace(/^http/, 'ws');
    tenantId = await createTenant(server, uniqueName('caps'));
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A revocable API token of the tenant, with the id `revokeToken` takes and its `jti`. */
  async function apiToken(): Promise<{ token: string; id: string; jti: string }> {
    const res = await server.gql<{ createApiToken: { token: string; apiToken: { id: string } } }>(CREATE_API_TOKEN, {
      i: { tenantId, role: 'VIEWER', ttlSeconds: 3600 },
    });
    const created = res.body.data?.createApiToken;
    if (!created?.token) throw new Error(JSON.stringify(res.body));
    return { token: created.token, id: created.apiToken.id, jti: decodeJwt(created.token).jti as string };
  }

  async function openSse(token: string): Promise<SseStream> {
    const controller = new AbortController();
    const response = await fetch(server.app.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: TENANT_EVENTS, variables: { t: tenantId } }),
      signal: controller.signal,
    });
    return { response, abort: () => controller.abort() };
  }

  it('refuses a subscription past the per-socket cap with LIMIT_EXCEEDED; completing or failing one frees its slot', async () => {
    const { token } = await apiToken();
    const socket = new RawSocket(wsUrl, token);
    await socket.acked;
    const base = server.app.events().subscriberCount;

    // A refused subscription (an unknown tenant) ends at once and holds no slot.
    socket.subscribe('bad', TENANT_EVENTS, { t: 'not-an-id' });
    expect((await socket.errorOf('bad'))[0].extensions?.code).toBe('VALIDATION_FAILED');

    socket.subscribe('1', TENANT_EVENTS, { t: tenantId });
    socket.subscribe('2', TENANT_EVENTS, { t: tenantId });
    await subscribersReach(server, base + MAX_SUBSCRIPTIONS_PER_SOCKET);
    socket.subscribe('3', TENANT_EVENTS, { t: tenantId });
    const refused = await socket.errorOf('3');
    expect(refused[0].extensions?.code).toBe('LIMIT_EXCEEDED');
    expect(refused[0].message).toContain(`at most ${MAX_SUBSCRIPTIONS_PER_SOCKET}`);
    await subscribersReach(server, base + MAX_SUBSCRIPTIONS_PER_SOCKET);

    // The socket itself stays open, and completing one subscription frees a slot.
    socket.complete('1');
    socket.subscribe('4', TENANT_EVENTS, { t: tenantId });
    await subscribersReach(server, base + MAX_SUBSCRIPTIONS_PER_SOCKET);
    expect(socket.frames.filter((f) => f.id === '4')).toEqual([]);

    socket.close();
    await socket.closed;
    await subscribersReach(server, base);
  });

  it('closes a socket past the per-token cap with 4429; closing or revoking frees the slots', async () => {
    const { token, id, jti } = await apiToken();
    const first = new RawSocket(wsUrl, token);
    const second = new RawSocket(wsUrl, token);
    await Promise.all([first.acked, second.acked]);
    expect(server.app.caps.held(jti).sockets).toBe(MAX_SOCKETS_PER_TOKEN);

    const third = new RawSocket(wsUrl, token);
    expect(await third.closed).toEqual({
      code: 4429,
      reason: `too many sockets for this token (at most ${MAX_SOCKETS_PER_TOKEN})`,
    });
    // Another token has its own sockets.
    const other = new RawSocket(wsUrl, (await apiToken()).token);
    await other.acked;
    other.close();

    // The client closing one socket frees its slot.
    first.close();
    await first.closed;
    await vi.waitFor(() => expect(server.app.caps.held(jti).sockets).toBe(MAX_SOCKETS_PER_TOKEN - 1), WAIT);
    const again = new RawSocket(wsUrl, token);
    await again.acked;

    // The server ending them (revocation) frees every slot of the token.
    await server.gql(REVOKE_TOKEN, { i: { tokenId: id } });
    expect(await again.closed).toMatchObject({ code: 4403 });
    expect(await second.closed).toMatchObject({ code: 4403 });
    await vi.waitFor(() => expect(server.app.caps.held(jti).sockets).toBe(0), WAIT);
  });

  it('refuses an SSE stream past the per-token cap with LIMIT_EXCEEDED; closing or revoking frees the slots', async () => {
    const { token, id, jti } = await apiToken();
    const base = server.app.events().subscriberCount;
    const open: SseStream[] = [];
    for (let i = 0; i < MAX_SSE_STREAMS_PER_TOKEN; i += 1) open.push(await openSse(token));
    await subscribersReach(server, base + MAX_SSE_STREAMS_PER_TOKEN);
    expect(server.app.caps.held(jti).sseStreams).toBe(MAX_SSE_STREAMS_PER_TOKEN);

    const refused = await openSse(token);
    const text = await refused.response.text();
    expect(text).toContain('"code":"LIMIT_EXCEEDED"');
    expect(text).toContain(`at most ${MAX_SSE_STREAMS_PER_TOKEN}`);
    expect(server.app.caps.held(jti).sseStreams).toBe(MAX_SSE_STREAMS_PER_TOKEN);

    // The client going away frees its slot.
    open[0].abort();
    await vi.waitFor(() => expect(server.app.caps.held(jti).sseStreams).toBe(MAX_SSE_STREAMS_PER_TOKEN - 1), WAIT);
    const replacement = await openSse(token);
    await subscribersReach(server, base + MAX_SSE_STREAMS_PER_TOKEN);

    // The server ending the streams (revocation) frees every slot.
    await server.gql(REVOKE_TOKEN, { i: { tokenId: id } });
    await Promise.all([open[1].response.text(), replacement.response.text()]);
    await vi.waitFor(() => expect(server.app.caps.held(jti).sseStreams).toBe(0), WAIT);
    await subscribersReach(server, base);

    // A stream the server refuses at subscribe time (an invalid id) holds no slot.
    const fresh = await apiToken();
    for (let i = 0; i <= MAX_SSE_STREAMS_PER_TOKEN; i += 1)
      expect(await fetchText(server, fresh.token, TENANT_EVENTS, { t: 'not-an-id' })).toContain('VALIDATION_FAILED');
    expect(server.app.caps.held(fresh.jti).sseStreams).toBe(0);
    const streams = [await openSse(fresh.token), await openSse(fresh.token)];
    await subscribersReach(server, base + MAX_SSE_STREAMS_PER_TOKEN);
    for (const stream of streams) stream.abort();
    await vi.waitFor(() => expect(server.app.caps.held(fresh.jti).sseStreams).toBe(0), WAIT);
  });
});

/** An SSE request whose stream the server ends at subscribe time; returns the whole body. */
async function fetchText(
  server: TestServer,
  token: string,
  query: string,
  variables: Record<string, unknown>,
): Promise<string> {
  const res = await fetch(server.app.graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return res.text();
}
