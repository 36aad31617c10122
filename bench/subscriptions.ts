/**
 * Subscription benchmarks: the server runs as a child process (`flotilla serve`), so its memory
 * is read from its own /metrics and the client's work does not count against it.
 *
 *   fan-out     10,000 graphql-ws subscribers of one tenant (tenantEvents), then one event:
 *               per-subscriber delivery latency p50/p99 and time until the last has it.
 *   memory      server RSS and heap growth per idle subscription.
 *   sustained   events appended as fast as mutations go, delivered to 1,000 subscribers:
 *               events/s produced and deliveries/s.
 *   replicas    (Postgres only) two server processes on one database: mutation on A, subscriber
 *               on B; latency p50/p99 over a few hundred events.
 *
 * Usage: npm run bench:subscriptions [-- sqlite|postgres]   (default: postgres)
 * Writes bench/results/subscriptions-<driver>.json and prints a Markdown summary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { tempDir } from '../test/helpers/databases.js';
import { startTestPostgres } from '../test/helpers/postgres.js';
import { describeMachine } from './machine.js';

type Driver = 'sqlite' | 'postgres';

/** Subscribers of the fan-out scenario, and how many share one WebSocket (graphql-ws multiplexes). */
const FANOUT_SUBSCRIBERS = Number(process.env.BENCH_FANOUT_SUBSCRIBERS ?? 10_000);
const SUBSCRIPTIONS_PER_SOCKET = Number(process.env.BENCH_SUBSCRIPTIONS_PER_SOCKET ?? 100);
/** Events fired one at a time at the full fan-out, each waited for by every subscriber. */
const FANOUT_ROUNDS = Number(process.env.BENCH_FANOUT_ROUNDS ?? 5);
/** Subscribers and duration of the sustained scenario; producers = mutations in flight. */
const SUSTAINED_SUBSCRIBERS = Number(process.env.BENCH_SUSTAINED_SUBSCRIBERS ?? 1_000);
const SUSTAINED_DURATION_MS = Number(process.env.BENCH_SUSTAINED_DURATION_MS ?? 15_000);
const SUSTAINED_PRODUCERS = Number(process.env.BENCH_SUSTAINED_PRODUCERS ?? 8);
/** Events of the cross-replica scenario, sent one at a time. */
const REPLICA_EVENTS = Number(process.env.BENCH_REPLICA_EVENTS ?? 300);
/** Subscriptions started at once while subscribing, so the server is not handed 10,000 at a time. */
const SUBSCRIBE_BATCH = 500;
/** Memory is read at this share of the subscribers and at all of them. */
const FIRST_STEP_SHARE = 0.1;
/** Bounds on every wait, so a run always ends (the whole run stays within ~5 minutes). */
const WAIT_SUBSCRIBED_MS = 120_000;
const WAIT_DELIVERED_MS = 60_000;
const SERVER_START_MS = 60_000;
/** Memory is sampled a few times after things settle; the median damps GC noise. */
const MEMORY_SAMPLES = 5;
const MEMORY_SAMPLE_GAP_MS = 1_000;
const SETTLE_MS = 3_000;
/** High enough that 10,000 subscribes plus the mutations never hit the per-token limit. */
const RATE_LIMIT_PER_MINUTE = '1000000';

const EVENTS_SUBSCRIPTION = `subscription($t: ID!) { tenantEvents(tenantId: $t, types: [MESSAGE_POSTED]) { cursor occurredAt } }`;
const SEND = `mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename } }`;

/**
 * Node flags for the server process: a full GC on SIGUSR2 (bench only, the server's code is
 * untouched), so memory is read without garbage that V8 has not collected yet.
 */
const GC_ON_SIGNAL = ['--expose-gc', '--import', `data:text/javascript,process.on('SIGUSR2', () => globalThis.gc())`];
/** Time for the collection to finish before /metrics is read. */
const GC_PAUSE_MS = 500;

interface ServerProcess {
  child: ChildProcess;
  url: string;
  adminToken: string | null;
  stop(): Promise<void>;
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('FLOTILLA_')) env[k] = v;
  return { ...env, ...extra };
}

