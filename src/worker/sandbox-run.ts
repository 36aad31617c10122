import {
  type FlotillaClient,
  PostAgentMessageDocument,
  PostAgentQuestionDocument,
  ReleaseLeaseDocument,
  RenewLeaseDocument,
  ReportAgentStatusDocument,
  ReportSandboxStatusDocument,
  RuntimeEnvironmentDocument,
  SandboxDocument,
  type SandboxFieldsFragment,
} from '../client/index.js';
import { OutputBatcher } from './output-batcher.js';
import type { RunningSandbox, SandboxRuntime } from './runtime.js';
import { parseQuestionLine, parseStatusLine } from './status-line.js';
import { StdinRelay } from './stdin-relay.js';

/**
 * The sandbox's ports as the process sees them: FLOTILLA_PORT_A=8000, FLOTILLA_URL_A=http://host:8000
 * (the URL only when the worker declared a public base URL), and so on for B, C, …
 */
export function portEnvironment(ports: readonly { name: string; port: number; url?: string | null }[]) {
  const env: Record<string, string> = {};
  for (const { name, port, url } of ports) {
    env[`FLOTILLA_PORT_${name}`] = String(port);
    if (url) env[`FLOTILLA_URL_${name}`] = url;
  }
  return env;
}

/** Errors meaning this worker no longer owns the sandbox: stop it and stop writing. */
const LOST_LEASE = new Set(['STALE_FENCING_TOKEN', 'LEASE_CONFLICT', 'NOT_FOUND']);

export type WorkerLogLevel = 'info' | 'warn';

/** What one sandbox's run needs from the agent. */
export interface SandboxRunDeps {
  client: FlotillaClient;
  runtime: SandboxRuntime;
  leaseTtlSeconds: number;
  stopGraceMs: number;
  outputFlushMs: number;
  outputBatchBytes: number;
  inputPageSize: number;
  log(level: WorkerLogLevel, msg: string, data?: Record<string, unknown>): void;
  /** The process started: the agent records its pid in the state file. */
  onProcessStarted(): void;
  /** The run is over (ended, lost or never started): the agent forgets it. */
  onEnded(run: SandboxRun): void;
}

/**
 * One sandbox on this worker, from an acquired lease to its release: it renews the lease, runs
 * the process through the runtime, relays input to it, posts its output and reports its status,
 * every write with the lease's fencing token and in order. A write refused because the lease
 * moved on stops the process and every further write.
 */
export class SandboxRun {
  process: RunningSandbox | null = null;
  lost = false;
  readonly abort = new AbortController();
  private stopRequested = false;
  /** The current process is being stopped for a restart: its exit starts it again instead of ending the run. */
  private restartPending = false;
  /** stateVersion of the last restart request handled (the stream and a reconcile may both offer one). */
  private restartHandled = -1;
  private readonly renewTimer: NodeJS.Timeout;
  /** Serialises this sandbox's writes so messages and reports keep their order. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly output: OutputBatcher;
  readonly input: StdinRelay;
  /** Settles once the exit was reported and the lease released. */
  private ended: Promise<void> | null = null;

  constructor(
    readonly sandbox: SandboxFieldsFragment,
    readonly fencingToken: string,
    private readonly deps: SandboxRunDeps,
  ) {
    this.output = new OutputBatcher(() => void this.flush(), deps.outputFlushMs, deps.outputBatchBytes);
    this.input = new StdinRelay(deps.client, this, deps.inputPageSize, (msg, data) => deps.log('warn', msg, data));
    this.renewTimer = setInterval(() => void this.renew(), (deps.leaseTtlSeconds * 1000) / 3);
  }

