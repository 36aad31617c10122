/**
 * The floor of the request benchmarks: a bare graphql-yoga in its own process (as Flotilla runs
 * in its own) serving the list page's shape from memory: `sandboxes(tenantId, first)` over 50
 * precomputed rows with `worker { id name }` and `tenant { id slug }`, and `{ __typename }`.
 * No auth, no database, no plugins beyond Yoga's defaults.
 *
 *   tsx bench/floor-server.ts   → prints `listening <graphql url>`
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSchema, createYoga } from 'graphql-yoga';

/** Rows on the page, as many as the list scenario asks for. */
const ROWS = 50;
const WORKERS = 5;

const typeDefs = /* GraphQL */ `
  enum SandboxStatus { DELETED FAILED LOST PENDING RUNNING SCHEDULED STARTING STOPPED STOPPING }
  type Tenant { id: ID! slug: String! name: String! }
  type Worker { id: ID! name: String! }
  type Sandbox { id: ID! name: String! status: SandboxStatus! worker: Worker tenant: Tenant! }
  type SandboxEdge { cursor: String! node: Sandbox! }
  type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }
  type SandboxConnection { edges: [SandboxEdge!]! pageInfo: PageInfo! totalCount: Int! }
  type Query { sandboxes(tenantId: ID!, first: Int, after: String): SandboxConnection! }
`;

const tenant = { id: randomUUID(), slug: 'bench-floor', name: 'bench-floor' };
const workers = Array.from({ length: WORKERS }, (_, i) => ({ id: randomUUID(), name: `floor-worker-${i}` }));
const edges = Array.from({ length: ROWS }, (_, i) => {
  const id = randomUUID();
  return {
    cursor: Buffer.from(`sandbox:${id}`).toString('base64url'),
    node: { id, name: `page-${i}`, status: 'SCHEDULED', worker: workers[i % WORKERS], tenant },
  };
});

const yoga = createYoga({
  schema: createSchema({
    typeDefs,
    resolvers: {
      Query: {
        sandboxes: (_: unknown, args: { first?: number | null }) => {
          const page = edges.slice(0, args.first ?? ROWS);
          return {
            edges: page,
            totalCount: edges.length,
            pageInfo: {
              hasNextPage: page.length < edges.length,
              hasPreviousPage: false,
              startCursor: page[0]?.cursor ?? null,
              endCursor: page.at(-1)?.cursor ?? null,
            },
          };
        },
      },
    },
  }),
  logging: false,
  landingPage: false,
  graphiql: false,
});

const server = createServer(yoga);
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  console.log(`listening http://127.0.0.1:${port}/graphql`);
});