/** Starts `flotilla serve` on loopback; resolves with its URL and, on a fresh database, the admin token it printed. */
function startServer(databaseUrl: string): Promise<ServerProcess> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [...GC_ON_SIGNAL, resolve('bin/flotilla.js'), 'serve'], {
      env: cleanEnv({
        FLOTILLA_DATABASE_URL: databaseUrl,
        FLOTILLA_PORT: '0',
        FLOTILLA_HOST: '127.0.0.1',
        FLOTILLA_DATA_DIR: tempDir('flotilla-bench-'),
        FLOTILLA_LOG_LEVEL: 'warn',
        FLOTILLA_RATE_LIMIT_PER_MINUTE: RATE_LIMIT_PER_MINUTE,
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let stopping = false;
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), SERVER_START_MS);
    const onData = (d: Buffer) => {
      out += d.toString();
      const url = /serving GraphiQL at (http:\/\/\S+)/.exec(out)?.[1];
      // The token line follows the URL line when one was minted; the last line says so either way.
      const done = /Bearer (\S+)"\}/.exec(out) ?? /Authenticate with a token/.exec(out);
      if (url && done) {
        clearTimeout(timer);
        const token = /Bearer ([^"\s]+)"/.exec(out)?.[1] ?? null;
        resolvePromise({
          child,
          url,
          adminToken: token,
          stop: () =>
            new Promise<void>((r) => {
              if (child.exitCode !== null) return r();
              stopping = true;
              child.once('exit', () => r());
              child.kill('SIGTERM');
            }),
        });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // Its last output (warnings and errors only, at log level warn) says why it died mid-run.
      if (!stopping) console.error(`server exited (code ${code}, signal ${signal}): ${out.slice(-2000)}`);
      reject(new Error(`server exited with ${code}: ${out}`));
    });
  });
}

async function gql<T>(url: string, token: string, query: string, variables: Record<string, unknown>): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: T; errors?: unknown[] };
  if (!res.ok || body.errors || !body.data) throw new Error(JSON.stringify(body.errors ?? res.status));
  return body.data;
}

/** One tenant with one worker and one sandbox: sendMessage on it appends exactly one MESSAGE_POSTED. */
async function seed(url: string, token: string): Promise<{ tenantId: string; sandboxId: string }> {
  const slug = `bench-${Date.now().toString(36)}`;
  const big = { maxSandboxes: 1_000, maxCpuMillis: 1_000_000, maxMemoryMb: 1_000_000 };
  const t = await gql<{ createTenant: { tenant?: { id: string } } }>(
    url,
    token,
    'mutation($i: CreateTenantInput!) { createTenant(input: $i) { ... on CreateTenantPayload { tenant { id } } } }',
    { i: { slug, name: slug, quota: big } },
  );
  const tenantId = t.createTenant.tenant?.id;
  if (!tenantId) throw new Error('createTenant failed');
  await gql(url, token, 'mutation($i: RegisterWorkerInput!) { registerWorker(input: $i) { __typename } }', {
    i: { name: `${slug}-w`, tenantId, capacity: { cpuMillis: 100_000, memoryMb: 100_000 } },
  });
  return { tenantId, sandboxId: await createSandbox(url, token, tenantId, 'bench') };
}

async function createSandbox(url: string, token: string, tenantId: string, name: string): Promise<string> {
  const s = await gql<{ createSandbox: { __typename: string; sandbox?: { id: string } } }>(
    url,
    token,
    'mutation($i: CreateSandboxInput!) { createSandbox(input: $i) { __typename ... on SandboxPayload { sandbox { id } } } }',
    {
      i: {
        tenantId,
        name,
        image: 'ghcr.io/acme/agent:1',
        command: ['agent'],
        resources: { cpuMillis: 100, memoryMb: 100 },
      },
    },
  );
  const sandboxId = s.createSandbox.sandbox?.id;
  if (!sandboxId) throw new Error(`createSandbox: ${s.createSandbox.__typename}`);
  return sandboxId;
}