  /** Starts the process, unless the sandbox was asked to stop meanwhile or cannot be started. */
  async start(): Promise<void> {
    const sandbox = this.sandbox;
    // Fresh placements go STARTING → RUNNING; a sandbox this worker ran before a restart is already RUNNING.
    const current = (await this.read()) ?? sandbox;
    const status = current.status;
    const restarting = status === 'STOPPING' && current.restartRequestedAt !== null;
    if (restarting) {
      // Asked to restart while no process ran here (e.g. this agent was down): start it again.
      this.restartHandled = current.stateVersion;
      if (!(await this.report('STARTING', { reason: 'restarting' }))) {
        await this.release();
        this.cleanup();
        return;
      }
    } else if (status === 'STOPPING') {
      // Asked to stop before it ran here (e.g. while this agent was down): never start it.
      await this.report('STOPPED', { reason: 'stopped before it started' });
      await this.release();
      this.cleanup();
      return;
    }
    if (status === 'SCHEDULED' && !(await this.report('STARTING'))) {
      // Not started: let the next reconcile try again from scratch.
      await this.release();
      this.cleanup();
      return;
    }
    const started = await this.launch(current);
    if (!started) return;
    void this.input.follow();
    if (status !== 'RUNNING') await this.report('RUNNING');
    this.deps.log('info', 'sandbox running', { sandboxId: sandbox.id, pid: started.pid });
    // Everything not delivered yet, including messages sent before the process started.
    await this.input.deliver();
  }

  /** The sandbox as the server has it now (its ports, status, restart flag); null when it cannot be read. */
  private async read(): Promise<SandboxFieldsFragment | null> {
    const current = await this.deps.client.query(SandboxDocument, { id: this.sandbox.id });
    return current.ok ? current.data.sandbox : null;
  }

  /**
   * Spawns the process with the sandbox's environment (its variables and secrets, then what the agent
   * sets itself); an environment that cannot be read or a spawn that fails ends the run.
   */
  private async launch(current: SandboxFieldsFragment): Promise<RunningSandbox | null> {
    const sandbox = this.sandbox;
    // Read on every start and restart, so a restart picks up changed variables and secrets.
    const environment = await this.runtimeEnvironment();
    if (!environment) return null;
    try {
      const started = this.deps.runtime.start(
        {
          sandboxId: sandbox.id,
          name: sandbox.name,
          image: sandbox.image,
          command: sandbox.command,
          cpuMillis: sandbox.resources.cpuMillis,
          memoryMb: sandbox.resources.memoryMb,
          env: {
            // The tenant's and the sandbox's variables and secrets; what the agent sets itself wins.
            ...environment,
            FLOTILLA_SANDBOX_ID: sandbox.id,
            FLOTILLA_SANDBOX_NAME: sandbox.name,
            FLOTILLA_IMAGE: sandbox.image,
            ...portEnvironment(current.ports),
          },
        },
        {
          onLine: (_stream, line) => this.onOutput(line),
          onExit: (exit) => {
            // Stopped for a restart: start it again instead of ending the run.
            this.ended = this.restartPending ? this.relaunch(exit) : this.onExit(exit);
          },
        },
      );
      this.process = started;
      this.deps.onProcessStarted();
      return started;
    } catch (err) {
      await this.report('FAILED', { reason: (err as Error).message, exitCode: 127 });
      this.cleanup();
      await this.release();
      return null;
    }
  }

  /**
   * The variables and decrypted secrets to start the process with, read with this run's fencing
   * token (only the lease holder gets them). Values are never logged. Null when they cannot be
   * read: the lease moved on (the run stops), the server could not be reached (released, tried
   * again at the next reconcile), or it refused (the sandbox is FAILED).
   */
  private async runtimeEnvironment(): Promise<Record<string, string> | null> {
    const result = await this.deps.client.query(RuntimeEnvironmentDocument, {
      sandboxId: this.sandbox.id,
      fencingToken: this.fencingToken,
    });
    const answer = result.ok ? result.data.sandbox?.runtimeEnvironment : null;
    if (answer?.__typename === 'RuntimeEnvironment') {
      return Object.fromEntries(answer.entries.map((entry) => [entry.name, entry.value]));
    }
    const reason = result.ok ? (answer ? answer.message : 'the sandbox is gone') : result.error.message;
    this.deps.log('warn', 'could not read the sandbox environment', { sandboxId: this.sandbox.id, reason });
    if (answer && !this.checkWrite(answer) && this.lost) return null;
    if (!result.ok && result.error.kind !== 'graphql') {
      // The server could not be reached: not the sandbox's fault; the next reconcile starts it again.
      await this.release();
      this.cleanup();
      return null;
    }
    await this.report('FAILED', { reason: `could not read its environment: ${reason}`, exitCode: 127 });
    await this.release();
    this.cleanup();
    return null;
  }

