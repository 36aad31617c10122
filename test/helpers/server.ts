import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import type { DatabaseKind } from '../../src/config/index.js';
import { loadConfig } from '../../src/config/index.js';
import type { TenantRole } from '../../src/db/entities/member.js';
import type { Clock } from '../../src/domain/context.js';
import type { Logger } from '../../src/kernel/logger.js';
import { type Flotilla, startFlotilla } from '../../src/server/app.js';
import { freshDatabaseUrl, tempDir } from './databases.js';

export interface GraphQLResponse<T = Record<string, unknown>> {
  status: number;
  body: { data?: T | null; errors?: { message: string; extensions?: { code?: string }; path?: string[] }[] };
}

export interface TestServer {
  app: Flotilla;
  databaseUrl: string;
  adminToken: string;
  /** POSTs a GraphQL operation; `token: null` sends none. */
  gql<T = Record<string, unknown>>(
    query: string,
    variables?: Record<string, unknown>,
    token?: string | null,
  ): Promise<GraphQLResponse<T>>;
  /** A graphql-ws client authenticated with the token. */
  ws(token?: string): Client;
  /** Mints a token of this server for a tenant role (an API token). */
  apiToken(tenantId: string, role: TenantRole, subject?: string): Promise<string>;
  close(): Promise<void>;
}

export async function startTestServer(
  kind: DatabaseKind,
  options: {
    env?: Record<string, string>;
    clock?: Clock;
    databaseUrl?: string;
    /** With `databaseUrl` of another test server: its admin token (a second start mints none). */
    adminToken?: string;
    /** Receives every SQL statement the server issues. */
    onQuery?: (sql: string) => void;
    /** Run the domain sweeper on its timer (default false in tests: drive it with app.sweeper.runOnce()). */
    sweep?: boolean;
    /** Where the server logs (default: a logger at FLOTILLA_LOG_LEVEL), e.g. to capture its lines. */
    logger?: Logger;
  } = {},
): Promise<TestServer> {
  const databaseUrl = options.databaseUrl ?? (await freshDatabaseUrl(kind));
  const config = loadConfig({
    FLOTILLA_DATABASE_URL: databaseUrl,
    FLOTILLA_PORT: '0',
    FLOTILLA_HOST: '127.0.0.1',
    FLOTILLA_DATA_DIR: tempDir('flotilla-data-'),
    FLOTILLA_LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    FLOTILLA_SHUTDOWN_TIMEOUT_MS: '2000',
    ...options.env,
  });
  const app = await startFlotilla(config, {
    clock: options.clock,
    onQuery: options.onQuery,
    sweep: options.sweep ?? false,
    logger: options.logger,
  });
  await app.ready;
  const adminToken = app.adminToken?.token ?? options.adminToken;
  if (!adminToken) throw new Error('a fresh database should mint an admin token');
  const sockets: Client[] = [];

  return {
    app,
    databaseUrl,
    adminToken,
    async gql(query, variables, token = adminToken) {
      const res = await fetch(app.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return { status: res.status, body: (await res.json()) as GraphQLResponse<never>['body'] };
    },
    ws(token = adminToken) {
      const client = createClient({
        url: app.graphqlUrl.replace(/^http/, 'ws'),
        webSocketImpl: WebSocket,
        connectionParams: { authorization: `Bearer ${token}` },
        retryAttempts: 0,
        lazy: true,
      });
      sockets.push(client);
      return client;
    },
    async apiToken(tenantId, role, subject = `api:${role.toLowerCase()}`) {
      const em = app.db.orm.em.fork();
      const minted = await em.transactional((tx) =>
        app.tokens().mint(tx, { kind: 'API', subject, tenantId, role, ttlSeconds: 3600 }),
      );
      return minted.token;
    },
    async close() {
      await Promise.all(sockets.map((s) => s.dispose()));
      await app.close();
    },
  };
}

/** Runs one operation over graphql-ws and returns its single result. */
export function wsRequest<T = Record<string, unknown>>(
  client: Client,
  query: string,
  variables?: Record<string, unknown>,
): Promise<{ data?: T | null; errors?: readonly { message: string }[] }> {
  return new Promise((resolve, reject) => {
    let result: { data?: T | null; errors?: readonly { message: string }[] } | undefined;
    client.subscribe<T>(
      { query, variables },
      {
        next: (value) => {
          result = value as typeof result;
        },
        error: (err) => reject(err instanceof Error ? err : new Error(JSON.stringify(err))),
        complete: () => (result ? resolve(result) : reject(new Error('no result'))),
      },
    );
  });
}

/** The database id inside a global id. */
export function localId(globalId: string): string {
  const decoded = Buffer.from(globalId, 'base64url').toString('utf8');
  return decoded.slice(decoded.indexOf(':') + 1);
}

/**
 * Whether a recorded SQL statement belongs to the request being measured, rather than to the
 * server's background work (the event hub's safety read, signing-key reloads, event pruning)
 * or to per-token bookkeeping (the throttled lastUsedAt update), whose timing varies with load.
 */
export function isRequestStatement(sql: string): boolean {
  return !/["`](events|signing_keys)["`]/.test(sql) && !/update ["`]api_tokens["`]/i.test(sql);
}

/** Waits until the server's hub holds exactly this many subscribers (subscribing and ending are asynchronous). */
export async function subscribersReach(server: TestServer, count: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (server.app.events().subscriberCount !== count && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 20));
  if (server.app.events().subscriberCount !== count)
    throw new Error(`expected ${count} subscribers, the hub holds ${server.app.events().subscriberCount}`);
}
