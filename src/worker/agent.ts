import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AcquireLeaseDocument,
  createClient,
  FatalSubscriptionError,
  type FlotillaClient,
  HeartbeatDocument,
  MessageAddedDocument,
  MessagesDocument,
  type MessagesQuery,
  PostAgentMessageDocument,
  ReleaseLeaseDocument,
  RenewLeaseDocument,
  ReportAgentStatusDocument,
  ReportSandboxStatusDocument,
  type Result,
  SandboxDocument,
  type SandboxFieldsFragment,
  ViewerDocument,
  WorkerAssignmentsDocument,
  WorkerDocument,
} from '../client/index.js';
import { ProcessRuntime } from './process-runtime.js';
import type { RunningSandbox, SandboxRuntime } from './runtime.js';

/** Defaults of the reference worker; each is an option. */
export const WORKER_DEFAULTS = {
  heartbeatIntervalMs: 5_000,
  leaseTtlSeconds: 15,
  stopGraceMs: 5_000,
  /** Output lines are posted as one agent message per batch, at most this often… */
  outputFlushMs: 250,
  /** …or as soon as a batch holds this many bytes. */
  outputBatchBytes: 16 * 1024,
  /** Page size when reading a sandbox's messages to catch up on input. */
  inputPageSize: 100,
} as const;

const AGENT_PHASES = new Set(['IDLE', 'THINKING', 'EXECUTING', 'WAITING_FOR_INPUT', 'DONE', 'ERROR']);
const TERMINAL = new Set(['STOPPED', 'FAILED', 'LOST', 'DELETED']);
/** Errors meaning this worker no longer owns the sandbox: stop it and stop writing. */
const LOST_LEASE = new Set(['STALE_FENCING_TOKEN', 'LEASE_CONFLICT', 'NOT_FOUND']);

export interface WorkerLogger {
  info(msg: string, data?: Record<string, unknown>): void;
  warn(msg: string, data?: Record<string, unknown>): void;
}

export interface WorkerAgentOptions {
  url: string;
  token: string;
  /** Where the agent keeps its subscription cursor between restarts. */
  stateDir?: string;
  runtime?: SandboxRuntime;
  heartbeatIntervalMs?: number;
  leaseTtlSeconds?: number;
  stopGraceMs?: number;
  version?: string;
  logger?: WorkerLogger;
  webSocketImpl?: unknown;
}

interface Running {
  sandbox: SandboxFieldsFragment;
  fencingToken: string;
  process: RunningSandbox | null;
  renewTimer: NodeJS.Timeout | null;
  flushTimer: NodeJS.Timeout | null;
  pending: string[];
  pendingBytes: number;
  stopRequested: boolean;
  lost: boolean;
  abort: AbortController;
  /** Serialises this sandbox's writes so messages and reports keep their order. */
  queue: Promise<unknown>;
  /** Connection cursor of the last message seen: input after it goes to the process. */
  inputCursor: string | null;
  /** Ids of messages already written to stdin (the live stream and catch-up may both see one). */
  relayed: Set<string>;
  /** Settles once the exit was reported and the lease released. */
  ended: Promise<void> | null;
}

/**
 * The reference worker agent, built only on the SDK: heartbeats, takes assignments from the
 * workerAssignments subscription, holds a lease per sandbox, runs it through a runtime and
 * reports what happens, always with the current fencing token.
 */
export class WorkerAgent {
  private readonly client: FlotillaClient;
  private readonly runtime: SandboxRuntime;
  private readonly opts: Required<Pick<WorkerAgentOptions, 'heartbeatIntervalMs' | 'leaseTtlSeconds' | 'stopGraceMs'>> &
    WorkerAgentOptions;
  private readonly running = new Map<string, Running>();
  private readonly abort = new AbortController();
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private cursor: string | null = null;
  workerId: string | null = null;

