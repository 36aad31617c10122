/**
 * Request/response benchmarks. The server runs as its own process (`flotilla serve`), the load
 * comes from autocannon in this one, and every scenario is also reported as a ratio to a bare
 * graphql-yoga (bench/floor-server.ts, a third process) serving the same 50-row shape from
 * memory, measured in the same run:
 *
 *   list page          sandboxes(tenantId, first: 50) { id name status worker tenant } over 500, c=50
 *   conversation       a sandbox with its last 50 messages, c=50
 *   { __typename }     authenticated with an API token, c=10
 *   sendMessage        16 in flight, one sandbox each
 *   createSandbox      16 in flight across 8 tenants
 *   acquire/renew      4 workers × 4 clients on the sandboxes placed on each worker
 *   idle               500 unplaceable PENDING sandboxes: server CPU and statements per second
 *
 * Usage: npm run bench [-- sqlite|postgres]  (run `npm run build` first: see bench/README.md)
 * Writes bench/results/<driver>.json and prints a Markdown table.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import autocannon, { type Options, type Result } from 'autocannon';
import pg from 'pg';
import { tempDir } from '../test/helpers/databases.js';
import { startTestPostgres } from '../test/helpers/postgres.js';
import { gql, readMetrics, sleep } from './http.js';
import { describeMachine } from './machine.js';
import { RATE_LIMIT_PER_MINUTE, type ServerProcess, serverBuild, startServerProcess } from './server-process.js';

type Driver = 'sqlite' | 'postgres';

/** How long each scenario is measured, after a warm-up of the same load. */
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 5_000);
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1_000);
/** BENCH_ONLY=list,lease,idle: only the scenarios whose names contain one of these words (the floors always run). */
const ONLY = process.env.BENCH_ONLY?.toLowerCase().split(',').filter(Boolean) ?? null;
const wanted = (name: string) => !ONLY || ONLY.some((word) => name.toLowerCase().includes(word));
/** How long the idle server is watched, after it had time to settle. */
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 10_000);
const IDLE_SETTLE_MS = 3_000;
/** Requests in flight (autocannon connections) per kind of scenario; the figures use 50 for the list. */
const READ_CONNECTIONS = 50;
const TYPENAME_CONNECTIONS = 10;
const WRITE_CONNECTIONS = 16;
/** A scenario whose failed responses exceed this share is reported as failed, not measured. */
const MAX_ERROR_SHARE = 0.01;
/** Bounds on the wait for requests left in flight when a run stops (see settle). */
const SETTLE_MAX_MS = 5_000;
const SETTLE_MARGIN_MS = 100;
/** autocannon's per-request timeout, seconds. */
const REQUEST_TIMEOUT_S = 30;

/** The list page: 500 sandboxes of one tenant, placed on a few of its workers. */
const LIST_SANDBOXES = 500;
const LIST_WORKERS = 5;
const PAGE_SIZE = 50;
/** The conversation: more messages than the page, so the page is a real window. */
const CONVERSATION_MESSAGES = 120;
const MESSAGES_PAGE = 50;
const CREATE_TENANTS = 8;
/** Acquire/renew: each worker's clients contend for the few sandboxes placed on that worker. */
const LEASE_WORKERS = 4;
const LEASE_SANDBOXES_PER_WORKER = 2;
const LEASE_CLIENTS_PER_WORKER = 4;
/** Every this many requests a client re-acquires a lease it could renew (a worker restarting), bumping the token. */
const REACQUIRE_EVERY = 8;
const LEASE_TTL_SECONDS = 60;
/** Idle: sandboxes waiting for a worker that never comes. */
const IDLE_BACKLOG = 500;
/** Seeding requests in flight. */
const SEED_CONCURRENCY = 8;
/**
 * Workers in these benchmarks never heartbeat: a long TTL keeps them ONLINE (placeable, leasable)
 * for the whole run, and the idle server's drained worker from turning OFFLINE mid-measurement.
 */
const HEARTBEAT_TTL_SECONDS = '3600';

const BIG_QUOTA = { maxSandboxes: 1_000_000, maxCpuMillis: 1_000_000_000, maxMemoryMb: 1_000_000_000 };
const BIG_WORKER = { cpuMillis: 1_000_000, memoryMb: 1_000_000 };
const TINY = { cpuMillis: 1, memoryMb: 1 };

const LIST = `query($t: ID!) { sandboxes(tenantId: $t, first: ${PAGE_SIZE}) { edges { node { id name status worker { id name } tenant { id slug } } } } }`;
const TYPENAME = '{ __typename }';
/** Messages are oldest first and forward-only: the last 50 are the page after the 70th message's cursor. */
const CONVERSATION = `query($id: ID!, $after: String) { node(id: $id) { ... on Sandbox { id name status lastMessage { id }
  messages(first: ${MESSAGES_PAGE}, after: $after) { edges { cursor node { id threadId channel senderKind senderId body createdAt readAt } } pageInfo { hasNextPage } } } } }`;
