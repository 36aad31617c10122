/**
 * Runs the example usage/billing subgraph.
 *   USAGE_PORT (default 4002), USAGE_HOST (default 127.0.0.1),
 *   FLOTILLA_GRAPHQL_URL (default http://127.0.0.1:4000/graphql): where authorization is asked.
 */
import { createServer } from 'node:http';
import { createYoga } from 'graphql-yoga';
import { BillingStore, createUsageContext, createUsageSchema, flotillaClient, type UsageContext } from './schema.js';

const DEFAULT_PORT = 4002;

const port = Number(process.env.USAGE_PORT ?? DEFAULT_PORT);
const host = process.env.USAGE_HOST ?? '127.0.0.1';
const flotillaUrl = process.env.FLOTILLA_GRAPHQL_URL ?? 'http://127.0.0.1:4000/graphql';

const yoga = createYoga<Record<string, unknown>, UsageContext>({
  schema: createUsageSchema(new BillingStore()),
  context: ({ request }) => createUsageContext(flotillaClient(flotillaUrl, request.headers.get('authorization'))),
  graphiql: false,
  logging: 'warn',
});

const server = createServer(yoga);
server.listen(port, host, () => {
  const address = server.address();
  const actual = typeof address === 'object' && address ? address.port : port;
  console.log(`usage subgraph listening at http://${host}:${actual}${yoga.graphqlEndpoint}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