async function send(url: string, token: string, sandboxId: string, body: string): Promise<boolean> {
  const data = await gql<{ sendMessage: { __typename: string } }>(url, token, SEND, { i: { sandboxId, body } });
  return data.sendMessage.__typename === 'MessagePayload';
}

/** GETs a URL, retrying a reset (a kept-alive socket the busy server closed just as it was reused). */
async function fetchText(url: URL, attempts = 3): Promise<string> {
  for (let i = 1; ; i++) {
    try {
      return await (await fetch(url)).text();
    } catch (err) {
      if (i >= attempts) throw err;
      await sleep(200);
    }
  }
}

/** Reads a few figures of the server process from its Prometheus endpoint. */
async function scrape(graphqlUrl: string): Promise<{
  rss: number;
  heapUsed: number;
  subscribers: number;
  closedSlow: number;
  sockets: number;
  cpuSeconds: number;
}> {
  const text = await fetchText(new URL('/metrics', graphqlUrl));
  const value = (name: string): number => {
    const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
    return match ? Number(match[1]) : NaN;
  };
  return {
    rss: value('flotilla_process_resident_memory_bytes'),
    heapUsed: value('flotilla_nodejs_heap_size_used_bytes'),
    subscribers: value('flotilla_event_subscribers'),
    closedSlow: value('flotilla_event_subscribers_closed_slow'),
    sockets: value('flotilla_websocket_connections'),
    cpuSeconds: value('flotilla_process_cpu_seconds_total'),
  };
}

/** The median of a few samples, each after a forced full GC of the server process. */
async function memory(server: ServerProcess): Promise<{ rss: number; heapUsed: number }> {
  const graphqlUrl = server.url;
  await sleep(SETTLE_MS);
  const samples: { rss: number; heapUsed: number }[] = [];
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    server.child.kill('SIGUSR2');
    await sleep(GC_PAUSE_MS);
    samples.push(await scrape(graphqlUrl));
    await sleep(MEMORY_SAMPLE_GAP_MS);
  }
  return { rss: median(samples.map((s) => s.rss)), heapUsed: median(samples.map((s) => s.heapUsed)) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

function percentiles(latencies: number[]): { p50Ms: number; p99Ms: number; maxMs: number; count: number } {
  const sorted = [...latencies].sort((a, b) => a - b);
  const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
  return { p50Ms: round(pct(0.5)), p99Ms: round(pct(0.99)), maxMs: round(sorted.at(-1) ?? NaN), count: sorted.length };
}

/** Polls until a condition holds or the time is up; returns whether it held. */
async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await sleep(stepMs);
  }
  return condition();
}

/** Opens sockets (graphql-ws clients) that have completed connection_init. */
async function openSockets(url: string, token: string, count: number): Promise<Client[]> {
  const clients: Client[] = [];
  await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<void>((ok, fail) => {
          const client = createClient({
            url: url.replace(/^http/, 'ws'),
            webSocketImpl: WebSocket,
            connectionParams: { authorization: `Bearer ${token}` },
            retryAttempts: 0,
            lazy: false,
            // The benchmark measures delivery, not keep-alive: no pings.
            keepAlive: 0,
            onNonLazyError: (err) => fail(err instanceof Error ? err : new Error(String(err))),
          });
          client.on('connected', () => ok());
          clients.push(client);
        }),
    ),
  );
  return clients;
}

interface Subscribers {
  /** Called with the arrival time of every event, by subscriber index. */
  onEvent: (fn: (index: number, at: number) => void) => void;
  errors: () => number;
  dispose(): void;
}

/** Starts tenantEvents subscriptions `from` to `count` (indexes) spread over the sockets, in batches. */
async function subscribe(clients: Client[], tenantId: string, count: number, from = 0): Promise<Subscribers> {
  let handler: (index: number, at: number) => void = () => undefined;
  let errors = 0;
  const unsubscribes: (() => void)[] = [];
  for (let start = from; start < count; start += SUBSCRIBE_BATCH) {
    for (let i = start; i < Math.min(count, start + SUBSCRIBE_BATCH); i++) {
      const client = clients[Math.floor(i / SUBSCRIPTIONS_PER_SOCKET) % clients.length];
      unsubscribes.push(
        client.subscribe(
          { query: EVENTS_SUBSCRIPTION, variables: { t: tenantId } },
          {
            next: () => handler(i, performance.now()),
            error: () => {
              errors += 1;
            },
            complete: () => undefined,
          },
        ),
      );
    }
    // Let the sockets flush this batch before queuing the next.
    await sleep(0);
  }
  return {
    onEvent: (fn) => {
      handler = fn;
    },
    errors: () => errors,
    dispose: () => {
      for (const u of unsubscribes) u();
    },
  };
}

