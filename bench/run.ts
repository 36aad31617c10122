/**
 * Throughput and latency of the domain API on loopback: req/s, p50 and p99 for a page of 50
 * sandboxes (with tenant, worker and lease), a sandbox with its last 50 messages, createSandbox,
 * acquire/renew under contention, and a bare Yoga `{ __typename }` as the floor. Usage: npm run bench [-- sqlite|postgres]
 * Writes bench/results/<driver>.json and prints a Markdown table.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { createSchema, createYoga } from 'graphql-yoga';
import type { DatabaseKind } from '../src/config/index.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  type RegisteredWorker,
  registerWorker,
  renewLease,
  uniqueName,
} from '../test/helpers/fleet.js';
import { startTestPostgres } from '../test/helpers/postgres.js';
import { startTestServer, type TestServer } from '../test/helpers/server.js';
import { describeMachine } from './machine.js';

/** How long each scenario runs, and how many requests are in flight at once. */
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 3_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
/** A hard cap on requests per scenario, so a run always ends. */
const MAX_REQUESTS = 50_000;
/** Raised for the benchmark, so the limiter never answers instead of the server. */
const RATE_LIMIT_PER_MINUTE = '1000000';

interface Stats {
  scenario: string;
  requests: number;
  errors: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

async function measure(scenario: string, request: (i: number) => Promise<boolean>): Promise<Stats> {
  const latencies: number[] = [];
  let errors = 0;
  let issued = 0;
  const started = performance.now();
  const deadline = started + DURATION_MS;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < deadline && issued < MAX_REQUESTS) {
        const i = issued++;
        const t0 = performance.now();
        const ok = await request(i).catch(() => false);
        latencies.push(performance.now() - t0);
        if (!ok) errors += 1;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
  return {
    scenario,
    requests: latencies.length,
    errors,
    reqPerSec: Math.round(latencies.length / elapsed),
    p50Ms: round(pct(0.5)),
    p99Ms: round(pct(0.99)),
  };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** The floor: the same HTTP stack with a one-field schema, no auth, no database. */
async function bareYoga(): Promise<{ url: string; close: () => Promise<void> }> {
  const yoga = createYoga({
    schema: createSchema({ typeDefs: 'type Query { ok: Boolean }' }),
    logging: false,
    landingPage: false,
  });
  const server = createServer(yoga);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/graphql`, close: () => new Promise((r) => server.close(() => r())) };
}

async function post(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  token?: string,
): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: Record<string, unknown>; errors?: unknown[] };
  if (!res.ok || body.errors) throw new Error(JSON.stringify(body.errors ?? res.status));
  return body.data ?? {};
}

/** Messages in the conversation scenario: the sandbox holds more than the page, so the page is a real window. */
const CONVERSATION_MESSAGES = 120;
const MESSAGES_PAGE = 50;
/** Messages are oldest first and forward-only: the last 50 are the page after the 70th message's cursor. */
const CONVERSATION = `query($id: ID!, $after: String) { node(id: $id) { ... on Sandbox { id name status lastMessage { id }
  messages(first: ${MESSAGES_PAGE}, after: $after) { edges { cursor node { id threadId channel senderKind senderId body createdAt readAt } } pageInfo { hasNextPage } } } } }`;

const PAGE = `query($t: ID!) { sandboxes(tenantId: $t, first: 50) { edges { node { id name status tenant { slug } worker { name } lease { fencingToken } } } } }`;

async function benchDriver(kind: DatabaseKind, databaseUrl?: string): Promise<Stats[]> {
  // The per-token rate limit (600/min by default) would otherwise cap the scenarios, not the server.
  const server: TestServer = await startTestServer(kind, {
    databaseUrl,
    env: { FLOTILLA_LOG_LEVEL: 'silent', FLOTILLA_RATE_LIMIT_PER_MINUTE: RATE_LIMIT_PER_MINUTE },
  });
  try {
    const results: Stats[] = [];
    const bare = await bareYoga();
    try {
      results.push(
        await measure(
          'bare yoga { __typename }',
          async () => (await post(bare.url, '{ __typename }')).__typename === 'Query',
        ),
      );
    } finally {
      await bare.close();
    }

    const tenantId = await createTenant(server, uniqueName('bench'), {
      quota: { maxSandboxes: 1_000_000, maxCpuMillis: 1_000_000_000, maxMemoryMb: 1_000_000_000 },
    });
    const workers: RegisteredWorker[] = [];
    for (let i = 0; i < 4; i++)
      workers.push(
        await registerWorker(server, uniqueName('bw'), { tenantId, cpuMillis: 1_000_000, memoryMb: 1_000_000 }),
      );
    for (let i = 0; i < 50; i++)
      await createSandbox(server, tenantId, { name: `page-${i}`, resources: { cpuMillis: 1, memoryMb: 1 } });

    results.push(
      await measure('sandboxes page of 50 (+tenant, worker, lease)', async () => {
        const data = await post(server.app.graphqlUrl, PAGE, { t: tenantId }, server.adminToken);
        return (data.sandboxes as { edges: unknown[] }).edges.length === 50;
      }),
    );

    // A conversation: the sandbox's last 50 messages, read the way a chat view does (one page, no next page).
    const chat = (
      await createSandbox(server, tenantId, { name: 'conversation', resources: { cpuMillis: 1, memoryMb: 1 } })
    ).sandbox.id;
    for (let i = 0; i < CONVERSATION_MESSAGES; i++) {
      await post(
        server.app.graphqlUrl,
        'mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename } }',
        { i: { sandboxId: chat, body: `message ${i}: ${'lorem ipsum '.repeat(8)}` } },
        server.adminToken,
      );
    }
    const upTo = CONVERSATION_MESSAGES - MESSAGES_PAGE;
    const head = await post(
      server.app.graphqlUrl,
      `query($s: ID!) { messages(sandboxId: $s, first: ${upTo}) { edges { cursor } } }`,
      { s: chat },
      server.adminToken,
    );
    const after = (head.messages as { edges: { cursor: string }[] }).edges[upTo - 1].cursor;
    results.push(
      await measure(`a sandbox with its last ${MESSAGES_PAGE} messages`, async () => {
        const data = await post(server.app.graphqlUrl, CONVERSATION, { id: chat, after }, server.adminToken);
        const page = (data.node as { messages: { edges: unknown[]; pageInfo: { hasNextPage: boolean } } }).messages;
        return page.edges.length === MESSAGES_PAGE && !page.pageInfo.hasNextPage;
      }),
    );

    const other = await createTenant(server, uniqueName('bench-create'), {
      quota: { maxSandboxes: 1_000_000, maxCpuMillis: 1_000_000_000, maxMemoryMb: 1_000_000_000 },
    });
    await registerWorker(server, uniqueName('bcw'), { tenantId: other, cpuMillis: 1_000_000, memoryMb: 1_000_000 });
    results.push(
      await measure('createSandbox (one tenant: serialised on its row)', async (i) => {
        const r = await createSandbox(server, other, { name: `c${i}`, resources: { cpuMillis: 1, memoryMb: 1 } });
        return r.__typename === 'SandboxPayload';
      }),
    );

    // Every worker hammers the same few sandboxes: one holds each lease, the others are refused.
    const contended: string[] = [];
    for (let i = 0; i < 4; i++)
      contended.push(
        (await createSandbox(server, tenantId, { name: `lease-${i}`, resources: { cpuMillis: 1, memoryMb: 1 } }))
          .sandbox.id,
      );
    const held = new Map<string, string>();
    results.push(
      await measure('acquire/renew, 4 workers × 4 sandboxes', async (i) => {
        const worker = workers[i % workers.length];
        const sandboxId = contended[Math.floor(i / workers.length) % contended.length];
        const key = `${worker.id}/${sandboxId}`;
        const token = held.get(key);
        if (token) {
          const renewed = await renewLease(server, worker, sandboxId, token);
          if (renewed.__typename === 'LeasePayload') return true;
          held.delete(key);
          return renewed.__typename === 'LeaseConflictError' || renewed.__typename === 'StaleFencingTokenError';
        }
        const acquired = await acquireLease(server, worker, sandboxId);
        if (acquired.__typename === 'LeasePayload') held.set(key, acquired.lease.fencingToken);
        return acquired.__typename === 'LeasePayload' || acquired.__typename === 'LeaseConflictError';
      }),
    );
    return results;
  } finally {
    await server.close();
  }
}

function table(kind: string, stats: Stats[]): string {
  const rows = stats.map(
    (s) => `| ${s.scenario} | ${s.reqPerSec} | ${s.p50Ms} | ${s.p99Ms} | ${s.requests} | ${s.errors} |`,
  );
  return [
    `### ${kind}`,
    '',
    '| scenario | req/s | p50 ms | p99 ms | requests | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
  ].join('\n');
}

const wanted = (process.argv[2] ? [process.argv[2]] : ['sqlite', 'postgres']) as DatabaseKind[];
mkdirSync('bench/results', { recursive: true });
for (const kind of wanted) {
  const pg = kind === 'postgres' ? await startTestPostgres() : null;
  try {
    const databaseUrl = pg ? await pg.createDatabase() : undefined;
    const stats = await benchDriver(kind, databaseUrl);
    // The machine is shared: record how busy it was, since that moves every number.
    const meta = {
      kind,
      at: new Date().toISOString(),
      command: `npm run bench -- ${kind}`,
      durationMs: DURATION_MS,
      concurrency: CONCURRENCY,
      node: process.version,
      cpus: cpus().length,
      loadAverage1m: round(loadavg()[0]),
      machine: await describeMachine(databaseUrl),
    };
    writeFileSync(`bench/results/${kind}.json`, `${JSON.stringify({ ...meta, stats }, null, 2)}\n`);
    console.log(table(`${kind} (load average ${meta.loadAverage1m} on ${meta.cpus} CPUs)`, stats));
  } finally {
    await pg?.stop();
  }
}