  constructor(options: WorkerAgentOptions) {
    this.opts = {
      heartbeatIntervalMs: WORKER_DEFAULTS.heartbeatIntervalMs,
      leaseTtlSeconds: WORKER_DEFAULTS.leaseTtlSeconds,
      stopGraceMs: WORKER_DEFAULTS.stopGraceMs,
      ...options,
    };
    this.runtime = options.runtime ?? new ProcessRuntime();
    this.client = createClient({ url: options.url, token: options.token, webSocketImpl: options.webSocketImpl });
  }

  /** Starts heartbeating, resumes what this worker already owns, then follows its assignments. */
  async start(): Promise<void> {
    const viewer = await this.client.query(ViewerDocument);
    if (!viewer.ok) throw new Error(`cannot identify the worker: ${viewer.error.message}`);
    if (!viewer.data.viewer.workerId) throw new Error('this token is not a worker token (registerWorker mints one)');
    this.workerId = viewer.data.viewer.workerId;
    this.cursor = this.loadCursor();
    await this.heartbeat();
    // Each tick also reconciles: an assignment or input that happened while a stream was not yet
    // (or no longer) live is picked up here, so nothing depends on a subscription being in time.
    this.heartbeatTimer = setInterval(() => void this.tick(), this.opts.heartbeatIntervalMs);
    this.killLeftovers();
    await this.reconcile();
    void this.follow();
  }

  /** Stops every sandbox it runs (reporting them stopped) and disconnects. */
  async stop(): Promise<void> {
    this.abort.abort();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await Promise.all([...this.running.values()].map((r) => this.stopSandbox(r.sandbox.id)));
    await this.client.close();
  }

  private log(level: 'info' | 'warn', msg: string, data?: Record<string, unknown>) {
    this.opts.logger?.[level](msg, { workerId: this.workerId, ...data });
  }

  private async tick(): Promise<void> {
    await this.heartbeat();
    if (this.abort.signal.aborted) return;
    await this.reconcile();
    await Promise.all([...this.running.values()].map((r) => this.catchUpInput(r)));
  }

  private async heartbeat(): Promise<void> {
    const allocated = [...this.running.values()].reduce(
      (acc, r) => ({
        cpuMillis: acc.cpuMillis + r.sandbox.resources.cpuMillis,
        memoryMb: acc.memoryMb + r.sandbox.resources.memoryMb,
      }),
      { cpuMillis: 0, memoryMb: 0 },
    );
    const result = await this.client.mutate(HeartbeatDocument, {
      input: {
        workerId: this.workerId,
        version: this.opts.version ?? 'flotilla-worker/0.1',
        observed: { ...allocated, sandboxes: this.running.size, runtime: this.runtime.name },
      },
    });
    if (!result.ok) this.log('warn', 'heartbeat failed', { error: result.error.message });
  }

  /** After a (re)start: pick up every sandbox assigned to this worker that is not finished. */
  private async reconcile(): Promise<void> {
    const result = await this.client.query(WorkerDocument, { id: this.workerId as string });
    if (!result.ok || !result.data.worker) {
      this.log('warn', 'could not list assigned sandboxes', {
        error: result.ok ? 'worker not found' : result.error.message,
      });
      return;
    }
    for (const edge of result.data.worker.sandboxes.edges) {
      if (this.abort.signal.aborted) return;
      if (edge.node.status === 'STOPPING' && this.running.has(edge.node.id)) void this.stopSandbox(edge.node.id);
      else if (!TERMINAL.has(edge.node.status)) await this.ensureRunning(edge.node);
    }
  }

  private async follow(): Promise<void> {
    for (;;) {
      try {
        await this.followOnce();
        return;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        // A saved cursor the server no longer knows (pruned, another database): start over from
        // now; the reconcile picks up whatever was assigned meanwhile.
        if (err instanceof FatalSubscriptionError && err.error.code === 'INVALID_CURSOR') {
          this.log('warn', 'saved assignment cursor refused; following from now', { cursor: this.cursor });
          this.cursor = null;
          this.saveState();
          await this.reconcile();
          continue;
        }
        this.log('warn', 'assignment stream ended', { error: (err as Error).message });
        return;
      }
    }
  }

