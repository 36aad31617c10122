import {
  AcquireLeaseDocument,
  createClient,
  FatalSubscriptionError,
  type FlotillaClient,
  HeartbeatDocument,
  type SandboxFieldsFragment,
  ViewerDocument,
  WorkerAssignmentsDocument,
  WorkerDocument,
} from '../client/index.js';
import { endLeftoverProcesses } from './orphans.js';
import { ProcessRuntime } from './process-runtime.js';
import type { SandboxRuntime } from './runtime.js';
import { SandboxRun, type WorkerLogLevel } from './sandbox-run.js';
import { StateFile } from './state-file.js';

/** Defaults of the reference worker; each is an option. */
export const WORKER_DEFAULTS = {
  heartbeatIntervalMs: 5_000,
  leaseTtlSeconds: 15,
  stopGraceMs: 5_000,
  /** Output lines are posted as one agent message per batch, at most this often… */
  outputFlushMs: 250,
  /** …or as soon as a batch holds this many bytes. */
  outputBatchBytes: 16 * 1024,
  /** Page size (and delivery report size) when reading a sandbox's undelivered messages. */
  inputPageSize: 100,
} as const;

const TERMINAL = new Set(['STOPPED', 'FAILED', 'LOST', 'DELETED']);

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

/**
 * The reference worker agent, built only on the SDK: heartbeats, takes assignments from the
 * workerAssignments subscription, holds a lease per sandbox, runs it through a runtime and
 * reports what happens, always with the current fencing token. This class orchestrates; one
 * sandbox's run is a SandboxRun (sandbox-run.ts), with its input relay (stdin-relay.ts) and
 * output batches (output-batcher.ts); state-file.ts keeps the cursor and pids between restarts,
 * and orphans.ts ends the processes a crashed run left behind.
 */
export class WorkerAgent {
  private readonly client: FlotillaClient;
  private readonly runtime: SandboxRuntime;
  private readonly opts: Required<Pick<WorkerAgentOptions, 'heartbeatIntervalMs' | 'leaseTtlSeconds' | 'stopGraceMs'>> &
    WorkerAgentOptions;
  private readonly running = new Map<string, SandboxRun>();
  private readonly state: StateFile;
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
    this.state = new StateFile(options.stateDir);
    this.client = createClient({ url: options.url, token: options.token, webSocketImpl: options.webSocketImpl });
  }

  /** Starts heartbeating, resumes what this worker already owns, then follows its assignments. */
  async start(): Promise<void> {
    const viewer = await this.client.query(ViewerDocument);
    if (!viewer.ok) throw new Error(`cannot identify the worker: ${viewer.error.message}`);
    if (!viewer.data.viewer.workerId) throw new Error('this token is not a worker token (registerWorker mints one)');
    this.workerId = viewer.data.viewer.workerId;
    this.cursor = this.state.load(this.workerId).cursor ?? null;
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

  private log(level: WorkerLogLevel, msg: string, data?: Record<string, unknown>) {
    this.opts.logger?.[level](msg, { workerId: this.workerId, ...data });
  }

  private async tick(): Promise<void> {
    await this.heartbeat();
    if (this.abort.signal.aborted) return;
    await this.reconcile();
    await Promise.all([...this.running.values()].map((r) => r.input.deliver()));
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
      if (edge.node.status === 'STOPPING' && edge.node.restartRequestedAt) await this.restartSandbox(edge.node);
      else if (edge.node.status === 'STOPPING' && this.running.has(edge.node.id)) void this.stopSandbox(edge.node.id);
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
      if (sandbox && event.type === 'SANDBOX_RESTART_REQUESTED') await this.restartSandbox(sandbox);
      this.cursor = event.cursor;
      this.saveState();
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
    const run = new SandboxRun(sandbox, lease.data.acquireLease.lease.fencingToken, {
      client: this.client,
      runtime: this.runtime,
      leaseTtlSeconds: this.opts.leaseTtlSeconds,
      stopGraceMs: this.opts.stopGraceMs,
      outputFlushMs: WORKER_DEFAULTS.outputFlushMs,
      outputBatchBytes: WORKER_DEFAULTS.outputBatchBytes,
      inputPageSize: WORKER_DEFAULTS.inputPageSize,
      log: (level, msg, data) => this.log(level, msg, data),
      // Records the process groups it runs, so a restarted agent can end the ones it left behind.
      onProcessStarted: () => this.saveState(),
      onEnded: (ended) => {
        if (this.running.get(ended.sandbox.id) === ended) this.running.delete(ended.sandbox.id);
        this.saveState();
      },
    });
    this.running.set(sandbox.id, run);
    await run.start();
  }

  /**
   * A sandbox STOPPING for a restart: its run stops the process and starts it again; one that does
   * not run here (this agent was down) is started again. A request already done reads RUNNING (or
   * STARTING) by now and is ignored.
   */
  private async restartSandbox(sandbox: SandboxFieldsFragment): Promise<void> {
    if (sandbox.status !== 'STOPPING' || !sandbox.restartRequestedAt) return;
    const run = this.running.get(sandbox.id);
    if (run) void run.restart(sandbox);
    else await this.ensureRunning(sandbox);
  }

  private async stopSandbox(sandboxId: string): Promise<void> {
    await this.running.get(sandboxId)?.stop();
  }

  private saveState(): void {
    const processes: Record<string, number> = {};
    for (const [id, run] of this.running) if (run.process?.pid && !run.process.exited) processes[id] = run.process.pid;
    this.state.save(this.workerId, { cursor: this.cursor, processes });
  }

  /** Ends the sandbox processes a previous run of this agent left behind (orphans.ts). */
  private killLeftovers(): void {
    endLeftoverProcesses(this.state.load(this.workerId).processes ?? {}, (sandboxId, pid) =>
      this.log('warn', 'ended a sandbox process left by a previous run', { sandboxId, pid }),
    );
    this.saveState();
  }
}
