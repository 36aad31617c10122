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
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { tempDir } from '../test/helpers/databases.js';
import { startTestPostgres } from '../test/helpers/postgres.js';
import { gql, readMetrics, sleep } from './http.js';
import { describeMachine } from './machine.js';
import { RATE_LIMIT_PER_MINUTE, type ServerProcess, startServerProcess } from './server-process.js';

type Driver = 'sqlite' | 'postgres';

/** Subscriber counts of the fan-out scenario, and how many share one WebSocket (graphql-ws multiplexes). */
const FANOUT_SIZES = (process.env.BENCH_FANOUT_SIZES ?? '1000,10000').split(',').map(Number);
const SUBSCRIPTIONS_PER_SOCKET = Number(process.env.BENCH_SUBSCRIPTIONS_PER_SOCKET ?? 100);
/** Events fired one at a time at each size, each waited for by every subscriber (the first is a warm-up). */
const FANOUT_ROUNDS = Number(process.env.BENCH_FANOUT_ROUNDS ?? 4);
/** Further rounds with the latency probe querying meanwhile (kept apart: the probe costs server CPU too). */
const PROBE_ROUNDS = Number(process.env.BENCH_PROBE_ROUNDS ?? 2);
/** Subscribers and duration of the sustained scenario; producers = mutations in flight. */
const SUSTAINED_SUBSCRIBERS = Number(process.env.BENCH_SUSTAINED_SUBSCRIBERS ?? 1_000);
const SUSTAINED_DURATION_MS = Number(process.env.BENCH_SUSTAINED_DURATION_MS ?? 15_000);
const SUSTAINED_PRODUCERS = Number(process.env.BENCH_SUSTAINED_PRODUCERS ?? 8);
/** Events of the cross-replica scenario, sent one at a time. */
const REPLICA_EVENTS = Number(process.env.BENCH_REPLICA_EVENTS ?? 300);
/** Subscriptions started at once while subscribing, so the server is not handed 10,000 at a time. */
const SUBSCRIBE_BATCH = 500;
/** Bounds on every wait, so a run always ends (the whole run stays within ~5 minutes). */
const WAIT_SUBSCRIBED_MS = 120_000;
const WAIT_DELIVERED_MS = 60_000;
/** Memory is sampled a few times after things settle; the median damps GC noise. */
const MEMORY_SAMPLES = 5;
const MEMORY_SAMPLE_GAP_MS = 1_000;
const SETTLE_MS = 3_000;
/** The whole fan-out is one token on many sockets: lift the per-token and per-socket caps out of the way. */
const STREAM_CAP = '100000';

/** The two selections the fan-out issue names: scalars only, and what a dashboard shows. */
const SELECTIONS = {
  scalar: 'subscription($t: ID!) { tenantEvents(tenantId: $t, types: [MESSAGE_POSTED]) { cursor occurredAt } }',
  dashboard: `subscription($t: ID!) { tenantEvents(tenantId: $t, types: [MESSAGE_POSTED]) {
    cursor type occurredAt
    sandbox { id name status agent { phase activity } worker { id name } }
    message { id body senderKind }
  } }`,
};
const EVENTS_SUBSCRIPTION = SELECTIONS.scalar;
const SEND = `mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename } }`;

/**
 * Node flags for the server process: a full GC on SIGUSR2 (bench only, the server's code is
 * untouched), so memory is read without garbage that V8 has not collected yet.
 */
const GC_ON_SIGNAL = ['--expose-gc', '--import', `data:text/javascript,process.on('SIGUSR2', () => globalThis.gc())`];
/** Time for the collection to finish before /metrics is read. */
const GC_PAUSE_MS = 500;