const SEND = 'mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename } }';
const CREATE =
  'mutation($i: CreateSandboxInput!) { createSandbox(input: $i) { __typename ... on SandboxPayload { sandbox { id status worker { id } } } ... on Error { code message } } }';
const LEASE_FIELDS =
  '__typename ... on LeasePayload { lease { fencingToken } } ... on StaleFencingTokenError { current } ... on Error { code }';
const ACQUIRE = `mutation($i: AcquireLeaseInput!) { acquireLease(input: $i) { ${LEASE_FIELDS} } }`;
const RENEW = `mutation($i: RenewLeaseInput!) { renewLease(input: $i) { ${LEASE_FIELDS} } }`;

/** Flotilla's counter of SQL statements sent, on its /metrics. */
const STATEMENTS = 'flotilla_db_statements_total';
const CLOCK_TICKS = clockTicksPerSecond();

/** A progress line on stderr, with the seconds since the run started. */
const progress = (line: string) => console.error(`[${(performance.now() / 1000).toFixed(1)} s] ${line}`);
const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const requestBody = (query: string, variables: Record<string, unknown> = {}) => JSON.stringify({ query, variables });

/** How many times `needle` occurs in `text` (cheap enough to check every response). */
function occurrences(text: string, needle: string): number {
  let count = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) count += 1;
  return count;
}
const noErrors = (body: string) => !body.includes('"errors":');

// ---------------------------------------------------------------------------------------------
// Measuring

type FloorShape = 'list page' | '{ __typename }';

/** The process a scenario loads: its CPU time is read from /proc, its statements (Flotilla only) from /metrics. */
interface Target {
  pid: number;
  graphqlUrl: string | null;
}

interface Scenario {
  name: string;
  connections: number;
  /** Which floor figure its ratio is taken to. */
  floor: FloorShape;
  target: Target;
  /** autocannon loads run side by side (most scenarios have one); url, duration and timeout are set here. */
  loads: Omit<Options, 'duration' | 'timeout'>[];
  /** A full check of one response made with a plain fetch before and after: null when fine, else why not. */
  check(): Promise<string | null>;
  /** Outcome counts the scenario keeps (acquire/renew), reset before measuring. */
  outcomes?: Record<string, number>;
  /** A reason to call the run failed although every response passed (e.g. no lease was ever granted). */
  failure?: () => string | null;
}

interface Stats {
  scenario: string;
  connections: number;
  /** Responses that passed the body check, per second of the measured interval. */
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Responses whose body failed the scenario's check (non-2xx included) plus connection errors and timeouts. */
  errors: number;
  non2xx: number;
  timeouts: number;
  floor: FloorShape;
  /**
   * The loaded process's CPU time (user + system) per request, from the start of the interval until
   * the requests still in flight at its end were served too, over completed requests + connections.
   */
  serverCpuMsPerRequest: number | null;
  /** Flotilla's statements (its /metrics) per request, counted the same way, background work included. */
  statementsPerRequest: number | null;
  /** reqPerSec over the floor's req/s for the same shape in this run; null when either failed. */
  ratioToFloor: number | null;
  ok: boolean;
  failure: string | null;
  outcomes?: Record<string, number>;
}