async function fanOutAndMemory(server: ServerProcess, token: string) {
  const url = server.url;
  const { tenantId, sandboxId } = await seed(url, token);
  // Warm up the mutation and a subscription, so first-use costs (compiled code, caches) stay out of the deltas.
  await send(url, token, sandboxId, 'warm-up');
  const sockets = Math.ceil(FANOUT_SUBSCRIBERS / SUBSCRIPTIONS_PER_SOCKET);
  const baseline = await memory(server);
  const clients = await openSockets(url, token, sockets);
  const withSockets = await memory(server);

  // Memory per subscription is the slope between a first tenth and all of them: fixed costs cancel out.
  const firstStep = Math.floor(FANOUT_SUBSCRIBERS * FIRST_STEP_SHARE);
  const opened = async (n: number) => {
    if (!(await until(async () => (await scrape(url)).subscribers >= n, WAIT_SUBSCRIBED_MS, 200))) {
      throw new Error(`only ${(await scrape(url)).subscribers} of ${n} subscriptions opened`);
    }
  };
  const first = await subscribe(clients, tenantId, firstStep);
  await opened(firstStep);
  const atFirstStep = await memory(server);
  const subscribeStarted = performance.now();
  const rest = await subscribe(clients, tenantId, FANOUT_SUBSCRIBERS, firstStep);
  await opened(FANOUT_SUBSCRIBERS);
  const subscribeSeconds = (performance.now() - subscribeStarted) / 1000;
  const idle = await memory(server);
  const subs: Subscribers = {
    onEvent: (fn) => {
      first.onEvent(fn);
      rest.onEvent(fn);
    },
    errors: () => first.errors() + rest.errors(),
    dispose: () => {
      first.dispose();
      rest.dispose();
    },
  };

  const rounds: {
    mutationMs: number;
    lastMs: number;
    p50Ms: number;
    p99Ms: number;
    delivered: number;
    serverCpuMs: number;
  }[] = [];
  const all: number[] = [];
  for (let n = 0; n < FANOUT_ROUNDS; n++) {
    const cpuBefore = (await scrape(url)).cpuSeconds;
    const arrivals = new Float64Array(FANOUT_SUBSCRIBERS).fill(NaN);
    let delivered = 0;
    subs.onEvent((i, at) => {
      if (Number.isNaN(arrivals[i])) {
        arrivals[i] = at;
        delivered += 1;
      }
    });
    const t0 = performance.now();
    if (!(await send(url, token, sandboxId, `fan-out ${n}`))) throw new Error('sendMessage failed');
    const mutationMs = performance.now() - t0;
    await until(() => delivered >= FANOUT_SUBSCRIBERS, WAIT_DELIVERED_MS, 5);
    const latencies = Array.from(arrivals)
      .filter((a) => !Number.isNaN(a))
      .map((a) => a - t0);
    all.push(...latencies);
    const p = percentiles(latencies);
    // The server's own CPU time for this event (the client shares the machine; this says which side is busy).
    const serverCpuMs = ((await scrape(url)).cpuSeconds - cpuBefore) * 1000;
    rounds.push({
      mutationMs: round2(mutationMs),
      lastMs: p.maxMs,
      p50Ms: p.p50Ms,
      p99Ms: p.p99Ms,
      delivered,
      serverCpuMs: round(serverCpuMs, 0),
    });
    await sleep(1_000);
  }
  const after = await scrape(url);
  subs.dispose();
  await Promise.all(clients.map((c) => c.dispose()));

  const perSub = (a: number, b: number) => round((a - b) / (FANOUT_SUBSCRIBERS - firstStep), 0);
  return {
    fanOut: {
      subscribers: FANOUT_SUBSCRIBERS,
      sockets,
      subscriptionsPerSocket: SUBSCRIPTIONS_PER_SOCKET,
      subscribeSeconds: round(subscribeSeconds),
      subscribedInThatTime: FANOUT_SUBSCRIBERS - firstStep,
      rounds,
      overall: percentiles(all),
      subscriptionErrors: subs.errors(),
      closedSlow: after.closedSlow,
    },
    memory: {
      baseline,
      withSockets,
      firstStep: { subscriptions: firstStep, ...atFirstStep },
      idle,
      rssBytesPerSubscription: perSub(idle.rss, atFirstStep.rss),
      heapBytesPerSubscription: perSub(idle.heapUsed, atFirstStep.heapUsed),
      rssBytesPerSocket: round((withSockets.rss - baseline.rss) / sockets, 0),
    },
  };
}

