import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type DocumentNode, type ExecutionArgs, GraphQLError, type GraphQLSchema } from 'graphql';
import { createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Context } from '../../resolvers/builder.js';
import type { Identity } from '../auth/identity.js';
import type { SigningKeys } from '../auth/keys.js';
import type { Database } from '../db/database.js';
import type { Logger } from '../kernel/logger.js';
import type { ContextFactory } from './context.js';
import { createErrorMasker } from './errors.js';
import { exampleOperations, localGraphiQL } from './graphiql.js';
import { checkHttpRequest, REJECTED_BODY_DRAIN_BYTES } from './http-admission.js';
import { type Limits, limitsPlugin } from './limits.js';
import type { Metrics } from './metrics.js';
import { resolvePersisted } from './persisted-operations.js';
import { CLOSE_FORBIDDEN, type SessionRegistry } from './sessions.js';
import { serveDashboard } from './static.js';
import { serveGraphqlWs } from './ws.js';

export const GRAPHQL_PATH = '/graphql';
/** WebSocket close code for a server going away: clients reconnect elsewhere. */
export const CLOSE_GOING_AWAY = 1001;
export { CLOSE_FORBIDDEN };

export interface HttpServerDeps {
  schema: GraphQLSchema;
  db: Database;
  contexts: ContextFactory;
  keys: () => SigningKeys | null;
  logger: Logger;
  metrics: Metrics;
  shutdownTimeoutMs: number;
  /** Further readiness beyond the database (e.g. the event LISTEN connection); not ready with a reason. */
  readiness?: () => { ok: boolean; reason?: string };
  limits: Limits;
  sessions: SessionRegistry;
  /** Shared execution of live subscriptions (live-execution.ts); absent: each subscriber executes alone. */
  liveExecution?: Plugin;
}

interface ServerContext {
  requestId: string;
  /** Set for WebSocket operations: the identity the socket authenticated with. */
  identity?: Identity;
}

export interface RunningServer {
  server: Server;
  url: string;
  port: number;
  /** Graceful stop: refuse new work, close sockets with 1001, let in-flight requests finish. */
  close(): Promise<void>;
}

