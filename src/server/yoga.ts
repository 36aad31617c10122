import type { GraphQLSchema } from 'graphql';
import { createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import type { Context } from '../../resolvers/builder.js';
import type { Identity } from '../auth/identity.js';
import type { Logger } from '../kernel/logger.js';
import type { ContextFactory } from './context.js';
import { createErrorMasker } from './errors.js';
import { exampleOperations, localGraphiQL } from './graphiql.js';
import { type Limits, limitsPlugin } from './limits.js';
import { GRAPHQL_PATH } from './routes/graphql.js';
import type { SessionRegistry } from './sessions.js';
import type { StreamCaps } from './stream-caps.js';

export interface ServerContext {
  requestId: string;
  /** Set for WebSocket operations: the identity the socket authenticated with. */
  identity?: Identity;
  /** Set for WebSocket operations: the socket's session closes it when the token expires. */
  viaSocket?: boolean;
  /** Set for WebSocket operations: aborted when the socket closes (HTTP uses the request's own signal). */
  signal?: AbortSignal;
}

export interface YogaDeps {
  schema: GraphQLSchema;
  contexts: ContextFactory;
  logger: Logger;
  limits: Limits;
  sessions: SessionRegistry;
  caps: StreamCaps;
  liveExecution?: Plugin;
}

/** The one GraphQL pipeline (plugins, error masking, context) for HTTP, SSE and WebSocket alike. */
export function createGraphQLYoga(deps: YogaDeps): YogaServerInstance<ServerContext, Context> {
  const { contexts } = deps;
  return createYoga<ServerContext, Context>({
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
    maskedErrors: { maskError: createErrorMasker(deps.logger.child({ component: 'graphql' })) },
    plugins: [
      limitsPlugin(deps.limits),
      deps.sessions.expiryPlugin(),
      deps.caps.ssePlugin(),
      ...(deps.liveExecution ? [deps.liveExecution] : []),
    ],
    context: async (initial): Promise<Context> => {
      const identity = initial.identity ?? (await contexts.authenticate(initial.request.headers.get('authorization')));
      // Read lazily: a Request's signal puts listeners on its socket, which only a waiting request needs.
      return contexts.create(identity, initial.requestId, () => initial.signal ?? initial.request.signal);
    },
  });
}