const round2 = (x: number) => round(x, 2);

async function sustained(url: string, token: string) {
  const { tenantId } = await seed(url, token);
  // One sandbox per producer: sendMessage locks its sandbox's row, and one row would serialise them all.
  const sandboxes: string[] = [];
  for (let p = 0; p < SUSTAINED_PRODUCERS; p++)
    sandboxes.push(await createSandbox(url, token, tenantId, `sustained-${p}`));
  const clients = await openSockets(url, token, Math.ceil(SUSTAINED_SUBSCRIBERS / SUBSCRIPTIONS_PER_SOCKET));
  const subs = await subscribe(clients, tenantId, SUSTAINED_SUBSCRIBERS);
  if (!(await until(async () => (await scrape(url)).subscribers >= SUSTAINED_SUBSCRIBERS, WAIT_SUBSCRIBED_MS, 200))) {
    throw new Error('sustained: subscriptions did not open');
  }
  let deliveries = 0;
  let lastDelivery = 0;
  subs.onEvent((_i, at) => {
    deliveries += 1;
    lastDelivery = at;
  });
  let produced = 0;
  let failed = 0;
  const cpuBefore = (await scrape(url)).cpuSeconds;
  const started = performance.now();
  const deadline = started + SUSTAINED_DURATION_MS;
  await Promise.all(
    Array.from({ length: SUSTAINED_PRODUCERS }, async (_, p) => {
      for (let n = 0; performance.now() < deadline; n++) {
        const ok = await send(url, token, sandboxes[p], `p${p} n${n}`).catch(() => false);
        if (ok) produced += 1;
        else failed += 1;
      }
    }),
  );
  const producedFor = (performance.now() - started) / 1000;
  const deliveredDuringProduction = deliveries;
  const expected = produced * SUSTAINED_SUBSCRIBERS;
  const drained = await until(() => deliveries >= expected || subs.errors() > 0, WAIT_DELIVERED_MS, 20);
  const after = await scrape(url);
  const serverCpuSeconds = after.cpuSeconds - cpuBefore;
  subs.dispose();
  await Promise.all(clients.map((c) => c.dispose()));
  const deliveredFor = (lastDelivery - started) / 1000;
  return {
    subscribers: SUSTAINED_SUBSCRIBERS,
    producers: SUSTAINED_PRODUCERS,
    durationMs: SUSTAINED_DURATION_MS,
    eventsProduced: produced,
    mutationsFailed: failed,
    eventsPerSecond: round(produced / producedFor, 2),
    deliveries,
    expectedDeliveries: expected,
    allDelivered: drained && deliveries >= expected,
    deliveriesPerSecond: round(deliveries / deliveredFor, 0),
    deliveriesPerSecondWhileProducing: round(deliveredDuringProduction / producedFor, 0),
    drainSecondsAfterLastMutation: round(deliveredFor - producedFor),
    subscriptionErrors: subs.errors(),
    closedSlow: after.closedSlow,
    serverCpuSeconds: round(serverCpuSeconds),
    serverCpuMsPerDelivery: round((serverCpuSeconds * 1000) / Math.max(1, deliveries), 3),
  };
}

