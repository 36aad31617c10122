import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GraphQLSchema } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { SigningKeys } from '../auth/keys.js';
import type { Database } from '../db/database.js';
import type { Logger } from '../kernel/logger.js';
import type { ContextFactory } from './context.js';
import type { Limits } from './limits.js';
import type { Metrics } from './metrics.js';
import { CHANNEL_HOOK_PREFIX, channelHookRoute } from './routes/channel-hooks.js';
import { serveDashboard } from './routes/dashboard.js';
import { DASHBOARD_CONFIG_PATH, type DashboardConfig, dashboardConfigRoute } from './routes/dashboard-config.js';
import { GRAPHQL_PATH, graphqlRoute } from './routes/graphql.js';
import { healthRoute, type ReadinessCheck, readinessRoute } from './routes/health.js';
import { JWKS_PATH, jwksRoute } from './routes/jwks.js';
import { metricsRoute } from './routes/metrics.js';
import { type Route, sendJson } from './routes/route.js';
import type { SessionRegistry } from './sessions.js';
import type { StreamCaps } from './stream-caps.js';
import { serveGraphQLOverWebSocket } from './websocket.js';
import { createGraphQLYoga } from './yoga.js';

export { GRAPHQL_PATH };
/** WebSocket close code for a server going away: clients reconnect elsewhere. */
export const CLOSE_GOING_AWAY = 1001;

export interface HttpServerDeps {
  schema: GraphQLSchema;
  db: Database;
  contexts: ContextFactory;
  keys: () => SigningKeys | null;
  logger: Logger;
  metrics: Metrics;
  shutdownTimeoutMs: number;
  /** How long readiness reads false before the server stops taking work (see config). */
  shutdownDrainMs?: number;
  readiness?: ReadinessCheck;
  limits: Limits;
  sessions: SessionRegistry;
  caps: StreamCaps;
  /** Shared execution of live subscriptions (live-execution.ts); absent: each subscriber executes alone. */
  liveExecution?: Plugin;
  /** Told when the server stops taking work, before it waits for requests in flight (long waits answer then). */
  onStopping?: () => void;
  /** What the dashboard reads at /dashboard/config.json (its OIDC sign-in, if any). */
  dashboard?: DashboardConfig;
  /** Where the built dashboard is (default: dist/web of the package). */
  dashboardDir?: string;
}

export interface RunningServer {
  server: Server;
  url: string;
  port: number;
  /** Graceful stop: refuse new work, close sockets with 1001, let in-flight requests finish. */
  close(): Promise<void>;
}

/**
 * Serves GraphQL (HTTP, SSE, graphql-ws) plus health, readiness, metrics, the JWKS and the
 * dashboard. Each route is in src/server/routes/; this function wires them, counts requests for
 * metrics and logs, and shuts down gracefully.
 */
export async function startHttpServer(
  deps: HttpServerDeps,
  listen: { host: string; port: number },
): Promise<RunningServer> {
  const { logger, metrics } = deps;
  let stopping = false;
  let draining = false;
  const readiness: ReadinessCheck = () =>
    draining ? { ok: false, reason: 'shutting down' } : (deps.readiness?.() ?? { ok: true });

  const yoga = createGraphQLYoga(deps);
  const routes: ReadonlyMap<string, Route> = new Map([
    ['/healthz', healthRoute],
    ['/readyz', readinessRoute(deps.db, metrics, readiness)],
    ['/metrics', metricsRoute(metrics)],
    [JWKS_PATH, jwksRoute(deps.keys)],
    [GRAPHQL_PATH, graphqlRoute(yoga, deps.limits)],
    [DASHBOARD_CONFIG_PATH, dashboardConfigRoute(deps.dashboard ?? { signIn: null })],
  ]);

  const channelHook = channelHookRoute(deps.contexts);

  const inFlight = new Set<ServerResponse>();
  const streams = new Set<ServerResponse>();

  const server = createServer((req, res) => {
    const requestId = headerValue(req, 'x-request-id') ?? randomUUID();
    res.setHeader('x-request-id', requestId);
    const started = process.hrtime.bigint();
    const route = routeOf(req.url);
    inFlight.add(res);
    if ((req.headers.accept ?? '').includes('text/event-stream')) streams.add(res);
    res.on('close', () => {
      inFlight.delete(res);
      streams.delete(res);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      // One label for every channel's hook, not one per channel id.
      const label = route.startsWith(CHANNEL_HOOK_PREFIX) ? `${CHANNEL_HOOK_PREFIX}:id` : route;
      metrics.httpRequests.inc({ route: label, status: String(res.statusCode) });
      metrics.httpDuration.observe({ route: label }, seconds);
      logger.info(
        // The path only: a query string may carry GraphQL variables (a secret's value, a token).
        {
          reqId: requestId,
          method: req.method,
          url: req.url?.split('?')[0],
          status: res.statusCode,
          ms: Math.round(seconds * 1000),
        },
        'request',
      );
    });
    void handle(req, res, route, requestId);
  });

  async function handle(req: IncomingMessage, res: ServerResponse, route: string, requestId: string): Promise<void> {
    try {
      if (stopping) return sendJson(res, 503, { status: 'shutting down' }, { connection: 'close' });
      const answer = routes.get(route);
      if (answer) return await answer(req, res, requestId);
      if (route.startsWith(CHANNEL_HOOK_PREFIX)) return await channelHook(req, res, requestId);
      if (serveDashboard(req, res, route, deps.dashboardDir)) return;
      sendJson(res, 404, { error: 'not found' });
    } catch (err) {
      logger.error({ reqId: requestId, err: (err as Error).message }, 'request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.end();
    }
  }

  // graphql-ws on the same port and path, sharing the Yoga pipeline and the context factory.
  const wss = serveGraphQLOverWebSocket(server, yoga, deps);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const displayHost = listen.host === '0.0.0.0' || listen.host === '::' ? 'localhost' : listen.host;
  const url = `http://${displayHost}:${address.port}`;

  // Every caller waits for the same shutdown (SIGTERM and a test's teardown may both ask).
  let closing: Promise<void> | null = null;
  function close(): Promise<void> {
    closing ??= shutDown();
    return closing;
  }

  async function shutDown(): Promise<void> {
    // Not ready first, still serving: the load balancer takes this replica out before it goes.
    draining = true;
    if (deps.shutdownDrainMs) {
      logger.info({ ms: deps.shutdownDrainMs }, 'shutting down: readiness is false while requests drain');
      await new Promise((r) => setTimeout(r, deps.shutdownDrainMs));
    }
    stopping = true;
    deps.onStopping?.();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const client of wss.clients) client.close(CLOSE_GOING_AWAY, 'server shutting down');
    for (const res of streams) res.end();
    server.closeIdleConnections();
    const deadline = Date.now() + deps.shutdownTimeoutMs;
    while (inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    if (inFlight.size > 0) logger.warn({ remaining: inFlight.size }, 'shutdown timeout: closing remaining requests');
    for (const client of wss.clients) client.terminate();
    server.closeAllConnections();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await closed;
  }

  return { server, url, port: address.port, close };
}

function headerValue(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name];
  const first = Array.isArray(value) ? value[0] : value;
  return first && /^[\w.-]{1,100}$/.test(first) ? first : null;
}

function routeOf(url: string | undefined): string {
  const path = (url ?? '/').split('?')[0];
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}
