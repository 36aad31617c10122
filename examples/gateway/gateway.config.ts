/**
 * Hive Gateway configuration for Flotilla plus the example usage subgraph (`npm run gateway`).
 * The gateway holds no credentials of its own: every subgraph request carries the client's
 * Authorization header, so each subgraph authorizes the real caller.
 */
import { defineConfig } from '@graphql-hive/gateway';
import { FLOTILLA_SUBGRAPH } from './compose.js';

export const gatewayConfig = defineConfig({
  propagateHeaders: {
    fromClientToSubgraphs: ({ request }) => ({ authorization: request.headers.get('authorization') }),
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