/** Mutation on A, one subscriber on A (reference) and one on B; events sent one at a time. */
async function crossReplica(a: ServerProcess, b: ServerProcess, token: string) {
  const { tenantId, sandboxId } = await seed(a.url, token);
  const [onA] = await openSockets(a.url, token, 1);
  const [onB] = await openSockets(b.url, token, 1);
  const subA = await subscribe([onA], tenantId, 1);
  const subB = await subscribe([onB], tenantId, 1);
  await until(
    async () => (await scrape(a.url)).subscribers >= 1 && (await scrape(b.url)).subscribers >= 1,
    WAIT_SUBSCRIBED_MS,
    100,
  );
  let gotA = 0;
  let gotB = 0;
  subA.onEvent((_i, at) => {
    gotA = at;
  });
  subB.onEvent((_i, at) => {
    gotB = at;
  });
  const fromSendA: number[] = [];
  const fromSendB: number[] = [];
  const fromResponseB: number[] = [];
  const mutation: number[] = [];
  let missed = 0;
  for (let n = 0; n < REPLICA_EVENTS; n++) {
    gotA = 0;
    gotB = 0;
    const t0 = performance.now();
    if (!(await send(a.url, token, sandboxId, `x${n}`))) throw new Error('sendMessage failed');
    const t1 = performance.now();
    if (!(await until(() => gotA > 0 && gotB > 0, 10_000, 1))) {
      missed += 1;
      continue;
    }
    mutation.push(t1 - t0);
    fromSendA.push(gotA - t0);
    fromSendB.push(gotB - t0);
    // Commit happens before the response is written, so this is a lower bound (it can be negative).
    fromResponseB.push(gotB - t1);
  }
  subA.dispose();
  subB.dispose();
  await Promise.all([onA.dispose(), onB.dispose()]);
  return {
    events: REPLICA_EVENTS,
    missed,
    mutationRoundTrip: percentiles(mutation),
    sameReplicaFromSend: percentiles(fromSendA),
    otherReplicaFromSend: percentiles(fromSendB),
    otherReplicaFromResponse: percentiles(fromResponseB),
  };
}

function mb(bytes: number): string {
  return `${round(bytes / 1024 / 1024, 1)} MiB`;
}