  private async followOnce(): Promise<void> {
    const stream = this.client.subscribe(
      WorkerAssignmentsDocument,
      { workerId: this.workerId as string, after: this.cursor },
      {
        cursorOf: (d) => d.workerAssignments.cursor,
        signal: this.abort.signal,
        onReconnect: (attempt) => this.log('warn', 'assignment stream lost; reconnecting', { attempt }),
        onResumed: () => void this.reconcile(),
      },
    );
    for await (const { workerAssignments: event } of stream) {
      const sandbox = event.sandbox;
      if (sandbox && event.type === 'SANDBOX_ASSIGNED' && !TERMINAL.has(sandbox.status))
        await this.ensureRunning(sandbox);
      if (sandbox && event.type === 'SANDBOX_STOP_REQUESTED') void this.stopSandbox(sandbox.id);
      this.saveCursor(event.cursor);
    }
  }

  private readonly starting = new Set<string>();

  private async ensureRunning(sandbox: SandboxFieldsFragment): Promise<void> {
    // The stream and a reconcile can both offer the same sandbox; only one start may proceed.
    if (this.running.has(sandbox.id) || this.starting.has(sandbox.id) || this.abort.signal.aborted) return;
    this.starting.add(sandbox.id);
    try {
      await this.startSandbox(sandbox);
    } finally {
      this.starting.delete(sandbox.id);
    }
  }

  private async startSandbox(sandbox: SandboxFieldsFragment): Promise<void> {
    const lease = await this.client.mutate(AcquireLeaseDocument, {
      input: { sandboxId: sandbox.id, ttlSeconds: this.opts.leaseTtlSeconds },
    });
    if (!lease.ok || lease.data.acquireLease.__typename !== 'LeasePayload') {
      this.log('warn', 'lease not acquired', {
        sandboxId: sandbox.id,
        error: lease.ok ? lease.data.acquireLease.__typename : lease.error.message,
      });
      return;
    }
    const run: Running = {
      sandbox,
      fencingToken: lease.data.acquireLease.lease.fencingToken,
      process: null,
      renewTimer: null,
      flushTimer: null,
      pending: [],
      pendingBytes: 0,
      stopRequested: false,
      lost: false,
      abort: new AbortController(),
      queue: Promise.resolve(),
      inputCursor: null,
      relayed: new Set(),
      ended: null,
    };
    this.running.set(sandbox.id, run);
    run.renewTimer = setInterval(() => void this.renew(run), (this.opts.leaseTtlSeconds * 1000) / 3);

    // Fresh placements go STARTING → RUNNING; a sandbox this worker ran before a restart is already RUNNING.
    const current = await this.client.query(SandboxDocument, { id: sandbox.id });
    const status = current.ok && current.data.sandbox ? current.data.sandbox.status : sandbox.status;
    if (status === 'STOPPING') {
      // Asked to stop before it ran here (e.g. while this agent was down): never start it.
      await this.report(run, 'STOPPED', { reason: 'stopped before it started' });
      await this.release(run);
      this.cleanup(run);
      return;
    }
    if (status === 'SCHEDULED' && !(await this.report(run, 'STARTING'))) {
      // Not started: let the next reconcile try again from scratch.
      await this.release(run);
      this.cleanup(run);
      return;
    }
    // Messages that exist before the process starts are history, not input for it.
    run.inputCursor = await this.lastMessageCursor(sandbox.id);
    try {
      run.process = this.runtime.start(
        {
          sandboxId: sandbox.id,
          name: sandbox.name,
          image: sandbox.image,
          command: sandbox.command,
          cpuMillis: sandbox.resources.cpuMillis,
          memoryMb: sandbox.resources.memoryMb,
          env: { FLOTILLA_SANDBOX_ID: sandbox.id, FLOTILLA_SANDBOX_NAME: sandbox.name, FLOTILLA_IMAGE: sandbox.image },
        },
        {
          onLine: (_stream, line) => this.onOutput(run, line),
          onExit: (exit) => {
            run.ended = this.onExit(run, exit);
          },
        },
      );
      this.rememberProcesses();
    } catch (err) {
      await this.report(run, 'FAILED', { reason: (err as Error).message, exitCode: 127 });
      this.cleanup(run);
      await this.release(run);
      return;
    }
    void this.relayInput(run);
    if (status !== 'RUNNING') await this.report(run, 'RUNNING');
    this.log('info', 'sandbox running', { sandboxId: sandbox.id, pid: run.process.pid });
    await this.catchUpInput(run);
  }

