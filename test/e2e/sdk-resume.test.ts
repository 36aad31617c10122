import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import {
  createClient,
  EventsDocument,
  FatalSubscriptionError,
  type FlotillaClient,
  MessageAddedDocument,
  type MessageFieldsFragment,
  SendMessageDocument,
} from '../../src/client/index.js';
import { DRIVERS } from '../helpers/databases.js';
import { createSandbox, createTenant, registerWorker, uniqueName } from '../helpers/fleet.js';
import { startTestServer, subscribersReach, type TestServer } from '../helpers/server.js';

const WAIT_MS = 15_000;
const POLL_MS = 20;
/** Quick retries keep the test short; the SDK's default backoff is longer. */
const BACKOFF_MS = 50;

/** A TCP proxy whose connections the test can cut, and which refuses new ones while "down". */
async function cuttableProxy(
  targetUrl: string,
): Promise<{ url: string; cut(): void; restore(): void; close(): Promise<void> }> {
  const target = new URL(targetUrl);
  const sockets = new Set<Socket>();
  let down = false;
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${target.pathname}`,
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      down = false;
    },
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe.each(['ws', 'sse'] as const)('an SDK subscription over %s', (transport) => {
  let server: TestServer;
  let admin: FlotillaClient;

  beforeAll(async () => {
    server = await startTestServer('sqlite', { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' } });
    admin = createClient({ url: server.app.graphqlUrl, token: server.adminToken });
  });
  afterAll(async () => {
    await admin?.close();
    await server?.close();
  });

  async function send(sandboxId: string, body: string): Promise<void> {
    const res = await admin.mutate(SendMessageDocument, { input: { sandboxId, body } });
    expect(res.ok && res.data.sendMessage.__typename).toBe('MessagePayload');
  }

  it('resumes across a cut connection as one unbroken stream: no gap, no duplicate', async () => {
    const tenantId = await createTenant(server, uniqueName('resume'));
    await registerWorker(server, uniqueName('w'), { tenantId });
    const created = await createSandbox(server, tenantId, { name: 'chatty' });
    const sandboxId = created.sandbox.id;

    const proxy = await cuttableProxy(server.app.graphqlUrl);
    const client = createClient({
      url: proxy.url,
      token: server.adminToken,
      transport,
      webSocketImpl: WebSocket,
      backoffMs: BACKOFF_MS,
      maxBackoffMs: BACKOFF_MS * 4,
    });
    const abort = new AbortController();
    const received: MessageFieldsFragment[] = [];
    let reconnects = 0;
    let resumed = 0;
    const consumer = (async () => {
      const stream = client.subscribe(
        MessageAddedDocument,
        { sandboxId, after: null },
        {
          signal: abort.signal,
          cursorOf: (d) => d.messageAdded.eventCursor,
          onReconnect: () => reconnects++,
          onResumed: () => resumed++,
        },
      );
      for await (const { messageAdded } of stream) received.push(messageAdded);
    })().catch((err: Error) => {
      if (!abort.signal.aborted) throw err;
    });

    try {
      // The stream is live once a message sent now arrives (nothing is replayed without `after`).
      await vi.waitFor(
        async () => {
          if (received.length === 0) await send(sandboxId, 'probe');
          expect(received.length).toBeGreaterThan(0);
        },
        { timeout: WAIT_MS, interval: 200 },
      );
      for (const n of [1, 2, 3]) await send(sandboxId, `before ${n}`);
      await vi.waitFor(() => expect(received.map((m) => m.body)).toContain('before 3'), {
        timeout: WAIT_MS,
        interval: POLL_MS,
      });

      // The connection drops; while it is down, more messages are committed.
      proxy.cut();
      for (const n of [1, 2, 3]) await send(sandboxId, `during ${n}`);
      await vi.waitFor(() => expect(reconnects).toBeGreaterThan(0), { timeout: WAIT_MS, interval: POLL_MS });
      proxy.restore();
      await vi.waitFor(() => expect(received.map((m) => m.body)).toContain('during 3'), {
        timeout: WAIT_MS,
        interval: POLL_MS,
      });
      for (const n of [1, 2]) await send(sandboxId, `after ${n}`);
      await vi.waitFor(() => expect(received.map((m) => m.body)).toContain('after 2'), {
        timeout: WAIT_MS,
        interval: POLL_MS,
      });
      expect(resumed).toBeGreaterThan(0);

      // Exactly the log's MESSAGE_POSTED events, in order, from the first one delivered.
      const log = await admin.query(EventsDocument, { tenantId, types: ['MESSAGE_POSTED'], first: 100 });
      if (!log.ok) throw new Error(log.error.message);
      const logged = log.data.events.edges.map((e) => e.cursor);
      const cursors = received.map((m) => m.eventCursor);
      expect(cursors).toEqual(logged.slice(logged.indexOf(cursors[0] as string)));
      expect(new Set(received.map((m) => m.id)).size).toBe(received.length);
      const bodies = received.map((m) => m.body).filter((b) => b !== 'probe');
      expect(bodies).toEqual([
        'before 1',
        'before 2',
        'before 3',
        'during 1',
        'during 2',
        'during 3',
        'after 1',
        'after 2',
      ]);
    } finally {
      abort.abort();
      await consumer;
      await client.close();
      await proxy.close();
    }
  });

  it('gives up on a cursor the server refuses, with its code, instead of retrying it forever', async () => {
    const tenantId = await createTenant(server, uniqueName('badcursor'));
    await registerWorker(server, uniqueName('w'), { tenantId });
    const created = await createSandbox(server, tenantId, { name: 'quiet' });
    const client = createClient({
      url: server.app.graphqlUrl,
      token: server.adminToken,
      transport,
      webSocketImpl: WebSocket,
      backoffMs: BACKOFF_MS,
    });
    let reconnects = 0;
    try {
      const stream = client.subscribe(
        MessageAddedDocument,
        { sandboxId: created.sandbox.id, after: 'bm9wZQ' },
        { onReconnect: () => reconnects++ },
      );
      const outcome = await stream.next().then(
        () => null,
        (err: unknown) => err,
      );
      expect(outcome).toBeInstanceOf(FatalSubscriptionError);
      expect((outcome as FatalSubscriptionError).error.code).toBe('INVALID_CURSOR');
      expect(reconnects).toBe(0);
    } finally {
      await client.close();
    }
  });
});

/** Neither selects a cursor nor takes `after`: the SDK adds both, so even this stream resumes. */
const BARE_MESSAGES = parse('subscription Bare($sandboxId: ID!) { messageAdded(sandboxId: $sandboxId) { body } }');

describe.each(DRIVERS.flatMap((kind) => (['ws', 'sse'] as const).map((transport) => [kind, transport] as const)))(
  'an SDK subscription cut before its first event on %s over %s',
  (kind, transport) => {
    let server: TestServer;
    let admin: FlotillaClient;

    beforeAll(async () => {
      server = await startTestServer(kind, { env: { FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000' } });
      admin = createClient({ url: server.app.graphqlUrl, token: server.adminToken });
    });
    afterAll(async () => {
      await admin?.close();
      await server?.close();
    });

    it('resumes from where the server started it: what was written during the gap arrives exactly once', async () => {
      const tenantId = await createTenant(server, uniqueName('gap'));
      await registerWorker(server, uniqueName('w'), { tenantId });
      const sandboxId = (await createSandbox(server, tenantId, { name: 'gap' })).sandbox.id;
      const send = async (body: string) => {
        const res = await admin.mutate(SendMessageDocument, { input: { sandboxId, body } });
        expect(res.ok && res.data.sendMessage.__typename).toBe('MessagePayload');
      };
      // Written before the stream starts: never part of it.
      await send('earlier');

      const proxy = await cuttableProxy(server.app.graphqlUrl);
      const client = createClient({
        url: proxy.url,
        token: server.adminToken,
        transport,
        webSocketImpl: WebSocket,
        backoffMs: BACKOFF_MS,
        maxBackoffMs: BACKOFF_MS * 4,
      });
      const abort = new AbortController();
      const received: string[] = [];
      let reconnects = 0;
      const base = server.app.events().subscriberCount;
      const consumer = (async () => {
        const stream = client.subscribe(
          BARE_MESSAGES as TypedDocumentNode<{ messageAdded: { body: string } }, { sandboxId: string }>,
          { sandboxId },
          { signal: abort.signal, onReconnect: () => reconnects++ },
        );
        for await (const { messageAdded } of stream) received.push(messageAdded.body);
      })().catch((err: Error) => {
        if (!abort.signal.aborted) throw err;
      });

      try {
        // The stream is open on the server, and has delivered nothing yet.
        await subscribersReach(server, base + 1);
        expect(received).toEqual([]);

        // Cut before its first event; while it is down, messages are committed.
        proxy.cut();
        await subscribersReach(server, base);
        await vi.waitFor(() => expect(reconnects).toBeGreaterThan(0), { timeout: WAIT_MS, interval: POLL_MS });
        for (const n of [1, 2, 3]) await send(`during ${n}`);
        proxy.restore();
        await vi.waitFor(() => expect(received).toContain('during 3'), { timeout: WAIT_MS, interval: POLL_MS });
        await send('after');
        await vi.waitFor(() => expect(received).toContain('after'), { timeout: WAIT_MS, interval: POLL_MS });
        expect(received).toEqual(['during 1', 'during 2', 'during 3', 'after']);
      } finally {
        abort.abort();
        await consumer;
        await client.close();
        await proxy.close();
      }
    });
  },
);