  /** Stops the process and waits until its end is reported. */
  async stop(): Promise<void> {
    this.stopRequested = true;
    if (this.process && !this.process.exited) await this.process.stop(this.deps.stopGraceMs);
    // An agent shutting down must not exit before the STOPPED report is written.
    await this.ended;
  }

  /**
   * A restart request (the sandbox is STOPPING with its restart flag): stops the process the
   * way a stop does (SIGTERM, then SIGKILL after the grace period), then starts it again under
   * the same lease and fencing token (relaunch). A request already handled is ignored.
   */
  async restart(requested: SandboxFieldsFragment): Promise<void> {
    if (this.lost || this.stopRequested || this.restartPending) return;
    if (requested.status !== 'STOPPING' || !requested.restartRequestedAt) return;
    // Not spawned yet (start() is on its way; the next reconcile offers the request again), or
    // already ended on its own (its end is being reported).
    if (!this.process || this.process.exited) return;
    if (requested.stateVersion <= this.restartHandled) return;
    this.restartHandled = requested.stateVersion;
    this.restartPending = true;
    this.deps.log('info', 'restarting the sandbox', { sandboxId: this.sandbox.id, reason: requested.statusReason });
    // The agent status history shows the restart.
    this.reportAgent('IDLE', requested.statusReason ?? 'restart requested');
    await this.process.stop(this.deps.stopGraceMs);
  }

  /** The old process ended for a restart: report STARTING, spawn it again, report RUNNING. */
  private async relaunch(exit: { code: number | null; signal: string | null }): Promise<void> {
    this.restartPending = false;
    await this.flush();
    const how = exit.signal ? `ended by ${exit.signal}` : `exited with ${exit.code}`;
    this.deps.log('info', 'sandbox process ended for a restart', { sandboxId: this.sandbox.id, how });
    // A stop (or delete) that came meanwhile wins: the server refuses STARTING, and the run ends as a stop would.
    if (
      !this.lost &&
      !this.stopRequested &&
      (await this.report('STARTING', { reason: `restarting (the process ${how})` }))
    ) {
      const current = (await this.read()) ?? this.sandbox;
      const started = await this.launch(current);
      if (!started) return;
      await this.report('RUNNING');
      this.reportAgent('IDLE', 'restarted');
      this.deps.log('info', 'sandbox running', { sandboxId: this.sandbox.id, pid: started.pid, restarted: true });
      await this.input.deliver();
      return;
    }
    if (!this.lost) {
      await this.report('STOPPED', { exitCode: exit.code ?? undefined, reason: exit.signal ? how : undefined });
      await this.release();
    }
    this.cleanup();
  }

  /** An agent status written by the agent itself (in order with the process's own status lines). */
  private reportAgent(phase: 'IDLE', activity: string): void {
    if (this.lost) return;
    this.enqueue(() =>
      this.deps.client
        .mutate(ReportAgentStatusDocument, {
          input: { sandboxId: this.sandbox.id, fencingToken: this.fencingToken, phase, activity },
        })
        .then((r) => this.checkWrite(r.ok ? r.data.reportAgentStatus : null)),
    );
  }

  private onOutput(line: string): void {
    if (this.lost) return;
    const question = parseQuestionLine(line);
    if (question) {
      this.ask(question);
      return;
    }
    const status = parseStatusLine(line);
    if (status) {
      this.enqueue(() =>
        this.deps.client
          .mutate(ReportAgentStatusDocument, {
            input: { sandboxId: this.sandbox.id, fencingToken: this.fencingToken, ...status },
          })
          .then((r) => this.checkWrite(r.ok ? r.data.reportAgentStatus : null)),
      );
      return;
    }
    this.output.add(line);
  }