  /** People's messages to the sandbox reach its standard input, live. */
  private async relayInput(run: Running): Promise<void> {
    try {
      const stream = this.client.subscribe(
        MessageAddedDocument,
        { sandboxId: run.sandbox.id, after: null },
        {
          signal: run.abort.signal,
          cursorOf: (d) => d.messageAdded.eventCursor,
          onResumed: () => void this.catchUpInput(run),
        },
      );
      for await (const { messageAdded } of stream) this.deliverInput(run, messageAdded);
    } catch (err) {
      if (!run.abort.signal.aborted)
        this.log('warn', 'input relay ended', { sandboxId: run.sandbox.id, error: (err as Error).message });
    }
  }

  private deliverInput(run: Running, message: { id: string; senderKind: string; body: string }): void {
    if (message.senderKind !== 'USER' || run.relayed.has(message.id) || run.lost) return;
    run.relayed.add(message.id);
    run.process?.write(`${message.body}\n`);
  }

  /** Reads the messages after the last one seen, so input missed by the live stream still arrives. */
  private async catchUpInput(run: Running): Promise<void> {
    if (!run.process || run.process.exited || run.lost) return;
    for (;;) {
      const page = await this.client.query(MessagesDocument, {
        sandboxId: run.sandbox.id,
        first: WORKER_DEFAULTS.inputPageSize,
        after: run.inputCursor,
      });
      if (!page.ok) return;
      for (const edge of page.data.messages.edges) this.deliverInput(run, edge.node);
      run.inputCursor = page.data.messages.pageInfo.endCursor ?? run.inputCursor;
      if (!page.data.messages.pageInfo.hasNextPage) return;
    }
  }

  private async lastMessageCursor(sandboxId: string): Promise<string | null> {
    let cursor: string | null = null;
    for (;;) {
      const page: Result<MessagesQuery> = await this.client.query(MessagesDocument, {
        sandboxId,
        first: WORKER_DEFAULTS.inputPageSize,
        after: cursor,
      });
      if (!page.ok) return cursor;
      cursor = page.data.messages.pageInfo.endCursor ?? cursor;
      if (!page.data.messages.pageInfo.hasNextPage) return cursor;
    }
  }

  private onOutput(run: Running, line: string): void {
    if (run.lost) return;
    const status = parseStatusLine(line);
    if (status) {
      this.enqueue(run, () =>
        this.client
          .mutate(ReportAgentStatusDocument, {
            input: { sandboxId: run.sandbox.id, fencingToken: run.fencingToken, ...status },
          })
          .then((r) => this.checkWrite(run, r.ok ? r.data.reportAgentStatus : null)),
      );
      return;
    }
    run.pending.push(line);
    run.pendingBytes += Buffer.byteLength(line) + 1;
    if (run.pendingBytes >= WORKER_DEFAULTS.outputBatchBytes) this.flush(run);
    else run.flushTimer ??= setTimeout(() => this.flush(run), WORKER_DEFAULTS.outputFlushMs);
  }

