import { SANDBOX_STATUSES, type Sandbox, type SandboxStatus } from '../db/entities/sandbox.js';
import { StreamAccess } from '../events/authorize.js';
import type { EventHub, EventSubscription } from '../events/hub.js';
import type { ServiceContext } from './context.js';
import { NotFoundError, UnavailableError, ValidationError } from './errors.js';
import { canTransition, isRestarting } from './lifecycle.js';
import { SandboxService } from './sandboxes.js';

/** How long `waitForSandbox` waits when the caller names no timeout. */
export const WAIT_DEFAULT_TIMEOUT_SECONDS = 30;
/** The longest wait one request may ask for; a longer one is several requests (the SDK loops). */
export const WAIT_MAX_TIMEOUT_SECONDS = 300;

/**
 * How a wait ended. REACHED: the sandbox is (or was, at the answer) in one of the statuses.
 * TIMED_OUT: the timeout passed first. UNREACHABLE: the sandbox is in a status from which the
 * lifecycle leads to none of them (e.g. FAILED while waiting for RUNNING): waiting longer cannot
 * help. INTERRUPTED: the server is shutting down; ask again (another replica answers).
 */
export type WaitOutcome = 'REACHED' | 'TIMED_OUT' | 'UNREACHABLE' | 'INTERRUPTED';

export interface SandboxWait {
  /** The sandbox as read when the wait ended. */
  sandbox: Sandbox;
  /** The status the wait ended on: the one reached, or the sandbox's status at the end. */
  status: SandboxStatus;
  outcome: WaitOutcome;
}

export interface WaitForSandboxInput {
  sandboxId: string;
  statuses: readonly SandboxStatus[];
  timeoutSeconds?: number | null;
  /** The request's own signal: the caller went away, so the wait ends and frees what it holds. */
  signal?: AbortSignal | null;
}

/**
 * Statuses the lifecycle can still lead to from `from` (itself included). A sandbox STOPPING for
 * a restart goes on to STARTING (and so RUNNING); any later STOPPING is a plain stop.
 */
function reachableFrom(from: SandboxStatus, restarting: boolean): Set<SandboxStatus> {
  const seen = new Set<SandboxStatus>([from]);
  const queue: SandboxStatus[] = [from];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    for (const to of SANDBOX_STATUSES) {
      if (!seen.has(to) && canTransition(next, to, { restarting: restarting && next === from })) {
        seen.add(to);
        queue.push(to);
      }
    }
  }
  return seen;
}

/**
 * Waits for a sandbox to reach one of a set of statuses, on the event log: it follows the
 * sandbox's SANDBOX_STATUS_CHANGED events through this process's hub (which reads each new batch
 * of the log once for every subscriber), never by reading the sandbox again and again. The hub
 * subscription is opened before the current status is read, so a change committed in between
 * arrives as an event; events the read already saw are told apart by `stateVersion`.
 */
export class SandboxWaitService {
  constructor(private readonly ctx: ServiceContext) {}

  async waitFor(input: WaitForSandboxInput): Promise<SandboxWait> {
    const targets = validate(input);
    const timeoutSeconds = input.timeoutSeconds ?? WAIT_DEFAULT_TIMEOUT_SECONDS;
    // Visibility and the tenant first: a sandbox the caller cannot see answers before anything is held.
    const first = await this.read(input.sandboxId);
    const settled = judge(first, targets);
    if (settled || timeoutSeconds === 0)
      return settled ?? { sandbox: first, status: first.status, outcome: 'TIMED_OUT' };

    // Held like a stream of the sandbox: revoking the token or losing the tenant ends the wait.
    const access = new StreamAccess(this.ctx.identity, { tenantId: first.tenant.id, role: 'VIEWER' });
    const stream = await this.hub().subscribe({
      match: { tenantId: first.tenant.id, sandboxId: first.id, types: ['SANDBOX_STATUS_CHANGED'] },
      authorize: (e) => access.sees(e),
      principal: access,
    });
    try {
      // Read again now that every later change reaches the stream.
      const current = await this.read(input.sandboxId);
      return judge(current, targets) ?? (await this.follow(stream, current, targets, timeoutSeconds, input.signal));
    } finally {
      await stream.return?.();
    }
  }