  /** Posts the process's question after the output printed before it; its answer comes back through the input relay. */
  private ask(question: NonNullable<ReturnType<typeof parseQuestionLine>>): void {
    void this.flush();
    this.enqueue(() =>
      this.deps.client
        .mutate(PostAgentQuestionDocument, {
          input: { sandboxId: this.sandbox.id, fencingToken: this.fencingToken, ...question },
        })
        .then((r) => {
          const outcome = r.ok ? r.data.postAgentQuestion : null;
          if (outcome && outcome.__typename !== 'QuestionPayload' && 'message' in outcome)
            this.deps.log('warn', 'question refused', { sandboxId: this.sandbox.id, error: outcome.message });
          return this.checkWrite(outcome);
        }),
    );
  }

  /** Posts the buffered output lines as one agent message. */
  private flush(): Promise<unknown> {
    this.output.cancelTimer();
    if (this.output.empty || this.lost) return this.queue;
    const body = this.output.take();
    return this.enqueue(() =>
      this.deps.client
        .mutate(PostAgentMessageDocument, {
          input: { sandboxId: this.sandbox.id, fencingToken: this.fencingToken, body },
        })
        .then((r) => this.checkWrite(r.ok ? r.data.postAgentMessage : null)),
    );
  }

  private enqueue(write: () => Promise<unknown>): Promise<unknown> {
    this.queue = this.queue
      .then(() => (this.lost ? undefined : write()))
      .catch((err: Error) => this.deps.log('warn', 'write failed', { error: err.message }));
    return this.queue;
  }

  private async onExit(exit: { code: number | null; signal: string | null }): Promise<void> {
    await this.flush();
    if (!this.lost) {
      await this.input.failUndelivered('the process exited');
      const ok = this.stopRequested || exit.code === 0;
      await this.report(ok ? 'STOPPED' : 'FAILED', {
        exitCode: exit.code ?? undefined,
        reason: exit.signal ? `ended by ${exit.signal}` : exit.code === 0 ? undefined : `exited with ${exit.code}`,
      });
      await this.release();
    }
    this.cleanup();
    this.deps.log('info', 'sandbox ended', { sandboxId: this.sandbox.id, code: exit.code, signal: exit.signal });
  }

  private async renew(): Promise<void> {
    if (this.lost) return;
    const result = await this.deps.client.mutate(RenewLeaseDocument, {
      input: { sandboxId: this.sandbox.id, fencingToken: this.fencingToken, ttlSeconds: this.deps.leaseTtlSeconds },
    });
    if (result.ok) this.checkWrite(result.data.renewLease);
  }

  private async release(): Promise<void> {
    if (this.lost) return;
    await this.deps.client.mutate(ReleaseLeaseDocument, {
      input: { sandboxId: this.sandbox.id, fencingToken: this.fencingToken },
    });
  }

  private async report(
    status: 'STARTING' | 'RUNNING' | 'STOPPED' | 'FAILED',
    extra: { exitCode?: number; reason?: string } = {},
  ): Promise<boolean> {
    if (this.lost) return false;
    const result = (await this.enqueue(() =>
      this.deps.client.mutate(ReportSandboxStatusDocument, {
        input: { sandboxId: this.sandbox.id, fencingToken: this.fencingToken, status, ...extra },
      }),
    )) as Awaited<ReturnType<FlotillaClient['mutate']>> | undefined;
    if (!result?.ok) return false;
    return this.checkWrite(
      (result.data as { reportSandboxStatus: { __typename?: string; code?: string } }).reportSandboxStatus,
    );
  }

  /** A write of the input relay was refused. */
  refused(outcome: { __typename?: string; code?: string }): void {
    this.checkWrite(outcome);
  }

  /** A refused write because the lease moved on means this worker lost the sandbox: stop it at once. */
  private checkWrite(outcome: { __typename?: string; code?: string } | null): boolean {
    if (!outcome || (outcome.__typename ?? '').endsWith('Payload')) return !!outcome;
    if (outcome.code && LOST_LEASE.has(outcome.code) && !this.lost) {
      this.lost = true;
      this.deps.log('warn', 'lease lost; stopping the sandbox and its writes', {
        sandboxId: this.sandbox.id,
        code: outcome.code,
      });
      void this.process?.stop(0);
      this.cleanup();
    }
    return false;
  }

  private cleanup(): void {
    clearInterval(this.renewTimer);
    this.output.cancelTimer();
    this.abort.abort();
    this.deps.onEnded(this);
  }
}