const driver = (process.argv[2] ?? 'postgres') as Driver;
if (driver !== 'sqlite' && driver !== 'postgres') throw new Error('usage: bench/subscriptions.ts [sqlite|postgres]');
mkdirSync('bench/results', { recursive: true });
const pg = driver === 'postgres' ? await startTestPostgres() : null;
const servers: ServerProcess[] = [];
try {
  const databaseUrl = pg ? await pg.createDatabase() : `sqlite:${join(tempDir('flotilla-bench-db-'), 'bench.db')}`;
  const a = await startServer(databaseUrl);
  servers.push(a);
  const token = a.adminToken;
  if (!token) throw new Error('a fresh database should print an admin token');
  const loadAtStart = round(loadavg()[0]);

  console.error(
    `fan-out: ${FANOUT_SUBSCRIBERS} subscribers over ${Math.ceil(FANOUT_SUBSCRIBERS / SUBSCRIPTIONS_PER_SOCKET)} sockets…`,
  );
  const fan = await fanOutAndMemory(a, token);
  console.error('sustained…');
  const sus = await sustained(a.url, token);
  let replicas: Awaited<ReturnType<typeof crossReplica>> | null = null;
  if (driver === 'postgres') {
    console.error('replicas…');
    const b = await startServer(databaseUrl);
    servers.push(b);
    replicas = await crossReplica(a, b, token);
  }

  const meta = {
    driver,
    at: new Date().toISOString(),
    command: `npm run bench:subscriptions -- ${driver}`,
    machine: await describeMachine(pg ? databaseUrl : undefined),
    loadAverage1mAtStart: loadAtStart,
    loadAverage1mAtEnd: round(loadavg()[0]),
    rateLimitPerMinute: Number(RATE_LIMIT_PER_MINUTE),
  };
  const result = { ...meta, fanOut: fan.fanOut, memory: fan.memory, sustained: sus, replicas };
  writeFileSync(`bench/results/subscriptions-${driver}.json`, `${JSON.stringify(result, null, 2)}\n`);

  const f = fan.fanOut;
  const lines = [
    `### subscriptions, ${driver} (load average ${meta.loadAverage1mAtStart} → ${meta.loadAverage1mAtEnd} on ${meta.machine.cpus} CPUs)`,
    '',
    `Fan-out: ${f.subscribers} tenantEvents subscribers on ${f.sockets} sockets (${f.subscriptionsPerSocket} each; the last ${f.subscribedInThatTime} opened in ${f.subscribeSeconds} s); one sendMessage per round, latency from sending the mutation to each subscriber's arrival.`,
    '',
    '| round | mutation ms | p50 ms | p99 ms | last ms | delivered | server CPU ms |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...f.rounds.map(
      (r, i) =>
        `| ${i + 1} | ${r.mutationMs} | ${r.p50Ms} | ${r.p99Ms} | ${r.lastMs} | ${r.delivered} | ${r.serverCpuMs} |`,
    ),
    `| all | | ${f.overall.p50Ms} | ${f.overall.p99Ms} | ${f.overall.maxMs} | ${f.overall.count} | |`,
    '',
    `Memory (server process, median of ${MEMORY_SAMPLES} scrapes of /metrics, each after a forced full GC): baseline RSS ${mb(fan.memory.baseline.rss)} / heap ${mb(fan.memory.baseline.heapUsed)}; ` +
      `with ${f.sockets} idle sockets RSS ${mb(fan.memory.withSockets.rss)}; with ${fan.memory.firstStep.subscriptions} idle subscriptions RSS ${mb(fan.memory.firstStep.rss)} / heap ${mb(fan.memory.firstStep.heapUsed)}; with ${f.subscribers} RSS ${mb(fan.memory.idle.rss)} / heap ${mb(fan.memory.idle.heapUsed)} → slope ` +
      `**${fan.memory.rssBytesPerSubscription} B RSS, ${fan.memory.heapBytesPerSubscription} B heap per subscription** (${fan.memory.rssBytesPerSocket} B RSS per socket).`,
    '',
    `Sustained: ${sus.subscribers} subscribers, ${sus.producers} sendMessage in flight (one sandbox each) for ${sus.durationMs / 1000} s: **${sus.eventsPerSecond} events/s produced, ${sus.deliveriesPerSecond} deliveries/s** ` +
      `(${sus.deliveries}/${sus.expectedDeliveries} delivered, drained ${sus.drainSecondsAfterLastMutation} s after the last mutation, ${sus.closedSlow} closed as too slow, ${sus.mutationsFailed} mutations failed; server CPU ${sus.serverCpuMsPerDelivery} ms per delivery).`,
  ];
  if (replicas) {
    lines.push(
      '',
      `Cross-replica: ${replicas.events} sendMessage on A one at a time, one subscriber on A and one on B (${replicas.missed} missed).`,
      '',
      '| latency | p50 ms | p99 ms | max ms |',
      '| --- | ---: | ---: | ---: |',
      `| mutation round trip on A | ${replicas.mutationRoundTrip.p50Ms} | ${replicas.mutationRoundTrip.p99Ms} | ${replicas.mutationRoundTrip.maxMs} |`,
      `| send → subscriber on A (same replica) | ${replicas.sameReplicaFromSend.p50Ms} | ${replicas.sameReplicaFromSend.p99Ms} | ${replicas.sameReplicaFromSend.maxMs} |`,
      `| send → subscriber on B (other replica) | ${replicas.otherReplicaFromSend.p50Ms} | ${replicas.otherReplicaFromSend.p99Ms} | ${replicas.otherReplicaFromSend.maxMs} |`,
      `| response → subscriber on B | ${replicas.otherReplicaFromResponse.p50Ms} | ${replicas.otherReplicaFromResponse.p99Ms} | ${replicas.otherReplicaFromResponse.maxMs} |`,
    );
  }
  console.log(`${lines.join('\n')}\n`);
} finally {
  for (const s of servers) await s.stop();
  await pg?.stop();
}
