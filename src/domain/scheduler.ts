import { Sandbox } from '../db/entities/sandbox.js';
import { Worker } from '../db/entities/worker.js';
import type { Em } from '../db/orm.js';
import { applyTransition, reserveCapacity, UNPLACED_STATUSES } from './lifecycle.js';
import { lockedRead } from './locks.js';
import { inTransaction, recordEvent } from './outbox.js';

/** Where a sandbox may run: a region and labels its worker must carry. */
export interface PlacementConstraints {
  region?: string | null;
  labels?: Record<string, string> | null;
}

/** How many unplaced sandboxes one scheduler pass tries to place. */
export const SCHEDULE_BATCH = 100;

/** The moment before which a worker's last sign of life makes it OFFLINE. */
export function heartbeatHorizon(now: Date, heartbeatTtlSeconds: number): Date {
  return new Date(now.getTime() - heartbeatTtlSeconds * 1000);
}

export function matchesConstraints(worker: Worker, constraints: PlacementConstraints | null): boolean {
  if (!constraints) return true;
  if (constraints.region && worker.region !== constraints.region) return false;
  for (const [key, value] of Object.entries(constraints.labels ?? {})) {
    if (worker.labels?.[key] !== value) return false;
  }
  return true;
}

/**
 * Workers that could take the sandbox now, best first: ONLINE with a fresh heartbeat, free
 * capacity, matching region and labels; the tenant's dedicated workers before shared ones,
 * then the least allocated. Read without tracking: the reservation itself re-checks.
 */
export async function placementCandidates(
  em: Em,
  sandbox: Sandbox,
  now: Date,
  heartbeatTtlSeconds: number,
): Promise<Worker[]> {
  const horizon = heartbeatHorizon(now, heartbeatTtlSeconds);
  const workers = await em.find(
    Worker,
    {
      status: 'ONLINE',
      $and: [
        { $or: [{ tenant: null }, { tenant: sandbox.tenant.id }] },
        { $or: [{ lastHeartbeatAt: { $gte: horizon } }, { lastHeartbeatAt: null, createdAt: { $gte: horizon } }] },
      ],
    },
    { disableIdentityMap: true, orderBy: { id: 'asc' } },
  );
  const fits = workers.filter(
    (w) =>
      w.capacityCpuMillis - w.allocatedCpuMillis >= sandbox.cpuMillis &&
      w.capacityMemoryMb - w.allocatedMemoryMb >= sandbox.memoryMb &&
      matchesConstraints(w, sandbox.placement),
  );
  const load = (w: Worker) =>
    Math.max(
      w.allocatedCpuMillis / Math.max(w.capacityCpuMillis, 1),
      w.allocatedMemoryMb / Math.max(w.capacityMemoryMb, 1),
    );
  return fits.sort((a, b) => Number(a.tenant === null) - Number(b.tenant === null) || load(a) - load(b));
}

/** True when some live worker eligible for the tenant is big enough for the sandbox at all. */
export async function anyWorkerCouldFit(
  em: Em,
  tenantId: string,
  cpuMillis: number,
  memoryMb: number,
): Promise<boolean> {
  const count = await em.count(Worker, {
    $or: [{ tenant: null }, { tenant: tenantId }],
    capacityCpuMillis: { $gte: cpuMillis },
    capacityMemoryMb: { $gte: memoryMb },
  });
  return count > 0;
}

/**
 * Places a row-locked PENDING or LOST sandbox on the best worker that still has room,
 * reserving the capacity in the same transaction; emits SANDBOX_STATUS_CHANGED and
 * SANDBOX_ASSIGNED. Returns the worker id, or null when nothing fits (the sandbox waits).
 */
export async function placeSandbox(
  em: Em,
  sandbox: Sandbox,
  now: Date,
  heartbeatTtlSeconds: number,
): Promise<string | null> {
  for (const candidate of await placementCandidates(em, sandbox, now, heartbeatTtlSeconds)) {
    if (!(await reserveCapacity(em, candidate.id, sandbox.cpuMillis, sandbox.memoryMb))) continue;
    sandbox.worker = em.getReference(Worker, candidate.id);
    await applyTransition(em, sandbox, 'SCHEDULED', now, { reason: null });
    recordEvent(
      em,
      {
        type: 'SANDBOX_ASSIGNED',
        tenantId: sandbox.tenant.id,
        sandboxId: sandbox.id,
        workerId: candidate.id,
        data: { workerId: candidate.id, image: sandbox.image },
      },
      now,
    );
    return candidate.id;
  }
  return null;
}

/** One scheduler pass: tries to place waiting sandboxes, oldest first, each in its own transaction. */
export async function schedulePending(em: Em, now: Date, heartbeatTtlSeconds: number): Promise<number> {
  const waiting = await em
    .fork()
    .find(
      Sandbox,
      { status: { $in: [...UNPLACED_STATUSES] } },
      { orderBy: { id: 'asc' }, limit: SCHEDULE_BATCH, fields: ['id'] },
    );
  let placed = 0;
  for (const { id } of waiting) {
    const ok = await inTransaction(em.fork(), async (tx) => {
      const sandbox = await tx.findOne(Sandbox, id, lockedRead(tx));
      if (!sandbox || !UNPLACED_STATUSES.includes(sandbox.status)) return false;
      return (await placeSandbox(tx, sandbox, now, heartbeatTtlSeconds)) !== null;
    });
    if (ok) placed += 1;
  }
  return placed;
}
