import type { Sandbox, SandboxStatus } from '../db/entities/sandbox.js';
import type { Em } from '../db/orm.js';
import { FINISHED_FOR_DELIVERY, failUndelivered } from './delivery-state.js';
import { InvalidTransitionError } from './errors.js';
import { runUpdate } from './locks.js';
import { recordEvent } from './outbox.js';
import { releasePorts } from './ports.js';
import { CANCELS_QUESTIONS, cancelOpenQuestions } from './question-lifecycle.js';
import { wantPlacement } from './sweep-signals.js';

/**
 * The sandbox state machine (architecture.md): PENDING → SCHEDULED → STARTING → RUNNING →
 * STOPPING → STOPPED; FAILED and LOST from the active states; LOST sandboxes are placed
 * again (→ SCHEDULED, or back to PENDING to wait for capacity); DELETED from anywhere.
 * A restart is RUNNING → STOPPING → STARTING → RUNNING on the same placement: STOPPING →
 * STARTING is allowed only while the restart flag is set (`RestartState`).
 */
const TRANSITIONS: Record<SandboxStatus, readonly SandboxStatus[]> = {
  PENDING: ['SCHEDULED', 'STOPPED', 'FAILED', 'DELETED'],
  SCHEDULED: ['STARTING', 'RUNNING', 'STOPPING', 'STOPPED', 'FAILED', 'LOST', 'DELETED'],
  STARTING: ['RUNNING', 'STOPPING', 'STOPPED', 'FAILED', 'LOST', 'DELETED'],
  RUNNING: ['STOPPING', 'STOPPED', 'FAILED', 'LOST', 'DELETED'],
  STOPPING: ['STARTING', 'STOPPED', 'FAILED', 'LOST', 'DELETED'],
  LOST: ['SCHEDULED', 'PENDING', 'STOPPED', 'FAILED', 'DELETED'],
  STOPPED: ['DELETED'],
  FAILED: ['DELETED'],
  DELETED: [],
};

/** States in which the sandbox holds capacity on its worker. */
export const HOLDING_STATUSES: readonly SandboxStatus[] = ['SCHEDULED', 'STARTING', 'RUNNING', 'STOPPING'];
/** States a worker may be working on (a lease makes sense): placed on it. A LOST sandbox waits to be placed again. */
export const LEASABLE_STATUSES: readonly SandboxStatus[] = ['SCHEDULED', 'STARTING', 'RUNNING', 'STOPPING'];
/** States a worker may report about a sandbox it holds the lease of. */
export const WORKER_REPORTABLE: readonly SandboxStatus[] = ['STARTING', 'RUNNING', 'STOPPING', 'STOPPED', 'FAILED'];
/** Waiting for a worker. */
export const UNPLACED_STATUSES: readonly SandboxStatus[] = ['PENDING', 'LOST'];

/**
 * The backoff retry of a waiting sandbox (the scheduler's safety net: placement is otherwise
 * driven by what can make it succeed): the first retry after this, then twice as long each
 * time, up to the cap.
 */
export const PLACEMENT_BACKOFF_BASE_MS = 5_000;
export const PLACEMENT_BACKOFF_MAX_MS = 60_000;

/** The delay before the retry that follows `attempts` retries. */
export function placementBackoffMs(attempts: number): number {
  return Math.min(PLACEMENT_BACKOFF_MAX_MS, PLACEMENT_BACKOFF_BASE_MS * 2 ** Math.min(attempts, 20));
}

/** Stamps a sandbox that starts waiting for a worker with its first backoff retry. */
export function startWaiting(sandbox: Sandbox, now: Date): void {
  sandbox.placementAttempts = 0;
  sandbox.nextPlacementAt = new Date(now.getTime() + placementBackoffMs(0));
}

/** Whether the sandbox is STOPPING for a restart (its flag is set); other transitions clear the flag. */
export interface RestartState {
  restarting?: boolean;
}

export function isRestarting(sandbox: Pick<Sandbox, 'status' | 'restartRequestedAt'>): boolean {
  return sandbox.status === 'STOPPING' && sandbox.restartRequestedAt !== null;
}

/**
 * Edges out of STOPPING that only a restart takes: back to STARTING, and LOST when its worker goes
 * away (it was meant to run on, so it is placed again). A plain stop ends STOPPED, whatever happens.
 */