  private async follow(
    stream: EventSubscription,
    current: Sandbox,
    targets: ReadonlySet<SandboxStatus>,
    timeoutSeconds: number,
    signal: AbortSignal | null | undefined,
  ): Promise<SandboxWait> {
    let stateVersion = current.stateVersion;
    const ending = endingOf(timeoutSeconds * 1000, signal, this.ctx.stopping);
    try {
      for (;;) {
        const step = await Promise.race([stream.next(), ending.ended]);
        if (step === 'abandoned') throw new UnavailableError('the caller went away');
        if (typeof step === 'string') {
          const last = await this.read(current.id);
          return judge(last, targets) ?? { sandbox: last, status: last.status, outcome: stepOutcome(step) };
        }
        // The stream ends only when the hub ends it (token revoked, server stopping): say so.
        if (step.done) throw new UnavailableError('the event stream ended; wait again');
        const { to, stateVersion: version, restart } = step.value.data;
        if (typeof version !== 'number' || version <= stateVersion || typeof to !== 'string') continue;
        stateVersion = version;
        const status = to as SandboxStatus;
        if (targets.has(status) || status === 'DELETED' || !reachesAny(status, targets, restart === true)) {
          const last = await this.read(current.id);
          return { sandbox: last, status, outcome: targets.has(status) ? 'REACHED' : 'UNREACHABLE' };
        }
      }
    } finally {
      ending.dispose();
    }
  }

  /** The sandbox as committed now (a fresh fork: nothing cached), or NotFound as for any read. */
  private async read(sandboxId: string): Promise<Sandbox> {
    const reads = new SandboxService({ ...this.ctx, em: this.ctx.em.fork() });
    const [sandbox] = await reads.findVisibleByIds([sandboxId]);
    if (!sandbox || sandbox.status === 'DELETED') throw new NotFoundError('Sandbox', sandboxId);
    return sandbox;
  }

  private hub(): EventHub {
    const hub = this.ctx.events?.();
    if (!hub) throw new UnavailableError('live events are not available yet');
    return hub;
  }
}

type Ending = 'timeout' | 'abandoned' | 'stopping';

/** Resolves with why a wait must end without an event; `dispose` clears the timer and the listeners. */
function endingOf(
  timeoutMs: number,
  signal: AbortSignal | null | undefined,
  stopping: AbortSignal | null | undefined,
): { ended: Promise<Ending>; dispose: () => void } {
  let end: (why: Ending) => void = () => undefined;
  const ended = new Promise<Ending>((resolve) => {
    end = resolve;
  });
  const timer = setTimeout(() => end('timeout'), timeoutMs);
  const abandoned = () => end('abandoned');
  const stop = () => end('stopping');
  signal?.addEventListener('abort', abandoned, { once: true });
  stopping?.addEventListener('abort', stop, { once: true });
  if (signal?.aborted) abandoned();
  if (stopping?.aborted) stop();
  return {
    ended,
    dispose: () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abandoned);
      stopping?.removeEventListener('abort', stop);
    },
  };
}

function stepOutcome(step: 'timeout' | 'stopping'): WaitOutcome {
  return step === 'timeout' ? 'TIMED_OUT' : 'INTERRUPTED';
}

function reachesAny(from: SandboxStatus, targets: ReadonlySet<SandboxStatus>, restarting: boolean): boolean {
  const reachable = reachableFrom(from, restarting);
  for (const target of targets) if (reachable.has(target)) return true;
  return false;
}

/** The answer a sandbox's current row already gives: reached, or no longer reachable; null: wait. */
function judge(sandbox: Sandbox, targets: ReadonlySet<SandboxStatus>): SandboxWait | null {
  if (targets.has(sandbox.status)) return { sandbox, status: sandbox.status, outcome: 'REACHED' };
  if (!reachesAny(sandbox.status, targets, isRestarting(sandbox)))
    return { sandbox, status: sandbox.status, outcome: 'UNREACHABLE' };
  return null;
}

function validate(input: WaitForSandboxInput): ReadonlySet<SandboxStatus> {
  if (input.statuses.length === 0) throw new ValidationError('name at least one status to wait for', 'statuses');
  if (input.statuses.includes('DELETED'))
    throw new ValidationError('a deleted sandbox reads as missing: wait for STOPPED or FAILED instead', 'statuses');
  const timeout = input.timeoutSeconds;
  if (
    timeout !== null &&
    timeout !== undefined &&
    (!Number.isInteger(timeout) || timeout < 0 || timeout > WAIT_MAX_TIMEOUT_SECONDS)
  )
    throw new ValidationError(`timeoutSeconds must be between 0 and ${WAIT_MAX_TIMEOUT_SECONDS}`, 'timeoutSeconds');
  return new Set(input.statuses);
}