async function runLoads(scenario: Scenario, durationMs: number): Promise<{ result: Result; seconds: number }> {
  const started = performance.now();
  const results = await Promise.all(
    scenario.loads.map((load) =>
      autocannon({ ...load, duration: durationMs / 1000, timeout: REQUEST_TIMEOUT_S, skipAggregateResult: true }),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  const url = scenario.loads[0].url;
  return { result: autocannon.aggregateResult(results, { url, connections: scenario.connections }), seconds };
}

async function measure(scenario: Scenario): Promise<Stats> {
  progress(`  ${scenario.name} (c=${scenario.connections})…`);
  const failed = (failure: string): Stats => ({
    scenario: scenario.name,
    connections: scenario.connections,
    reqPerSec: 0,
    p50Ms: 0,
    p99Ms: 0,
    requests: 0,
    errors: 0,
    non2xx: 0,
    timeouts: 0,
    floor: scenario.floor,
    serverCpuMsPerRequest: null,
    statementsPerRequest: null,
    ratioToFloor: null,
    ok: false,
    failure,
  });
  const before = await scenario.check().catch((err: unknown) => String(err));
  if (before) return failed(`before: ${before}`);
  if (WARMUP_MS > 0) await settle((await runLoads(scenario, WARMUP_MS)).result);
  if (scenario.outcomes) for (const key of Object.keys(scenario.outcomes)) scenario.outcomes[key] = 0;
  const { pid, graphqlUrl } = scenario.target;
  const statements = async () => (graphqlUrl ? (await readMetrics(graphqlUrl))(STATEMENTS) : Number.NaN);
  const statementsBefore = await statements();
  const cpuBefore = cpuSeconds(pid);
  const { result, seconds } = await runLoads(scenario, DURATION_MS);
  await settle(result);
  // Work is counted until the requests still in flight when the run stopped (one per connection) are done too.
  const cpu = cpuSeconds(pid) - cpuBefore;
  const statementsDuring = (await statements()) - statementsBefore;
  const after = await scenario.check().catch((err: unknown) => String(err));
  const requests = result.requests.total;
  const served = requests + scenario.connections;
  const perRequest = (x: number, digits: number) => (Number.isFinite(x) ? round(x / served, digits) : null);
  // A non-2xx body fails the check too, so it is among the mismatches already.
  const errors = result.mismatches + result.errors;
  const good = Math.max(0, requests - result.mismatches);
  let failure: string | null = after ? `after: ${after}` : null;
  if (!failure && requests === 0) failure = `no response within the ${DURATION_MS} ms measured`;
  if (!failure && good === 0) failure = 'no response passed the check';
  if (!failure && errors > MAX_ERROR_SHARE * Math.max(1, requests))
    failure = `${errors} of ${requests} responses failed`;
  failure ??= scenario.failure?.() ?? null;
  return {
    scenario: scenario.name,
    connections: scenario.connections,
    reqPerSec: Math.round(good / seconds),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    requests,
    errors,
    non2xx: result.non2xx,
    timeouts: result.timeouts,
    floor: scenario.floor,
    serverCpuMsPerRequest: perRequest(cpu * 1000, 3),
    statementsPerRequest: perRequest(statementsDuring, 2),
    ratioToFloor: null,
    ok: failure === null,
    failure,
    ...(scenario.outcomes ? { outcomes: { ...scenario.outcomes } } : {}),
  };
}

/**
 * autocannon stops with a request in flight on every connection and does not wait for them; the
 * server still serves them. Waits about as long as the slowest request of the run took, so the
 * next interval neither pays for them nor is measured while they finish.
 */
async function settle(run: Result): Promise<void> {
  await sleep(Math.min(SETTLE_MAX_MS, run.latency.max) + SETTLE_MARGIN_MS);
}

/** A plain fetch of one request body; returns why its answer is wrong, or null. */
async function sample(
  url: string,
  token: string | null,
  body: string,
  valid: (data: Record<string, unknown>) => boolean,
): Promise<string | null> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body,
  });
  const text = await res.text();
  let parsed: { data?: Record<string, unknown>; errors?: unknown[] };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    return `HTTP ${res.status}: ${text.slice(0, 300)}`;
  }
  if (!res.ok || parsed.errors || !parsed.data) return `HTTP ${res.status}: ${text.slice(0, 300)}`;
  return valid(parsed.data) ? null : `unexpected answer: ${text.slice(0, 300)}`;
}

function post(url: string, token: string | null, body: string): Omit<Options, 'duration' | 'timeout'> {
  return {
    url,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body,
  };
}

/**
 * WRITE_CONNECTIONS connections, each sending one of `bodies` (connection i the i-th, round the
 * list) for the whole run; a response passes when its mutation answered `payload`.
 */
function bodyPerConnection(
  url: string,
  token: string,
  bodies: string[],
  payload: string,
): Omit<Options, 'duration' | 'timeout'> {
  let connection = 0;
  return {
    ...post(url, token, bodies[0]),
    connections: WRITE_CONNECTIONS,
    setupClient: (client) => client.setBody(bodies[connection++ % bodies.length]),
    verifyBody: (b) => b.includes(`"__typename":"${payload}"`),
  };
}

// ---------------------------------------------------------------------------------------------
// The floor

interface Floor {
  url: string;
  pid: number;
  stop(): void;
}

/** Starts bench/floor-server.ts in its own process and reads the URL it prints. */
function startFloor(): Promise<Floor> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', resolve('bench/floor-server.ts')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const url = /listening (\S+)/.exec(out)?.[1];
      if (url && child.pid !== undefined) resolvePromise({ url, pid: child.pid, stop: () => child.kill('SIGTERM') });
    });
    child.on('exit', (code) => reject(new Error(`floor server exited with ${code}: ${out}`)));
  });
}