const RESTART_ONLY: readonly SandboxStatus[] = ['STARTING', 'LOST'];

export function canTransition(from: SandboxStatus, to: SandboxStatus, state: RestartState = {}): boolean {
  if (from === 'STOPPING' && RESTART_ONLY.includes(to)) return state.restarting === true;
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(from: SandboxStatus, to: SandboxStatus, state: RestartState = {}): void {
  if (!canTransition(from, to, state)) throw new InvalidTransitionError(from, to);
}

export function isHolding(status: SandboxStatus): boolean {
  return HOLDING_STATUSES.includes(status);
}

/**
 * States that keep capacity reserved on the worker. A stop request releases it at once (the
 * worker is told to stop; it takes no new work for that sandbox), so STOPPING does not reserve,
 * unless it is STOPPING for a restart: the process comes back on the same placement.
 */
export const RESERVING_CAPACITY: readonly SandboxStatus[] = ['SCHEDULED', 'STARTING', 'RUNNING'];

export function reservesCapacity(status: SandboxStatus, state: RestartState = {}): boolean {
  return RESERVING_CAPACITY.includes(status) || (status === 'STOPPING' && state.restarting === true);
}

// ---------------------------------------------------------------- transitions with their effects

export interface TransitionDetails {
  reason?: string | null;
  exitCode?: number | null;
  /** RUNNING → STOPPING for a restart: sets the restart flag (capacity, ports and placement are kept). */
  restart?: boolean;
}

/**
 * Moves a (row-locked) sandbox to `to`: checks the state machine, releases its worker's
 * capacity when it stops reserving it (stop requests included), stamps times, bumps stateVersion and appends
 * SANDBOX_STATUS_CHANGED — all in the caller's transaction. Flushes. Its ports are freed once it stops holding its worker;
 * its agent's open questions are cancelled once it stops running (question-lifecycle.ts).
 */
export async function applyTransition(
  em: Em,
  sandbox: Sandbox,
  to: SandboxStatus,
  now: Date,
  details: TransitionDetails = {},
): Promise<void> {
  const from = sandbox.status;
  const wasRestarting = isRestarting(sandbox);
  const restarting = to === 'STOPPING' && details.restart === true;
  if (details.restart && from !== 'RUNNING') throw new InvalidTransitionError(from, to);
  assertTransition(from, to, { restarting: wasRestarting });
  // CPU and memory are free from the stop request on (not for a restart); ports only once the
  // sandbox stops holding its worker (STOPPED, FAILED, LOST, DELETED), since the old process may
  // still listen on them.
  const freesCapacity = reservesCapacity(from, { restarting: wasRestarting }) && !reservesCapacity(to, { restarting });
  const freesPorts = isHolding(from) && !isHolding(to);
  if ((freesCapacity || freesPorts) && sandbox.worker) {
    await releaseCapacity(em, sandbox.worker.id, {
      cpuMillis: freesCapacity ? sandbox.cpuMillis : 0,
      memoryMb: freesCapacity ? sandbox.memoryMb : 0,
      ports: freesPorts ? sandbox.ports : 0,
    });
    if (freesPorts) await releasePorts(em, sandbox);
    wantPlacement(em);
  }
  if (UNPLACED_STATUSES.includes(to)) {
    startWaiting(sandbox, now);
    wantPlacement(em);
  } else {
    sandbox.nextPlacementAt = null;
    sandbox.placementAttempts = 0;
  }
  sandbox.status = to;
  sandbox.restartRequestedAt = restarting ? now : null;
  sandbox.stateVersion += 1;
  if (details.reason !== undefined) sandbox.statusReason = details.reason;
  if (details.exitCode !== undefined) sandbox.exitCode = details.exitCode;
  if (to === 'RUNNING' && !sandbox.startedAt) sandbox.startedAt = now;
  if ((to === 'STOPPED' || to === 'FAILED') && !sandbox.stoppedAt) sandbox.stoppedAt = now;
  if (to === 'DELETED') sandbox.deletedAt = now;
  await em.flush();
  if (CANCELS_QUESTIONS.includes(to)) await cancelOpenQuestions(em, sandbox, now);
  recordEvent(
    em,
    {
      type: 'SANDBOX_STATUS_CHANGED',
      tenantId: sandbox.tenant.id,
      sandboxId: sandbox.id,
      workerId: sandbox.worker?.id ?? null,
      data: {
        from,
        to,
        stateVersion: sandbox.stateVersion,
        ...(details.reason ? { reason: details.reason } : {}),
        ...(restarting ? { restart: true } : {}),
      },
    },
    now,
  );
  // No process will read what it has not received (the worker fails what it could not write first, with its reason).
  if (FINISHED_FOR_DELIVERY.includes(to) && !FINISHED_FOR_DELIVERY.includes(from))
    await failUndelivered(em, sandbox, now);
}

/**
 * A stop asked for while a restart is under way: the restart becomes a plain stop (its flag is
 * cleared, its CPU and memory released as for any stop request; the ports once it is STOPPED).
 * The status stays STOPPING, but the state changed: stateVersion bumps and SANDBOX_STATUS_CHANGED
 * (STOPPING → STOPPING, without `restart`) tells waiters that STARTING no longer follows.
 */
export async function cancelRestart(em: Em, sandbox: Sandbox, now: Date, reason: string): Promise<void> {
  if (!isRestarting(sandbox)) return;
  if (sandbox.worker)
    await releaseCapacity(em, sandbox.worker.id, {
      cpuMillis: sandbox.cpuMillis,
      memoryMb: sandbox.memoryMb,
      ports: 0,
    });
  wantPlacement(em);
  sandbox.restartRequestedAt = null;
  sandbox.statusReason = reason;
  sandbox.stateVersion += 1;
  await em.flush();
  recordEvent(
    em,
    {
      type: 'SANDBOX_STATUS_CHANGED',
      tenantId: sandbox.tenant.id,
      sandboxId: sandbox.id,
      workerId: sandbox.worker?.id ?? null,
      data: { from: 'STOPPING', to: 'STOPPING', stateVersion: sandbox.stateVersion, reason },
    },
    now,
  );
}

/** What a sandbox reserves on its worker: CPU, memory and a number of ports of its range. */
export type Reservation = Pick<Sandbox, 'cpuMillis' | 'memoryMb' | 'ports'>;

/**
 * Reserves capacity (the port count included) on a worker with one conditional UPDATE:
 * concurrent reservations can never over-commit it (Postgres re-checks the condition on the
 * row it waited for, and holds the row lock until commit).
 */
export async function reserveCapacity(em: Em, workerId: string, wanted: Reservation): Promise<boolean> {
  const { cpuMillis, memoryMb, ports } = wanted;
  const changed = await runUpdate(
    em,
    `update workers set allocated_cpu_millis = allocated_cpu_millis + ?, allocated_memory_mb = allocated_memory_mb + ?,
        allocated_ports = allocated_ports + ?
      where id = ? and deleted_at is null and status = 'ONLINE'
        and allocated_cpu_millis + ? <= capacity_cpu_millis and allocated_memory_mb + ? <= capacity_memory_mb
        and (? = 0 or allocated_ports + ? <= coalesce(ports_to - ports_from + 1, 0))`,
    [cpuMillis, memoryMb, ports, workerId, cpuMillis, memoryMb, ports, ports],
  );
  return changed === 1;
}

export async function releaseCapacity(em: Em, workerId: string, held: Reservation): Promise<void> {
  const { cpuMillis, memoryMb, ports } = held;
  await runUpdate(
    em,
    `update workers set allocated_cpu_millis = case when allocated_cpu_millis >= ? then allocated_cpu_millis - ? else 0 end,
        allocated_memory_mb = case when allocated_memory_mb >= ? then allocated_memory_mb - ? else 0 end,
        allocated_ports = case when allocated_ports >= ? then allocated_ports - ? else 0 end
      where id = ?`,
    [cpuMillis, cpuMillis, memoryMb, memoryMb, ports, ports, workerId],
  );
}

/**
 * The one rule for "the worker holding this sandbox is gone" (swept offline, lease expired with
 * it, or deleted): a sandbox that was stopping is done (STOPPED); any other, a restarting one
 * included (it was meant to run on), may run again elsewhere (LOST, placed again by the
 * scheduler). Either way everything it held is released. In the caller's transaction.
 */
export async function releaseFromGoneWorker(em: Em, sandbox: Sandbox, now: Date, reason: string): Promise<void> {
  const done = sandbox.status === 'STOPPING' && !isRestarting(sandbox);
  await applyTransition(em, sandbox, done ? 'STOPPED' : 'LOST', now, { reason });
}