/** Starts `flotilla serve` with a full GC on SIGUSR2 (see GC_ON_SIGNAL). */
function startServer(databaseUrl: string): Promise<ServerProcess> {
  return startServerProcess(databaseUrl, {
    nodeFlags: GC_ON_SIGNAL,
    env: {
      FLOTILLA_MAX_SOCKETS_PER_TOKEN: STREAM_CAP,
      FLOTILLA_MAX_SUBSCRIPTIONS_PER_SOCKET: STREAM_CAP,
      FLOTILLA_MAX_SSE_STREAMS_PER_TOKEN: STREAM_CAP,
    },
  });
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

/** Reads a few figures of the server process from its Prometheus endpoint. */
async function scrape(graphqlUrl: string): Promise<{
  rss: number;
  heapUsed: number;
  subscribers: number;
  closedSlow: number;
  sockets: number;
  cpuSeconds: number;
  statements: number;
  executions: number;
  eventLoopLagMaxMs: number;
  eventLoopLagP99Ms: number;
}> {
  const value = await readMetrics(graphqlUrl);
  return {
    rss: value('flotilla_process_resident_memory_bytes'),
    heapUsed: value('flotilla_nodejs_heap_size_used_bytes'),
    subscribers: value('flotilla_event_subscribers'),
    closedSlow: value('flotilla_event_subscribers_closed_slow'),
    sockets: value('flotilla_websocket_connections'),
    cpuSeconds: value('flotilla_process_cpu_seconds_total'),
    statements: value('flotilla_db_statements_total'),
    executions: value('flotilla_live_executions'),
    // prom-client's event-loop delay histogram is reset at every scrape: these cover the time since the last one.
    eventLoopLagMaxMs: value('flotilla_nodejs_eventloop_lag_max_seconds') * 1000,
    eventLoopLagP99Ms: value('flotilla_nodejs_eventloop_lag_p99_seconds') * 1000,
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
  /** The last payload any of them received. */
  last(): unknown;
}

/** Starts tenantEvents subscriptions `from` to `count` (indexes) spread over the sockets, in batches. */
async function subscribe(
  clients: Client[],
  tenantId: string,
  count: number,
  from = 0,
  query = EVENTS_SUBSCRIPTION,
): Promise<Subscribers> {
  let handler: (index: number, at: number) => void = () => undefined;
  let errors = 0;
  let last: unknown = null;
  const unsubscribes: (() => void)[] = [];
  for (let start = from; start < count; start += SUBSCRIBE_BATCH) {
    for (let i = start; i < Math.min(count, start + SUBSCRIBE_BATCH); i++) {
      const client = clients[Math.floor(i / SUBSCRIPTIONS_PER_SOCKET) % clients.length];
      unsubscribes.push(
        client.subscribe(
          { query, variables: { t: tenantId } },
          {
            next: (value) => {
              last = value;
              handler(i, performance.now());
            },
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
    last: () => last,
  };
}

/** Starts the latency probe (bench/probe.ts) in its own process; lines are `<epoch ms> <latency ms>`. */
function startProbe(url: string, token: string, tenantId: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', resolve('bench/probe.ts'), url, token, tenantId], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const samples: { at: number; ms: number }[] = [];
  let buffer = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffer += d.toString();
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) {
      const [at, ms] = line.split(' ').map(Number);
      if (Number.isFinite(at) && Number.isFinite(ms)) samples.push({ at, ms });
    }
  });
  return {
    /** Latencies of the probe queries started within [from, to] (epoch ms). */
    between: (from: number, to: number) => samples.filter((s) => s.at >= from && s.at <= to).map((s) => s.ms),
    pause: () => child.stdin?.write('pause\n'),
    resume: () => child.stdin?.write('resume\n'),
    stop: () => child.kill('SIGTERM'),
  };
}

const epochNow = () => performance.timeOrigin + performance.now();

/** One fan-out round: one sendMessage, waited for by every subscriber; server CPU, statements, probe latency. */
async function fanOutRound(
  url: string,
  token: string,
  sandboxId: string,
  subs: Subscribers,
  subscribers: number,
  probe: ReturnType<typeof startProbe>,
  label: string,
) {
  const before = await scrape(url);
  const arrivals = new Float64Array(subscribers).fill(NaN);
  let delivered = 0;
  subs.onEvent((i, at) => {
    if (i < subscribers && Number.isNaN(arrivals[i])) {
      arrivals[i] = at;
      delivered += 1;
    }
  });
  const epoch0 = epochNow();
  const t0 = performance.now();
  if (!(await send(url, token, sandboxId, label))) throw new Error('sendMessage failed');
  const mutationMs = performance.now() - t0;
  await until(() => delivered >= subscribers, WAIT_DELIVERED_MS, 5);
  const latencies = Array.from(arrivals)
    .filter((a) => !Number.isNaN(a))
    .map((a) => a - t0);
  const p = percentiles(latencies);
  const during = percentiles(probe.between(epoch0, epoch0 + p.maxMs));
  // Probe queries started just before the event and still running count too: they waited on it.
  const after = await scrape(url);
  const serverCpuMs = (after.cpuSeconds - before.cpuSeconds) * 1000;
  return {
    mutationMs: round(mutationMs),
    p50Ms: p.p50Ms,
    p99Ms: p.p99Ms,
    lastMs: p.maxMs,
    delivered,
    serverCpuMs: round(serverCpuMs, 0),
    serverCpuUsPerDelivery: round((serverCpuMs * 1000) / Math.max(1, delivered), 1),
    // The mutation's own statements are included (the same in every round); the rest is delivery.
    statements: after.statements - before.statements,
    executions: after.executions - before.executions,
    probeDuring: { p50Ms: during.p50Ms, p99Ms: during.p99Ms, maxMs: during.maxMs, count: during.count },
    probeSamples: probe.between(epoch0, epoch0 + p.maxMs),
    // The server's own event-loop delay from just before the mutation to the end of the round.
    eventLoopLagMaxMs: round(after.eventLoopLagMaxMs),
    eventLoopLagP99Ms: round(after.eventLoopLagP99Ms),
  };
}

/**
 * For each selection: subscribers at every size of FANOUT_SIZES (added on top of each other,
 * SUBSCRIPTIONS_PER_SOCKET per socket), FANOUT_ROUNDS rounds each, the probe querying meanwhile.
 * Memory is read with the scalar selection at the first and the last size.
 */
async function fanOut(server: ServerProcess, token: string) {
  const url = server.url;
  const { tenantId, sandboxId } = await seed(url, token);
  await send(url, token, sandboxId, 'warm-up');
  const probe = startProbe(url, token, tenantId);
  await sleep(1_000);
  const idleProbeFrom = epochNow();
  await sleep(3_000);
  const probeIdle = percentiles(probe.between(idleProbeFrom, epochNow()));
  probe.pause();
  // What one sendMessage costs with nobody subscribed: the part of statements/event that is not delivery.
  const mutationOnly: number[] = [];
  for (let n = 0; n < 3; n++) {
    await sleep(300);
    const before = (await scrape(url)).statements;
    await send(url, token, sandboxId, `alone ${n}`);
    await sleep(300);
    mutationOnly.push((await scrape(url)).statements - before);
  }
  const mutationStatements = median(mutationOnly);
  // The server's own background statements (domain sweeper, hub safety read, key reload) at idle, per second.
  const idleFrom = await scrape(url);
  await sleep(5_000);
  const idleStatementsPerSecond = round(((await scrape(url)).statements - idleFrom.statements) / 5, 1);
  const largest = Math.max(...FANOUT_SIZES);
  const sockets = Math.ceil(largest / SUBSCRIPTIONS_PER_SOCKET);
  const baseline = await memory(server);
  const results: Record<string, unknown>[] = [];
  const memoryAt: { subscriptions: number; rss: number; heapUsed: number }[] = [];
  let dashboardPayload = '';
  try {
    const only = process.env.BENCH_SELECTIONS?.split(',');
    for (const [selection, query] of Object.entries(SELECTIONS)) {
      if (only && !only.includes(selection)) continue;
      const clients = await openSockets(url, token, sockets);
      const parts: Subscribers[] = [];
      let opened = 0;
      for (const size of FANOUT_SIZES) {
        const started = performance.now();
        parts.push(await subscribe(clients, tenantId, size, opened, query));
        opened = size;
        if (!(await until(async () => (await scrape(url)).subscribers >= size, WAIT_SUBSCRIBED_MS, 200))) {
          throw new Error(`only ${(await scrape(url)).subscribers} of ${size} subscriptions opened`);
        }
        const subscribeSeconds = round((performance.now() - started) / 1000);
        if (selection === 'scalar') memoryAt.push({ subscriptions: size, ...(await memory(server)) });
        const subs: Subscribers = {
          onEvent: (fn) => {
            for (const part of parts) part.onEvent(fn);
          },
          errors: () => parts.reduce((n, part) => n + part.errors(), 0),
          dispose: () => {
            for (const part of parts) part.dispose();
          },
          last: () => parts[0].last(),
        };
        const rounds: Awaited<ReturnType<typeof fanOutRound>>[] = [];
        const probed: Awaited<ReturnType<typeof fanOutRound>>[] = [];
        for (let n = 0; n < FANOUT_ROUNDS + PROBE_ROUNDS; n++) {
          const withProbe = n >= FANOUT_ROUNDS;
          console.error(`  ${selection} × ${size}, round ${n + 1}${withProbe ? ' (probe)' : ''}`);
          if (withProbe) probe.resume();
          else probe.pause();
          await sleep(withProbe ? 500 : 200);
          const r = await fanOutRound(url, token, sandboxId, subs, size, probe, `${selection} ${size} ${n}`);
          (withProbe ? probed : rounds).push(r);
          // Jittered, so rounds never lock in phase with the server's 1 s domain sweeper (its statements would count).
          await sleep(300 + Math.random() * 700);
        }
        probe.pause();
        if (selection === 'dashboard') dashboardPayload = JSON.stringify(subs.last());
        // The first round after subscribing pays first-execution costs; the steady figure is the median of the rest.
        const steady = rounds.length > 1 ? rounds.slice(1) : rounds;
        const med = (pick: (r: (typeof rounds)[number]) => number) => round(median(steady.map(pick)));
        results.push({
          selection,
          subscribers: size,
          sockets: Math.ceil(size / SUBSCRIPTIONS_PER_SOCKET),
          subscribeSeconds,
          rounds,
          steady: {
            lastMs: med((r) => r.lastMs),
            p50Ms: med((r) => r.p50Ms),
            serverCpuUsPerDelivery: med((r) => r.serverCpuUsPerDelivery),
            // The fewest: the server's own periodic work (sweeper, key reload) only ever adds to a round.
            statements: Math.min(...steady.map((r) => r.statements)),
            executions: med((r) => r.executions),
            mutationMs: med((r) => r.mutationMs),
            eventLoopLagMaxMs: med((r) => r.eventLoopLagMaxMs),
          },
          probed: {
            rounds: probed,
            lastMs: round(median(probed.map((r) => r.lastMs))),
            mutationMs: round(median(probed.map((r) => r.mutationMs))),
            probe: percentiles(probed.flatMap((r) => r.probeSamples)),
          },
          subscriptionErrors: subs.errors(),
        });
      }
      for (const part of parts) part.dispose();
      await Promise.all(clients.map((c) => c.dispose()));
      await until(async () => (await scrape(url)).subscribers === 0, WAIT_SUBSCRIBED_MS, 200);
    }
  } finally {
    probe.stop();
  }
  const [first, last] = [memoryAt[0], memoryAt.at(-1)];
  const slope = (a: number, b: number) =>
    last && first && last.subscriptions > first.subscriptions
      ? round((a - b) / (last.subscriptions - first.subscriptions), 0)
      : NaN;
  return {
    fanOut: results,
    probeIdle,
    mutationStatements,
    idleStatementsPerSecond,
    dashboardPayload,
    memory: {
      baseline,
      steps: memoryAt,
      rssBytesPerSubscription: slope(last?.rss ?? NaN, first?.rss ?? NaN),
      heapBytesPerSubscription: slope(last?.heapUsed ?? NaN, first?.heapUsed ?? NaN),
    },
  };
}

/**
 * The floor: the same number of frames with the same payload from a bare `ws` server in its own
 * process, to the same number of sockets; the client parses every frame, as graphql-ws does.
 */
async function rawFloor(payload: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', resolve('bench/raw-ws-floor.ts')], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  let wake: () => void = () => undefined;
  let buffer = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffer += d.toString();
    const parts = buffer.split('\n');
    buffer = parts.pop() ?? '';
    lines.push(...parts);
    wake();
  });
  const nextLine = async (prefix: string) => {
    for (;;) {
      const i = lines.findIndex((l) => l.startsWith(prefix));
      if (i >= 0) return lines.splice(i, 1)[0];
      await new Promise<void>((r) => {
        wake = r;
      });
    }
  };
  try {
    const port = Number((await nextLine('listening ')).split(' ')[1]);
    const results = [];
    for (const size of FANOUT_SIZES) {
      const count = Math.ceil(size / SUBSCRIPTIONS_PER_SOCKET);
      let received = 0;
      let lastAt = 0;
      const sockets = await Promise.all(
        Array.from(
          { length: count },
          () =>
            new Promise<WebSocket>((ok, fail) => {
              const ws = new WebSocket(`ws://127.0.0.1:${port}`);
              ws.on('message', (data) => {
                JSON.parse(String(data));
                received += 1;
                lastAt = performance.now();
              });
              ws.once('open', () => ok(ws));
              ws.once('error', fail);
            }),
        ),
      );
      const rounds: { lastMs: number; serverCpuMs: number; delivered: number }[] = [];
      for (let n = 0; n < FANOUT_ROUNDS; n++) {
        received = 0;
        const t0 = performance.now();
        child.stdin?.write(`broadcast ${SUBSCRIPTIONS_PER_SOCKET} ${payload}\n`);
        const cpuMs = Number((await nextLine('sent ')).split(' ')[1]);
        await until(() => received >= count * SUBSCRIPTIONS_PER_SOCKET, WAIT_DELIVERED_MS, 2);
        rounds.push({ lastMs: round(lastAt - t0), serverCpuMs: round(cpuMs, 1), delivered: received });
        await sleep(300);
      }
      for (const ws of sockets) ws.close();
      const steady = rounds.length > 1 ? rounds.slice(1) : rounds;
      results.push({
        subscribers: count * SUBSCRIPTIONS_PER_SOCKET,
        sockets: count,
        rounds,
        steady: {
          lastMs: round(median(steady.map((r) => r.lastMs))),
          serverCpuUsPerDelivery: round(
            median(steady.map((r) => (r.serverCpuMs * 1000) / (count * SUBSCRIPTIONS_PER_SOCKET))),
            1,
          ),
        },
      });
    }
    return { payloadBytes: Buffer.byteLength(payload), results };
  } finally {
    child.kill('SIGTERM');
  }
}

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

  console.error(`fan-out: ${FANOUT_SIZES.join(', ')} subscribers, ${SUBSCRIPTIONS_PER_SOCKET} per socket…`);
  const fan = await fanOut(a, token);
  console.error('raw ws floor…');
  const floor = await rawFloor(fan.dashboardPayload);
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
  type FanRow = {
    selection: string;
    subscribers: number;
    steady: {
      lastMs: number;
      p50Ms: number;
      serverCpuUsPerDelivery: number;
      statements: number;
      executions: number;
      mutationMs: number;
      eventLoopLagMaxMs: number;
    };
    probed: {
      lastMs: number;
      mutationMs: number;
      probe: { p50Ms: number; p99Ms: number; maxMs: number; count: number };
    };
  };
  const rows = fan.fanOut as FanRow[];
  const floorAt = (n: number) => floor.results.find((r) => r.subscribers === n)?.steady;
  const rowOf = (selection: string, n: number) =>
    rows.find((r) => r.selection === selection && r.subscribers === n)?.steady;
  const largest = Math.max(...FANOUT_SIZES);
  const smallest = Math.min(...FANOUT_SIZES);
  const dashLarge = rowOf('dashboard', largest);
  const goals = {
    dashboardLastVsFloor:
      dashLarge && floorAt(largest) ? round(dashLarge.lastMs / (floorAt(largest)?.lastMs ?? NaN)) : NaN,
    dashboardCpuUsPerDelivery: dashLarge?.serverCpuUsPerDelivery ?? NaN,
    dashboardVsScalarCpuAtSmallest: round(
      (rowOf('dashboard', smallest)?.serverCpuUsPerDelivery ?? NaN) /
        (rowOf('scalar', smallest)?.serverCpuUsPerDelivery ?? NaN),
    ),
    statementsPerEvent: Object.fromEntries(rows.map((r) => [`${r.selection}@${r.subscribers}`, r.steady.statements])),
    heapBytesPerIdleSubscription: fan.memory.heapBytesPerSubscription,
    probeP99DuringLargestDashboardMs: rows.find((r) => r.selection === 'dashboard' && r.subscribers === largest)?.probed
      .probe.p99Ms,
    deliveryStatementsPerEvent: Object.fromEntries(
      rows.map((r) => [`${r.selection}@${r.subscribers}`, r.steady.statements - fan.mutationStatements]),
    ),
  };
  const result = {
    ...meta,
    goals,
    fanOut: fan.fanOut,
    floor,
    probeIdle: fan.probeIdle,
    memory: fan.memory,
    sustained: sus,
    replicas,
  };
  writeFileSync(`bench/results/subscriptions-${driver}.json`, `${JSON.stringify(result, null, 2)}\n`);

  const lines = [
    `### subscriptions, ${driver} (load average ${meta.loadAverage1mAtStart} → ${meta.loadAverage1mAtEnd} on ${meta.machine.cpus} CPUs)`,
    '',
    `Fan-out: tenantEvents subscribers, ${SUBSCRIPTIONS_PER_SOCKET} per graphql-ws socket; one sendMessage per round; ${FANOUT_ROUNDS} quiet rounds (steady = median of rounds 2–${FANOUT_ROUNDS}), then ${PROBE_ROUNDS} with the probe (one \`tenant(id)\` query at a time from another process; idle p50 ${fan.probeIdle.p50Ms} ms, p99 ${fan.probeIdle.p99Ms} ms). The floor is a bare \`ws\` server (own process) sending the same ${floor.payloadBytes}-byte dashboard payload as the same number of frames over the same number of sockets. Delivery statements = the fewest statements of a quiet round minus the ${fan.mutationStatements} of the sendMessage itself (measured with nobody subscribed); at idle the server issues ${fan.idleStatementsPerSecond} statements/s of its own (sweepers), which rounds may include.`,
    '',
    '| selection | subscribers | last ms | floor last ms | ratio | server CPU µs/delivery | floor µs/delivery | delivery statements/event | executions/event | mutation ms | event-loop delay max ms | with probe: last ms | probe p50 / p99 ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => {
      const f = floorAt(r.subscribers);
      return `| ${r.selection} | ${r.subscribers} | ${r.steady.lastMs} | ${f?.lastMs ?? ''} | ${f ? round(r.steady.lastMs / f.lastMs) : ''} | ${r.steady.serverCpuUsPerDelivery} | ${f?.serverCpuUsPerDelivery ?? ''} | ${r.steady.statements - fan.mutationStatements} | ${r.steady.executions} | ${r.steady.mutationMs} | ${r.steady.eventLoopLagMaxMs} | ${r.probed.lastMs} | ${r.probed.probe.p50Ms} / ${r.probed.probe.p99Ms} |`;
    }),
    '',
    `Memory (server process, median of ${MEMORY_SAMPLES} scrapes of /metrics, each after a forced full GC, scalar selection): baseline heap ${mb(fan.memory.baseline.heapUsed)}; ` +
      fan.memory.steps
        .map((m) => `${m.subscriptions} idle subscriptions: RSS ${mb(m.rss)} / heap ${mb(m.heapUsed)}`)
        .join('; ') +
      ` → slope **${fan.memory.heapBytesPerSubscription} B heap, ${fan.memory.rssBytesPerSubscription} B RSS per subscription**.`,
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