type ListData = { sandboxes: { edges: { node: { worker: unknown; tenant: unknown } }[] } };
const fullPage = (data: Record<string, unknown>) => {
  const edges = (data as ListData).sandboxes?.edges ?? [];
  return edges.length === PAGE_SIZE && edges.every((e) => e.node.worker && e.node.tenant);
};
const checkPage = (body: string) => noErrors(body) && occurrences(body, '"node":{') === PAGE_SIZE;
const checkTypename = (body: string) => noErrors(body) && body.includes('"__typename":"Query"');

function floorScenarios(floor: Floor): Scenario[] {
  const tenantId = '00000000-0000-4000-8000-000000000000';
  const list = requestBody(LIST, { t: tenantId });
  const floorTarget: Target = { pid: floor.pid, graphqlUrl: null };
  return [
    {
      name: 'floor: list page (bare Yoga, from memory)',
      connections: READ_CONNECTIONS,
      floor: 'list page',
      target: floorTarget,
      loads: [{ ...post(floor.url, null, list), connections: READ_CONNECTIONS, verifyBody: checkPage }],
      check: () => sample(floor.url, null, list, fullPage),
    },
    {
      name: 'floor: { __typename } (bare Yoga)',
      connections: TYPENAME_CONNECTIONS,
      floor: '{ __typename }',
      target: floorTarget,
      loads: [
        {
          ...post(floor.url, null, requestBody(TYPENAME)),
          connections: TYPENAME_CONNECTIONS,
          verifyBody: checkTypename,
        },
      ],
      check: () => sample(floor.url, null, requestBody(TYPENAME), (d) => d.__typename === 'Query'),
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Seeding, through the GraphQL API with the admin token

/** A Flotilla server to call: its GraphQL URL, the admin token, its process. */
interface Api {
  url: string;
  token: string;
  pid: number;
}

const targetOf = (api: Api): Target => ({ pid: api.pid, graphqlUrl: api.url });

/** Runs `count` async steps with at most SEED_CONCURRENCY in flight; results in order. */
async function inParallel<T>(count: number, step: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(SEED_CONCURRENCY, count) }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await step(i);
      }
    }),
  );
  return out;
}