  /** Posts the buffered output lines as one agent message. */
  private flush(run: Running): Promise<unknown> {
    if (run.flushTimer) clearTimeout(run.flushTimer);
    run.flushTimer = null;
    if (run.pending.length === 0 || run.lost) return run.queue;
    const body = run.pending.join('\n');
    run.pending = [];
    run.pendingBytes = 0;
    return this.enqueue(run, () =>
      this.client
        .mutate(PostAgentMessageDocument, {
          input: { sandboxId: run.sandbox.id, fencingToken: run.fencingToken, body },
        })
        .then((r) => this.checkWrite(run, r.ok ? r.data.postAgentMessage : null)),
    );
  }

  private enqueue(run: Running, write: () => Promise<unknown>): Promise<unknown> {
    run.queue = run.queue
      .then(() => (run.lost ? undefined : write()))
      .catch((err: Error) => this.log('warn', 'write failed', { error: err.message }));
    return run.queue;
  }

  private async onExit(run: Running, exit: { code: number | null; signal: string | null }): Promise<void> {
    await this.flush(run);
    if (!run.lost) {
      const ok = run.stopRequested || exit.code === 0;
      await this.report(run, ok ? 'STOPPED' : 'FAILED', {
        exitCode: exit.code ?? undefined,
        reason: exit.signal ? `ended by ${exit.signal}` : exit.code === 0 ? undefined : `exited with ${exit.code}`,
      });
      await this.release(run);
    }
    this.cleanup(run);
    this.log('info', 'sandbox ended', { sandboxId: run.sandbox.id, code: exit.code, signal: exit.signal });
  }

  private async stopSandbox(sandboxId: string): Promise<void> {
    const run = this.running.get(sandboxId);
    if (!run) return;
    run.stopRequested = true;
    if (run.process && !run.process.exited) await run.process.stop(this.opts.stopGraceMs);
    // An agent shutting down must not exit before the STOPPED report is written.
    await run.ended;
  }

  private async renew(run: Running): Promise<void> {
    if (run.lost) return;
    const result = await this.client.mutate(RenewLeaseDocument, {
      input: { sandboxId: run.sandbox.id, fencingToken: run.fencingToken, ttlSeconds: this.opts.leaseTtlSeconds },
    });
    if (result.ok) this.checkWrite(run, result.data.renewLease);
  }

  private async release(run: Running): Promise<void> {
    if (run.lost) return;
    await this.client.mutate(ReleaseLeaseDocument, {
      input: { sandboxId: run.sandbox.id, fencingToken: run.fencingToken },
    });
  }

  private async report(
    run: Running,
    status: 'STARTING' | 'RUNNING' | 'STOPPED' | 'FAILED',
    extra: { exitCode?: number; reason?: string } = {},
  ): Promise<boolean> {
    if (run.lost) return false;
    const result = (await this.enqueue(run, () =>
      this.client.mutate(ReportSandboxStatusDocument, {
        input: { sandboxId: run.sandbox.id, fencingToken: run.fencingToken, status, ...extra },
      }),
    )) as Awaited<ReturnType<FlotillaClient['mutate']>> | undefined;
    if (!result?.ok) return false;
    return this.checkWrite(
      run,
      (result.data as { reportSandboxStatus: { __typename?: string; code?: string } }).reportSandboxStatus,
    );
  }

  /** A refused write because the lease moved on means this worker lost the sandbox: stop it at once. */
  private checkWrite(run: Running, outcome: { __typename?: string; code?: string } | null): boolean {
    if (!outcome || (outcome.__typename ?? '').endsWith('Payload')) return !!outcome;
    if (outcome.code && LOST_LEASE.has(outcome.code) && !run.lost) {
      run.lost = true;
      this.log('warn', 'lease lost; stopping the sandbox and its writes', {
        sandboxId: run.sandbox.id,
        code: outcome.code,
      });
      void run.process?.stop(0);
      this.cleanup(run);
    }
    return false;
  }

