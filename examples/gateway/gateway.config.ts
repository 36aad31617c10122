/**
 * Hive Gateway configuration for Flotilla plus the example usage subgraph (`npm run gateway`).
 * The gateway holds no credentials of its own: every subgraph request carries the client's
 * Authorization header, so each subgraph authorizes the real caller.
 *
 * Subscriptions: a client subscribes at the gateway over graphql-ws (token in connectionParams
 * `authorization`, like Flotilla's own sockets) or GraphQL over SSE (token in the Authorization
 * header). The gateway opens one graphql-ws subscription to Flotilla per client subscription,
 * carrying that token, and for each event fetches the other subgraphs' fields (e.g. the usage
 * subgraph's Sandbox.costCentsPerHour and Tenant.billing) over HTTP with the same token.
 */
import { defineConfig, type GatewayPlugin } from '@graphql-hive/gateway';
import { GraphQLError } from 'graphql';
import { FLOTILLA_SUBGRAPH } from './compose.js';

/** The client's token as the gateway saw it: its Authorization header or graphql-ws connectionParams. */
function clientAuthorization(context: unknown): string | null {
  if (typeof context !== 'object' || context === null || !('headers' in context)) return null;
  const headers = context.headers;
  if (typeof headers !== 'object' || headers === null) return null;
  const value = 'authorization' in headers ? headers.authorization : 'Authorization' in headers ? headers.Authorization : null;
  return typeof value === 'string' ? value : null;
}

/**
 * Refuses a subscription without a token at the gateway. Flotilla refuses such a socket by
 * closing it (4403), which the gateway's upstream graphql-ws client retries with backoff for
 * half a minute before giving up; answering here gives the client Flotilla's HTTP answer at once.
 */
const requireTokenForSubscriptions: GatewayPlugin = {
  onSubscribe({ args, setResultAndStopExecution }) {
    if (clientAuthorization(args.contextValue)) return;
    setResultAndStopExecution({
      errors: [new GraphQLError('authentication required: send "Authorization: Bearer <token>"', { extensions: { code: 'UNAUTHENTICATED' } })],
    });
  },
};

export const gatewayConfig = defineConfig({
  plugins: () => [requireTokenForSubscriptions],
  propagateHeaders: {
    // Over graphql-ws the request is the socket's upgrade request, which carries no token: Hive
    // Gateway merges the connectionParams into context.headers, so look there first.
    fromClientToSubgraphs: ({ request, context }) => ({ authorization: clientAuthorization(context) ?? request.headers.get('authorization') }),
  },
  transportEntries: {
    // Subscriptions to Flotilla go over graphql-ws on its GraphQL path, authenticated the way
    // Flotilla's sockets expect: the token in connectionParams.authorization.
    [FLOTILLA_SUBGRAPH]: {
      options: {
        subscriptions: {
          kind: 'ws',
          location: '/graphql',
          options: { connectionParams: { authorization: '{context.headers.authorization}' } },
        },
      },
    },
  },
  logging: 'warn',
});