async function createTenant(api: Api, prefix: string): Promise<string> {
  const slug = `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
  const data = await gql<{ createTenant: { tenant?: { id: string } } }>(
    api.url,
    api.token,
    'mutation($i: CreateTenantInput!) { createTenant(input: $i) { ... on CreateTenantPayload { tenant { id } } } }',
    { i: { slug, name: slug, quota: BIG_QUOTA } },
  );
  if (!data.createTenant.tenant) throw new Error(`createTenant ${slug} failed`);
  return data.createTenant.tenant.id;
}

interface Worker {
  id: string;
  token: string;
}

async function registerWorker(api: Api, tenantId: string, name: string): Promise<Worker> {
  const data = await gql<{ registerWorker: { __typename: string; token?: string; worker?: { id: string } } }>(
    api.url,
    api.token,
    `mutation($i: RegisterWorkerInput!) { registerWorker(input: $i) { __typename
      ... on RegisterWorkerPayload { token worker { id } } } }`,
    { i: { name: `${name}-${Math.random().toString(36).slice(2, 8)}`, tenantId, capacity: BIG_WORKER } },
  );
  const { token, worker } = data.registerWorker;
  if (!token || !worker) throw new Error(`registerWorker: ${data.registerWorker.__typename}`);
  return { id: worker.id, token };
}

interface Created {
  id: string;
  status: string;
  workerId: string | null;
}

async function createSandbox(api: Api, tenantId: string, name: string): Promise<Created> {
  const data = await gql<{
    createSandbox: { __typename: string; sandbox?: { id: string; status: string; worker: { id: string } | null } };
  }>(api.url, api.token, CREATE, { i: sandboxInput(tenantId, name) });
  const { sandbox } = data.createSandbox;
  if (!sandbox) throw new Error(`createSandbox: ${JSON.stringify(data.createSandbox)}`);
  return { id: sandbox.id, status: sandbox.status, workerId: sandbox.worker?.id ?? null };
}

function sandboxInput(tenantId: string, name: string) {
  return { tenantId, name, image: 'ghcr.io/acme/agent:1', command: ['agent'], resources: TINY };
}

async function sendMessage(api: Api, sandboxId: string, body: string): Promise<void> {
  const data = await gql<{ sendMessage: { __typename: string } }>(api.url, api.token, SEND, {
    i: { sandboxId, body },
  });
  if (data.sendMessage.__typename !== 'MessagePayload') throw new Error(`sendMessage: ${data.sendMessage.__typename}`);
}

async function apiToken(api: Api, tenantId: string): Promise<string> {
  const data = await gql<{ createApiToken: { __typename: string; token?: string } }>(
    api.url,
    api.token,
    `mutation($i: CreateApiTokenInput!) { createApiToken(input: $i) { __typename ... on CreateApiTokenPayload { token } } }`,
    { i: { tenantId, role: 'VIEWER', ttlSeconds: 24 * 3600 } },
  );
  if (!data.createApiToken.token) throw new Error(`createApiToken: ${data.createApiToken.__typename}`);
  return data.createApiToken.token;
}

// ---------------------------------------------------------------------------------------------
// Flotilla's scenarios

async function listScenarios(api: Api): Promise<Scenario[]> {
  const { url, token } = api;
  const tenantId = await createTenant(api, 'bench-list');
  for (let w = 0; w < LIST_WORKERS; w++) await registerWorker(api, tenantId, `bench-list-w${w}`);
  const placed = await inParallel(LIST_SANDBOXES, (i) => createSandbox(api, tenantId, `page-${i}`));
  if (placed.some((s) => !s.workerId)) throw new Error('list: every sandbox should be placed on a worker');
  const list = requestBody(LIST, { t: tenantId });

  const viewer = await apiToken(api, tenantId);
  const typename = requestBody(TYPENAME);
  return [
    {
      name: `list page: sandboxes(first: ${PAGE_SIZE}) of ${LIST_SANDBOXES}`,
      connections: READ_CONNECTIONS,
      floor: 'list page',
      target: targetOf(api),
      loads: [{ ...post(url, token, list), connections: READ_CONNECTIONS, verifyBody: checkPage }],
      check: () => sample(url, token, list, fullPage),
    },
    {
      name: '{ __typename }, API token',
      connections: TYPENAME_CONNECTIONS,
      floor: '{ __typename }',
      target: targetOf(api),
      loads: [{ ...post(url, viewer, typename), connections: TYPENAME_CONNECTIONS, verifyBody: checkTypename }],
      check: () => sample(url, viewer, typename, (d) => d.__typename === 'Query'),
    },
  ];
}

async function chatScenarios(api: Api): Promise<Scenario[]> {
  const { url, token } = api;
  const tenantId = await createTenant(api, 'bench-chat');
  await registerWorker(api, tenantId, 'bench-chat-w');
  const chat = (await createSandbox(api, tenantId, 'conversation')).id;
  // One at a time: the conversation's order is the order they were sent in.
  for (let i = 0; i < CONVERSATION_MESSAGES; i++)
    await sendMessage(api, chat, `message ${i}: ${'lorem ipsum '.repeat(8)}`);
  const upTo = CONVERSATION_MESSAGES - MESSAGES_PAGE;
  const head = await gql<{ messages: { edges: { cursor: string }[] } }>(
    url,
    token,
    `query($s: ID!) { messages(sandboxId: $s, first: ${upTo}) { edges { cursor } } }`,
    { s: chat },
  );
  const conversation = requestBody(CONVERSATION, { id: chat, after: head.messages.edges[upTo - 1].cursor });
  type Conversation = { node: { messages: { edges: unknown[]; pageInfo: { hasNextPage: boolean } } } };

  // sendMessage locks its sandbox's row: one sandbox per connection, so they do not queue on one row.
  const targets = await inParallel(WRITE_CONNECTIONS, (i) => createSandbox(api, tenantId, `send-${i}`));
  const sendBodies = targets.map((s, i) =>
    requestBody(SEND, { i: { sandboxId: s.id, body: `bench message from connection ${i}` } }),
  );
  return [
    {
      name: `a sandbox with its last ${MESSAGES_PAGE} messages`,
      connections: READ_CONNECTIONS,
      floor: 'list page',
      target: targetOf(api),
      loads: [
        {
          ...post(url, token, conversation),
          connections: READ_CONNECTIONS,
          verifyBody: (b) => noErrors(b) && occurrences(b, '"cursor":') === MESSAGES_PAGE,
        },
      ],
      check: () =>
        sample(url, token, conversation, (d) => {
          const page = (d as Conversation).node?.messages;
          return page?.edges.length === MESSAGES_PAGE && !page.pageInfo.hasNextPage;
        }),
    },
    {
      name: `sendMessage, ${WRITE_CONNECTIONS} in flight (one sandbox each)`,
      connections: WRITE_CONNECTIONS,
      floor: 'list page',
      target: targetOf(api),
      loads: [bodyPerConnection(url, token, sendBodies, 'MessagePayload')],
      check: () =>
        sample(
          url,
          token,
          sendBodies[0],
          (d) => (d.sendMessage as { __typename: string }).__typename === 'MessagePayload',
        ),
    },
  ];
}

async function createScenario(api: Api): Promise<Scenario> {
  const { url, token } = api;
  const tenants = await inParallel(CREATE_TENANTS, (i) => createTenant(api, `bench-create-${i}`));
  await inParallel(CREATE_TENANTS, (i) => registerWorker(api, tenants[i], `bench-create-w${i}`));
  const bodies = tenants.map((t) => requestBody(CREATE, { i: sandboxInput(t, 'created') }));
  type Payload = { createSandbox: { __typename: string; sandbox?: { status: string } } };
  return {
    name: `createSandbox, ${WRITE_CONNECTIONS} in flight across ${CREATE_TENANTS} tenants`,
    connections: WRITE_CONNECTIONS,
    floor: 'list page',
    target: targetOf(api),
    loads: [bodyPerConnection(url, token, bodies, 'SandboxPayload')],
    // Placed at once: each tenant's worker has room for every sandbox the run creates.
    check: () => sample(url, token, bodies[0], (d) => (d as Payload).createSandbox.sandbox?.status === 'SCHEDULED'),
  };
}

/**
 * Each worker's clients acquire and renew the leases of the sandboxes placed on that worker
 * (so it holds whether or not other workers may acquire them), several clients per sandbox: a
 * renewal can meet a token another client of the worker just replaced (stale), and every
 * REACQUIRE_EVERY-th request re-acquires.
 */
async function leaseScenario(api: Api): Promise<Scenario> {
  const { url } = api;
  const tenantId = await createTenant(api, 'bench-lease');
  const workers: Worker[] = [];
  for (let w = 0; w < LEASE_WORKERS; w++) workers.push(await registerWorker(api, tenantId, `bench-lease-w${w}`));
  const placedOn = new Map<string, string[]>(workers.map((w) => [w.id, []]));
  // The least-loaded worker takes each new sandbox: this spreads them evenly; bounded all the same.
  for (let n = 0; n < 4 * LEASE_WORKERS * LEASE_SANDBOXES_PER_WORKER; n++) {
    if ([...placedOn.values()].every((s) => s.length >= LEASE_SANDBOXES_PER_WORKER)) break;
    const s = await createSandbox(api, tenantId, `lease-${n}`);
    if (s.workerId) placedOn.get(s.workerId)?.push(s.id);
  }
  if ([...placedOn.values()].some((s) => s.length === 0)) throw new Error('lease: a worker got no sandbox');

  const outcomes = { acquired: 0, renewed: 0, stale: 0, conflict: 0, other: 0 };
  type LeaseAnswer = { __typename?: string; lease?: { fencingToken: string }; current?: string | null };
  const loads = workers.map((worker): Omit<Options, 'duration' | 'timeout'> => {
    const sandboxes = placedOn.get(worker.id) ?? [];
    const tokens = new Map<string, string>();
    let n = 0;
    return {
      ...post(url, worker.token, ''),
      connections: LEASE_CLIENTS_PER_WORKER,
      requests: [
        {
          setupRequest: (request, context) => {
            const i = n++;
            const sandboxId = sandboxes[i % sandboxes.length];
            const token = tokens.get(sandboxId);
            const renew = token !== undefined && i % REACQUIRE_EVERY !== 0;
            context.sandboxId = sandboxId;
            context.op = renew ? 'renew' : 'acquire';
            const body = renew
              ? requestBody(RENEW, { i: { sandboxId, fencingToken: token, ttlSeconds: LEASE_TTL_SECONDS } })
              : requestBody(ACQUIRE, { i: { sandboxId, ttlSeconds: LEASE_TTL_SECONDS } });
            return { ...request, body };
          },
          onResponse: (_status, body, context) => {
            const sandboxId = context.sandboxId as string;
            let answer: LeaseAnswer = {};
            try {
              const data = (JSON.parse(body) as { data?: Record<string, LeaseAnswer> }).data ?? {};
              answer = data.acquireLease ?? data.renewLease ?? {};
            } catch {
              // counted as other below
            }
            if (answer.__typename === 'LeasePayload' && answer.lease) {
              tokens.set(sandboxId, answer.lease.fencingToken);
              outcomes[context.op === 'renew' ? 'renewed' : 'acquired'] += 1;
            } else if (answer.__typename === 'StaleFencingTokenError') {
              if (answer.current) tokens.set(sandboxId, answer.current);
              outcomes.stale += 1;
            } else if (answer.__typename === 'LeaseConflictError') {
              tokens.delete(sandboxId);
              outcomes.conflict += 1;
            } else outcomes.other += 1;
          },
        },
      ],
      verifyBody: (b) =>
        b.includes('"__typename":"LeasePayload"') ||
        b.includes('"__typename":"StaleFencingTokenError"') ||
        b.includes('"__typename":"LeaseConflictError"'),
    };
  });
  const [first] = workers;
  const firstSandbox = placedOn.get(first.id)?.[0];
  return {
    name: `acquire/renew: ${LEASE_WORKERS} workers × ${LEASE_CLIENTS_PER_WORKER} clients, ${LEASE_SANDBOXES_PER_WORKER} sandboxes each`,
    connections: LEASE_WORKERS * LEASE_CLIENTS_PER_WORKER,
    floor: 'list page',
    target: targetOf(api),
    loads,
    outcomes,
    failure: () => (outcomes.acquired + outcomes.renewed === 0 ? 'no lease was acquired or renewed' : null),
    check: () =>
      sample(
        url,
        first.token,
        requestBody(ACQUIRE, { i: { sandboxId: firstSandbox, ttlSeconds: LEASE_TTL_SECONDS } }),
        (d) => (d.acquireLease as LeaseAnswer).__typename === 'LeasePayload',
      ),
  };
}

// ---------------------------------------------------------------------------------------------
// Idle

/** The process's CPU time so far in seconds (utime + stime of /proc/<pid>/stat). */
function cpuSeconds(pid: number, ticksPerSecond = CLOCK_TICKS): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

function clockTicksPerSecond(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

interface Idle {
  backlog: number;
  pending: number;
  seconds: number;
  cpuPercentOfOneCore: number;
  statementsPerSecond: number;
  statements: number;
}

/**
 * A fresh server on a fresh database: a tenant with quota whose one worker is drained (no
 * online worker), IDLE_BACKLOG sandboxes PENDING; then, after IDLE_SETTLE_MS, the server's CPU
 * time (/proc) and statements (/metrics) over IDLE_MS with nobody calling it.
 */
async function idle(databaseUrl: string): Promise<Idle> {
  const server = await startServerProcess(databaseUrl, {
    env: { FLOTILLA_HEARTBEAT_TTL_SECONDS: HEARTBEAT_TTL_SECONDS },
  });
  try {
    if (!server.adminToken) throw new Error('a fresh database should print an admin token');
    const api: Api = { url: server.url, token: server.adminToken, pid: server.pid };
    const tenantId = await createTenant(api, 'bench-idle');
    const worker = await registerWorker(api, tenantId, 'bench-idle-w');
    await gql(api.url, api.token, 'mutation($i: WorkerRefInput!) { drainWorker(input: $i) { __typename } }', {
      i: { workerId: worker.id },
    });
    const created = await inParallel(IDLE_BACKLOG, (i) => createSandbox(api, tenantId, `idle-${i}`));
    const pending = created.filter((s) => s.status === 'PENDING').length;
    if (pending !== IDLE_BACKLOG) throw new Error(`idle: ${pending} of ${IDLE_BACKLOG} sandboxes are PENDING`);
    await sleep(IDLE_SETTLE_MS);
    const statementsBefore = (await readMetrics(server.url))(STATEMENTS);
    const cpuBefore = cpuSeconds(server.pid);
    const started = performance.now();
    await sleep(IDLE_MS);
    const cpuAfter = cpuSeconds(server.pid);
    const seconds = (performance.now() - started) / 1000;
    const statements = (await readMetrics(server.url))(STATEMENTS) - statementsBefore;
    const still = await gql<{ sandboxes: { totalCount: number } }>(
      api.url,
      api.token,
      'query($t: ID!) { sandboxes(tenantId: $t, first: 1, filter: { status: [PENDING] }) { totalCount } }',
      { t: tenantId },
    );
    return {
      backlog: IDLE_BACKLOG,
      pending: still.sandboxes.totalCount,
      seconds: round(seconds),
      cpuPercentOfOneCore: round(((cpuAfter - cpuBefore) / seconds) * 100),
      statementsPerSecond: round(statements / seconds),
      statements,
    };
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// A driver's run

async function benchDriver(
  driver: Driver,
  floor: Floor,
  newDatabase: () => Promise<string>,
): Promise<{ stats: Stats[]; idle: Idle | null }> {
  const server: ServerProcess = await startServerProcess(await newDatabase(), {
    env: { FLOTILLA_HEARTBEAT_TTL_SECONDS: HEARTBEAT_TTL_SECONDS },
  });
  const stats: Stats[] = [];
  try {
    if (!server.adminToken) throw new Error('a fresh database should print an admin token');
    const api: Api = { url: server.url, token: server.adminToken, pid: server.pid };
    progress(`${driver}: seeding…`);
    const scenarios = [
      ...(await listScenarios(api)),
      ...(await chatScenarios(api)),
      await createScenario(api),
      await leaseScenario(api),
    ];
    progress(`${driver}: measuring…`);
    // The floor right before the server's scenarios, on the same machine at about the same load.
    for (const scenario of [...floorScenarios(floor), ...scenarios.filter((s) => wanted(s.name))])
      stats.push(await measure(scenario));
  } finally {
    await server.stop();
  }
  let idleResult: Idle | null = null;
  if (wanted('idle')) {
    progress(`${driver}: idle with ${IDLE_BACKLOG} unplaceable sandboxes…`);
    idleResult = await idle(await newDatabase());
  }
  const floorRate = (shape: FloorShape) => stats.find((s) => s.scenario.startsWith('floor:') && s.floor === shape);
  for (const s of stats) {
    const f = floorRate(s.floor);
    // Two significant digits: a ratio far below 1 still reads as a number, not 0.
    s.ratioToFloor = s.ok && f?.ok && f.reqPerSec > 0 ? Number((s.reqPerSec / f.reqPerSec).toPrecision(2)) : null;
  }
  return { stats, idle: idleResult };
}

function table(title: string, stats: Stats[], idleResult: Idle | null): string {
  const rows = stats.map((s) => {
    const ratio = s.ratioToFloor === null ? '—' : `${s.ratioToFloor}× (${s.floor})`;
    const status = s.ok ? 'ok' : `FAILED: ${s.failure}`;
    const cell = (x: number | null) => (x === null ? '—' : String(x));
    return `| ${s.scenario} | ${s.connections} | ${s.ok ? s.reqPerSec : '—'} | ${s.p50Ms} | ${s.p99Ms} | ${s.errors} | ${cell(s.serverCpuMsPerRequest)} | ${cell(s.statementsPerRequest)} | ${ratio} | ${status} |`;
  });
  const lines = [
    `### ${title}`,
    '',
    '| scenario | connections | req/s | p50 ms | p99 ms | errors | server CPU ms/request | statements/request | ratio to floor | status |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |',
    ...rows,
    '',
  ];
  if (idleResult)
    lines.push(
      `Idle, ${idleResult.backlog} sandboxes PENDING with no online worker (${idleResult.pending} still PENDING after), over ${idleResult.seconds} s: **${idleResult.cpuPercentOfOneCore}% of one core, ${idleResult.statementsPerSecond} statements/s** (${idleResult.statements} statements).`,
      '',
    );
  return lines.join('\n');
}