  private cleanup(run: Running): void {
    if (run.renewTimer) clearInterval(run.renewTimer);
    if (run.flushTimer) clearTimeout(run.flushTimer);
    run.abort.abort();
    if (this.running.get(run.sandbox.id) === run) this.running.delete(run.sandbox.id);
    this.saveState();
  }

  private statePath(): string | null {
    return this.opts.stateDir && this.workerId
      ? join(this.opts.stateDir, `worker-${this.workerId.replace(/[^\w-]/g, '_')}.json`)
      : null;
  }

  private loadState(): WorkerState {
    const path = this.statePath();
    if (!path) return {};
    try {
      return JSON.parse(readFileSync(path, 'utf8')) as WorkerState;
    } catch {
      return {};
    }
  }

  private saveState(): void {
    const path = this.statePath();
    if (!path || !this.opts.stateDir) return;
    const processes: Record<string, number> = {};
    for (const [id, run] of this.running) if (run.process?.pid && !run.process.exited) processes[id] = run.process.pid;
    mkdirSync(this.opts.stateDir, { recursive: true });
    writeFileSync(`${path}.tmp`, JSON.stringify({ cursor: this.cursor, processes } satisfies WorkerState));
    renameSync(`${path}.tmp`, path);
  }

  private loadCursor(): string | null {
    return this.loadState().cursor ?? null;
  }

  private saveCursor(cursor: string): void {
    this.cursor = cursor;
    this.saveState();
  }

  /** Records the process groups it runs, so a restarted agent can end the ones it left behind. */
  private rememberProcesses(): void {
    this.saveState();
  }

  /**
   * A previous run of this agent that died (SIGKILL, crash) leaves its sandboxes' processes
   * running, their output unread. They cannot be followed again, so they are ended before the
   * sandboxes are resumed (or taken over elsewhere): no sandbox runs twice. Only a process that
   * still carries its sandbox id in its environment is signalled, never a reused pid.
   */
  private killLeftovers(): void {
    const leftovers = this.loadState().processes ?? {};
    for (const [sandboxId, pid] of Object.entries(leftovers)) {
      if (!isSandboxProcess(pid, sandboxId)) continue;
      try {
        process.kill(-pid, 'SIGKILL');
        this.log('warn', 'ended a sandbox process left by a previous run', { sandboxId, pid });
      } catch {
        // gone meanwhile
      }
    }
    this.saveState();
  }
}

interface WorkerState {
  /** The last workerAssignments cursor handled. */
  cursor?: string | null;
  /** Process group ids of the sandboxes running, by sandbox id. */
  processes?: Record<string, number>;
}

/** Whether `pid` is still the process the runtime started for the sandbox (Linux: /proc). */
function isSandboxProcess(pid: number, sandboxId: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`FLOTILLA_SANDBOX_ID=${sandboxId}`);
  } catch {
    return false; // gone, not ours, or no /proc: leave it alone
  }
}

/**
 * A process updates its agent status by printing one JSON line:
 *   {"flotilla":{"phase":"THINKING","activity":"reading the repo"}}
 */
export function parseStatusLine(
  line: string,
): { phase: 'IDLE' | 'THINKING' | 'EXECUTING' | 'WAITING_FOR_INPUT' | 'DONE' | 'ERROR'; activity?: string } | null {
  if (!line.startsWith('{"flotilla"')) return null;
  try {
    const parsed = JSON.parse(line) as { flotilla?: { phase?: unknown; activity?: unknown } };
    const phase = parsed.flotilla?.phase;
    if (typeof phase !== 'string' || !AGENT_PHASES.has(phase)) return null;
    const activity = typeof parsed.flotilla?.activity === 'string' ? parsed.flotilla.activity.slice(0, 500) : undefined;
    return { phase: phase as 'IDLE', ...(activity ? { activity } : {}) };
  } catch {
    return null;
  }
}