/** Serves GraphQL (HTTP, SSE, graphql-ws) plus health, readiness, metrics and the JWKS. */
export async function startHttpServer(
  deps: HttpServerDeps,
  listen: { host: string; port: number },
): Promise<RunningServer> {
  const { logger, metrics, contexts } = deps;
  let stopping = false;

  const yoga: YogaServerInstance<ServerContext, Context> = createYoga<ServerContext, Context>({
    schema: deps.schema,
    graphqlEndpoint: GRAPHQL_PATH,
    landingPage: false,
    batching: false,
    logging: false,
    graphiql: {
      title: 'Flotilla GraphiQL',
      subscriptionsProtocol: 'WS',
      defaultQuery: exampleOperations(),
    },
    renderGraphiQL: localGraphiQL(),
    maskedErrors: { maskError: createErrorMasker(logger.child({ component: 'graphql' })) },
    plugins: [
      limitsPlugin(deps.limits),
      deps.sessions.expiryPlugin(),
      ...(deps.liveExecution ? [deps.liveExecution] : []),
    ],
    context: async (initial): Promise<Context> => {
      const identity = initial.identity ?? (await contexts.authenticate(initial.request.headers.get('authorization')));
      return contexts.create(identity, initial.requestId);
    },
  });

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
      metrics.httpRequests.inc({ route, status: String(res.statusCode) });
      metrics.httpDuration.observe({ route }, seconds);
      logger.info(
        { reqId: requestId, method: req.method, url: req.url, status: res.statusCode, ms: Math.round(seconds * 1000) },
        'request',
      );
    });
    void handle(req, res, route, requestId);
  });

  async function handle(req: IncomingMessage, res: ServerResponse, route: string, requestId: string): Promise<void> {
    try {
      if (stopping) return sendJson(res, 503, { status: 'shutting down' }, { connection: 'close' });
      if (route === '/healthz') return sendJson(res, 200, { status: 'ok' });
      if (route === '/readyz') {
        const dbCheck = await deps.db.check();
        metrics.databaseReady.set(dbCheck.ok ? 1 : 0);
        const check = dbCheck.ok && deps.readiness ? deps.readiness() : dbCheck;
        return sendJson(
          res,
          check.ok ? 200 : 503,
          check.ok ? { status: 'ready' } : { status: 'not ready', reason: check.reason },
        );
      }
      if (route === '/metrics') {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(await metrics.registry.metrics());
        return;
      }
      if (route === '/.well-known/jwks.json') {
        const keys = deps.keys();
        if (!keys) return sendJson(res, 503, { error: 'keys are not loaded yet' });
        return sendJson(res, 200, keys.jwks(), { 'cache-control': 'max-age=60' });
      }
      if (route === GRAPHQL_PATH) {
        const rejected = checkHttpRequest(req, deps.limits);
        if (rejected) {
          // Read and discard a moderately sized body first, so the client sees the answer
          // instead of a reset mid-upload; anything larger is cut off with the connection.
          const declared = Number(req.headers['content-length'] ?? 0);
          if (declared > 0 && declared <= REJECTED_BODY_DRAIN_BYTES) {
            req.resume();
            await once(req, 'end');
          }
          return sendJson(
            res,
            rejected.status,
            { errors: [{ message: rejected.message, extensions: { code: rejected.code } }] },
            { connection: 'close' },
          );
        }
        await yoga.handle(req, res, { requestId });
        return;
      }
      if (serveDashboard(req, res, route)) return;
      sendJson(res, 404, { error: 'not found' });
    } catch (err) {
      logger.error({ reqId: requestId, err: (err as Error).message }, 'request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.end();
    }
  }

  // graphql-ws on the same port and path, sharing the Yoga pipeline and the context factory.
  const wss = new WebSocketServer({ server, path: GRAPHQL_PATH, maxPayload: deps.limits.maxBodyBytes });
  serveGraphqlWs<Record<string, unknown>, { identity: Identity; requestId: string; authorization: string | null }>(
    {
      onConnect: async (ctx) => {
        const auth = ctx.connectionParams?.authorization ?? ctx.connectionParams?.Authorization;
        try {
          const authorization = typeof auth === 'string' ? auth : null;
          const identity = await contexts.authenticate(authorization);
          ctx.extra.identity = identity;
          ctx.extra.authorization = authorization;
          ctx.extra.requestId = randomUUID();
          // Closes the socket (4403) when the token expires or is revoked.
          const forget = deps.sessions.add(ctx.extra.socket, identity);
          ctx.extra.socket.once('close', forget);
          return true;
        } catch (err) {
          // Close with 4403 and the reason, so the client sees why.
          ctx.extra.socket.close(CLOSE_FORBIDDEN, (err as Error).message.slice(0, 120));
          return false;
        }
      },
      onSubscribe: async (ctx, _id, rawPayload) => {
        // Every new operation authenticates the socket's token again: a revocation on another
        // replica still bites, and roles follow membership changes made since the socket opened.
        let identity: Identity;
        try {
          identity = await contexts.authenticate(ctx.extra.authorization ?? null);
          ctx.extra.identity = identity;
        } catch (err) {
          const message = err instanceof Error ? err.message : '';
          // The same short close reasons the session registry uses.
          const reason = /revoked/.test(message)
            ? 'token revoked'
            : /expired/.test(message)
              ? 'token expired'
              : message || 'token could not be verified';
          deps.sessions.endTokens([(ctx.extra.identity as Identity).tokenId], reason);
          return [
            err instanceof GraphQLError ? err : new GraphQLError(reason, { extensions: { code: 'UNAUTHENTICATED' } }),
          ];
        }
        let payload = rawPayload;
        try {
          payload = resolvePersisted(rawPayload, deps.limits);
        } catch (err) {
          if (err instanceof GraphQLError) return [err];
          throw err;
        }
        const enveloped = yoga.getEnveloped({
          requestId: ctx.extra.requestId ?? randomUUID(),
          identity,
          request: new Request('http://localhost/graphql', { method: 'POST' }),
          params: payload,
        } as never);
        let document: DocumentNode;
        let contextValue: Context;
        try {
          document = enveloped.parse(payload.query);
          const errors = enveloped.validate(enveloped.schema, document);
          if (errors.length > 0) return errors;
          contextValue = (await enveloped.contextFactory()) as Context;
        } catch (err) {
          // Parse limits, rate limits and an expired identity come back as errors, not a dropped socket.
          if (err instanceof GraphQLError) return [err];
          throw err;
        }
        const args: ExecutionArgs = {
          schema: enveloped.schema,
          document,
          operationName: payload.operationName,
          variableValues: payload.variables,
          contextValue,
          rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
        };
        return args;
      },
      execute: (args) => (args.rootValue as { execute: (a: ExecutionArgs) => never }).execute(args),
      subscribe: (args) => (args.rootValue as { subscribe: (a: ExecutionArgs) => never }).subscribe(args),
    },
    wss,
    (err) => logger.error({ err: err instanceof Error ? err.message : String(err) }, 'graphql-ws internal error'),
  );
  wss.on('connection', (socket: WebSocket) => {
    metrics.wsConnections.inc();
    socket.on('close', () => metrics.wsConnections.dec());
  });

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

  async function close(): Promise<void> {
    if (stopping) return;
    stopping = true;
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

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(JSON.stringify(body));
}
