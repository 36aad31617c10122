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
  const value =
    'authorization' in headers ? headers.authorization : 'Authorization' in headers ? headers.Authorization : null;
  return typeof value === 'string' ? value : null;
}

/** Where the gateway asks Flotilla whether a subscriber's token is good (set by launch.ts). */
const FLOTILLA_GRAPHQL_URL = process.env.FLOTILLA_GRAPHQL_URL;

function unauthenticated(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'UNAUTHENTICATED' } });
}

/**
 * Why Flotilla would refuse this subscriber's token, or null. Flotilla refuses a socket with a
 * missing or bad token by closing it (4403); the gateway's upstream graphql-ws client retries a
 * closed socket with backoff for over half a minute and then reports an error without a message
 * or code. So the gateway asks Flotilla first, over HTTP with the same token, and answers the
 * client at once with Flotilla's own error. Flotilla still decides; the gateway only relays.
 */
async function tokenRefusal(authorization: string | null): Promise<GraphQLError | null> {
  if (!authorization) return unauthenticated('authentication required: send "Authorization: Bearer <token>"');
  if (!FLOTILLA_GRAPHQL_URL) return null; // not configured: Flotilla's socket refusal is the answer
  try {
    const res = await fetch(FLOTILLA_GRAPHQL_URL, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', authorization },
      body: JSON.stringify({ query: 'query GatewayTokenCheck { __typename }' }),
    });
    const body = (await res.json()) as { errors?: { message?: string; extensions?: { code?: unknown } }[] };
    const [first] = body.errors ?? [];
    if (!first) return null;
    const code = typeof first.extensions?.code === 'string' ? first.extensions.code : 'UNAUTHENTICATED';
    return new GraphQLError(first.message ?? 'token refused', { extensions: { code } });
  } catch {
    return unauthenticated('token could not be verified'); // fail closed, as Flotilla does
  }
}

const checkSubscriberToken: GatewayPlugin = {
  async onSubscribe({ args, setResultAndStopExecution }) {
    const refusal = await tokenRefusal(clientAuthorization(args.contextValue));
    if (refusal) setResultAndStopExecution({ errors: [refusal] });
  },
};

export const gatewayConfig = defineConfig({
  plugins: () => [checkSubscriberToken],
  propagateHeaders: {
    // Over graphql-ws the request is the socket's upgrade request, which carries no token: Hive
    // Gateway merges the connectionParams into context.headers, so look there first.
    fromClientToSubgraphs: ({ request, context }) => ({
      authorization: clientAuthorization(context) ?? request.headers.get('authorization'),
    }),
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
