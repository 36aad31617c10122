import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { type DocumentNode, type ExecutionArgs, GraphQLError } from 'graphql';
import type { YogaServerInstance } from 'graphql-yoga';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Context } from '../../resolvers/builder.js';
import type { Identity } from '../auth/identity.js';
import { AuthenticationError, type DomainError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import type { ContextFactory } from './context.js';
import { toGraphQLError } from './errors.js';
import type { Limits } from './limits.js';
import type { Metrics } from './metrics.js';
import { resolvePersisted } from './persisted-operations.js';
import { GRAPHQL_PATH } from './routes/graphql.js';
import { CLOSE_FORBIDDEN, type SessionRegistry } from './sessions.js';
import { CLOSE_TOO_MANY_SOCKETS, type StreamCaps } from './stream-caps.js';
import { serveGraphqlWs } from './ws.js';
import type { ServerContext } from './yoga.js';

export interface WebSocketDeps {
  contexts: ContextFactory;
  sessions: SessionRegistry;
  caps: StreamCaps;
  limits: Limits;
  metrics: Metrics;
  logger: Logger;
}

/**
 * Yoga's context wants a Request; a WebSocket operation has none of its own. One shared, never
 * read, instead of one per operation: a live subscription would keep it for its whole life.
 */
const WS_REQUEST = new Request('http://localhost/graphql', { method: 'POST' });

/** graphql-ws on the HTTP server's port and GraphQL path, executing through the Yoga pipeline. */
export function serveGraphQLOverWebSocket(
  server: Server,
  yoga: YogaServerInstance<ServerContext, Context>,
  deps: WebSocketDeps,
): WebSocketServer {
  const { contexts, metrics } = deps;
  const wss = new WebSocketServer({ server, path: GRAPHQL_PATH, maxPayload: deps.limits.maxBodyBytes });
  serveGraphqlWs<
    Record<string, unknown>,
    { identity: Identity; requestId: string; authorization: string | null; closed: AbortController }
  >(
    {
      onConnect: async (ctx) => {
        const auth = ctx.connectionParams?.authorization ?? ctx.connectionParams?.Authorization;
        try {
          const authorization = typeof auth === 'string' ? auth : null;
          const identity = await contexts.authenticate(authorization);
          // One slot per socket of the token, given back whenever the socket closes (for any reason).
          const release = deps.caps.admitSocket(identity);
          if (!release) {
            ctx.extra.socket.close(CLOSE_TOO_MANY_SOCKETS, deps.caps.socketRefusal());
            return false;
          }
          ctx.extra.socket.once('close', release);
          ctx.extra.identity = identity;
          ctx.extra.authorization = authorization;
          ctx.extra.requestId = randomUUID();
          // Operations that wait (waitForSandbox) end when their socket does.
          const closed = new AbortController();
          ctx.extra.closed = closed;
          ctx.extra.socket.once('close', () => closed.abort());
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
        // graphql-ws holds an entry per operation from its subscribe message until it ends.
        const tooMany = deps.caps.checkSocketOperations(Object.keys(ctx.subscriptions).length);
        if (tooMany) return [toGraphQLError(tooMany)];
        // Every new operation authenticates the socket's token again: a revocation on another
        // replica still bites, and roles follow membership changes made since the socket opened.
        let identity: Identity;
        try {
          identity = await contexts.identify(ctx.extra.authorization ?? null);
          ctx.extra.identity = identity;
        } catch (err) {
          // `identify` throws only domain errors (anything else becomes an AuthenticationError).
          const refused = err as DomainError;
          deps.sessions.endTokens([(ctx.extra.identity as Identity).tokenId], closeReason(refused));
          return [toGraphQLError(refused)];
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
          viaSocket: true,
          signal: ctx.extra.closed?.signal,
          request: WS_REQUEST,
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
    (err) => deps.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'graphql-ws internal error'),
  );
  wss.on('connection', (socket: WebSocket) => {
    metrics.wsConnections.inc();
    socket.on('close', () => metrics.wsConnections.dec());
  });
  return wss;
}

/** The socket's close reason when its token is refused: the same short reasons the session registry uses. */
function closeReason(err: DomainError): string {
  if (err instanceof AuthenticationError && err.failure === 'REVOKED') return 'token revoked';
  if (err instanceof AuthenticationError && err.failure === 'EXPIRED') return 'token expired';
  return err.message || 'token could not be verified';
}