const drivers = (process.argv[2] ? [process.argv[2]] : ['sqlite', 'postgres']) as Driver[];
for (const d of drivers)
  if (d !== 'sqlite' && d !== 'postgres') throw new Error('usage: bench/run.ts [sqlite|postgres]');
mkdirSync('bench/results', { recursive: true });
const build = serverBuild();
if (build !== 'dist') console.error(`warning: the server runs from ${build}`);
const floor = await startFloor();
try {
  for (const driver of drivers) {
    const postgres = driver === 'postgres' ? await startTestPostgres() : null;
    const created: string[] = [];
    const newDatabase = async () => {
      const url = postgres
        ? await postgres.createDatabase()
        : `sqlite:${join(tempDir('flotilla-bench-db-'), 'bench.db')}`;
      created.push(url);
      return url;
    };
    try {
      const loadAtStart = round(loadavg()[0]);
      const { stats, idle: idleResult } = await benchDriver(driver, floor, newDatabase);
      // The machine is shared: record how busy it was, since that moves every number.
      const meta = {
        kind: driver,
        at: new Date().toISOString(),
        command: `npm run bench -- ${driver}`,
        durationMs: DURATION_MS,
        warmupMs: WARMUP_MS,
        idleMs: IDLE_MS,
        only: ONLY,
        node: process.version,
        cpus: cpus().length,
        loadAverage1m: loadAtStart,
        loadAverage1mAtEnd: round(loadavg()[0]),
        server: `flotilla serve (${build}), its own process; floor: bench/floor-server.ts, its own process; client: autocannon in a third`,
        rateLimitPerMinute: Number(RATE_LIMIT_PER_MINUTE),
        machine: await describeMachine(postgres ? created[0] : undefined),
      };
      writeFileSync(
        `bench/results/${driver}.json`,
        `${JSON.stringify({ ...meta, stats, idle: idleResult }, null, 2)}\n`,
      );
      console.log(
        table(
          `${driver} (load average ${meta.loadAverage1m} → ${meta.loadAverage1mAtEnd} on ${meta.cpus} CPUs)`,
          stats,
          idleResult,
        ),
      );
    } finally {
      if (postgres) await dropDatabases(postgres.adminUrl, created);
      await postgres?.stop();
    }
  }
} finally {
  floor.stop();
}

/** Drops the databases a run created on the Postgres server (a DATABASE_URL server outlives the run). */
async function dropDatabases(adminUrl: string, urls: string[]): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    for (const url of urls) {
      const name = new URL(url).pathname.slice(1);
      if (/^\w+$/.test(name)) await client.query(`drop database if exists ${name} with (force)`);
    }
  } finally {
    await client.end();
  }
}
