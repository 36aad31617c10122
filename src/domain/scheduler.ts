import { Sandbox } from '../db/entities/sandbox.js';
import { freePorts, Worker } from '../db/entities/worker.js';
import type { Em } from '../db/orm.js';
import {
  applyTransition,
  PLACEMENT_BACKOFF_BASE_MS,
  PLACEMENT_BACKOFF_MAX_MS,
  placementBackoffMs,
  reserveCapacity,
  UNPLACED_STATUSES,
} from './lifecycle.js';
import { lockedRead } from './locks.js';
import { inTransaction, recordEvent } from './outbox.js';
import { allocatePorts } from './ports.js';

/** Where a sandbox may run: a region and labels its worker must carry. */
export interface PlacementConstraints {
  region?: string | null;
  labels?: Record<string, string> | null;
}

/** How many waiting sandboxes one read of a placement pass takes (it pages through all of them). */
export const SCHEDULE_BATCH = 500;

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

/** Whether the worker could hold the sandbox: its tenant's or shared, room and free ports enough, region and labels. */
export function fitsOn(
  worker: Worker,
  sandbox: Pick<Sandbox, 'tenant' | 'cpuMillis' | 'memoryMb' | 'ports' | 'placement'>,
): boolean {
  return (
    (!worker.tenant || worker.tenant.id === sandbox.tenant.id) &&
    worker.capacityCpuMillis - worker.allocatedCpuMillis >= sandbox.cpuMillis &&
    worker.capacityMemoryMb - worker.allocatedMemoryMb >= sandbox.memoryMb &&
    (sandbox.ports === 0 || freePorts(worker) >= sandbox.ports) &&
    matchesConstraints(worker, sandbox.placement)
  );
}

/** ONLINE with a fresh heartbeat (the status a reader sees, see effectiveWorkerStatus). */
function liveWorkers(now: Date, heartbeatTtlSeconds: number) {
  const horizon = heartbeatHorizon(now, heartbeatTtlSeconds);
  return {
    status: 'ONLINE' as const,
    $or: [{ lastHeartbeatAt: { $gte: horizon } }, { lastHeartbeatAt: null, createdAt: { $gte: horizon } }],
  };
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
  const workers = await em.find(
    Worker,
    { $and: [liveWorkers(now, heartbeatTtlSeconds), { $or: [{ tenant: null }, { tenant: sandbox.tenant.id }] }] },
    { disableIdentityMap: true, orderBy: { id: 'asc' } },
  );
  const fits = workers.filter((w) => fitsOn(w, sandbox));
  const load = (w: Worker) =>
    Math.max(
      w.allocatedCpuMillis / Math.max(w.capacityCpuMillis, 1),
      w.allocatedMemoryMb / Math.max(w.capacityMemoryMb, 1),
    );
  return fits.sort((a, b) => Number(a.tenant === null) - Number(b.tenant === null) || load(a) - load(b));
}

/**
 * Why no worker eligible for the tenant could ever hold the sandbox (too little CPU and memory,
 * or a port range too small), or null when one is big enough for it at all.
 */
export async function whyNoWorkerCouldFit(
  em: Em,
  tenantId: string,
  wanted: Pick<Sandbox, 'cpuMillis' | 'memoryMb' | 'ports'>,
): Promise<string | null> {
  const { cpuMillis, memoryMb, ports } = wanted;
  const big = {
    $or: [{ tenant: null }, { tenant: tenantId }],
    capacityCpuMillis: { $gte: cpuMillis },
    capacityMemoryMb: { $gte: memoryMb },
  };
  if (ports === 0) {
    return (await em.count(Worker, big)) > 0
      ? null
      : `no worker available to this tenant has ${cpuMillis} mCPU and ${memoryMb} MB`;
  }
  const workers = await em.find(Worker, big, { fields: ['portsFrom', 'portsTo'], disableIdentityMap: true });
  if (workers.length === 0) return `no worker available to this tenant has ${cpuMillis} mCPU and ${memoryMb} MB`;
  const widest = Math.max(
    ...workers.map((w) => freePorts({ portsFrom: w.portsFrom, portsTo: w.portsTo, allocatedPorts: 0 })),
  );
  return widest >= ports
    ? null
    : `no worker available to this tenant with ${cpuMillis} mCPU and ${memoryMb} MB offers ${ports} ports (the largest port range has ${widest})`;
}

/**
 * Places a row-locked PENDING or LOST sandbox on the best worker that still has room,
 * reserving the capacity and allocating its ports in the same transaction; emits SANDBOX_STATUS_CHANGED and
 * SANDBOX_ASSIGNED. Returns the worker id, or null when nothing fits (the sandbox waits).
 */
export async function placeSandbox(
  em: Em,
  sandbox: Sandbox,
  now: Date,
  heartbeatTtlSeconds: number,
): Promise<string | null> {
  for (const candidate of await placementCandidates(em, sandbox, now, heartbeatTtlSeconds)) {
    if (!(await reserveCapacity(em, candidate.id, sandbox))) continue;
    await allocatePorts(em, sandbox, candidate, now);
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

/** Which waiting sandboxes a placement pass tries. */
export type PlacementScope =
  /** Every waiting sandbox: something happened that can let any of them be placed (a trigger). */
  | 'all'
  /** Those whose backoff retry is due by the given moment; the ones still unplaced back off further. */
  | { dueBy: Date };

export interface PlacementPass {
  placed: number;
  /** False when no live worker had any free capacity: nothing could be placed at all. */
  anyWorker: boolean;
}

/** What a placement pass reads of a waiting sandbox. */
type Waiting = Pick<Sandbox, 'id' | 'tenant' | 'cpuMillis' | 'memoryMb' | 'ports' | 'placement' | 'placementAttempts'>;

/** Backoff retries are counted up to the one whose delay reaches the cap. */
const MAX_COUNTED_ATTEMPTS = Math.ceil(Math.log2(PLACEMENT_BACKOFF_MAX_MS / PLACEMENT_BACKOFF_BASE_MS));

/**
 * One placement pass, oldest first. The live workers with room are read once and matched in
 * memory, so a sandbox nothing can hold costs no statement of its own; each one that fits is
 * placed in its own transaction (row-locked, re-checked, capacity reserved: safe beside other
 * replicas and concurrent creates). With no live worker with room, it reads nothing else.
 */
export async function placeWaiting(
  fork: () => Em,
  now: Date,
  heartbeatTtlSeconds: number,
  scope: PlacementScope,
): Promise<PlacementPass> {
  const read = fork();
  const workers = (
    await read.find(Worker, liveWorkers(now, heartbeatTtlSeconds), {
      disableIdentityMap: true,
      orderBy: { id: 'asc' },
    })
  ).filter((w) => w.allocatedCpuMillis < w.capacityCpuMillis && w.allocatedMemoryMb < w.capacityMemoryMb);
  if (workers.length === 0) return { placed: 0, anyWorker: false };
  let placed = 0;
  let after: string | null = null;
  for (;;) {
    const batch: Waiting[] = await read.find(
      Sandbox,
      {
        status: { $in: [...UNPLACED_STATUSES] },
        ...(scope === 'all' ? {} : { nextPlacementAt: { $lte: scope.dueBy } }),
        ...(after ? { id: { $gt: after } } : {}),
      },
      {
        fields: ['id', 'tenant', 'cpuMillis', 'memoryMb', 'ports', 'placement', 'placementAttempts'],
        orderBy: { id: 'asc' },
        limit: SCHEDULE_BATCH,
        disableIdentityMap: true,
      },
    );
    const unplaced: Waiting[] = [];
    for (const waiting of batch) {
      if (!workers.some((w) => fitsOn(w, waiting))) {
        unplaced.push(waiting);
        continue;
      }
      const workerId = await inTransaction(fork(), async (tx) => {
        const sandbox = await tx.findOne(Sandbox, waiting.id, lockedRead(tx));
        if (!sandbox || !UNPLACED_STATUSES.includes(sandbox.status)) return undefined;
        return placeSandbox(tx, sandbox, now, heartbeatTtlSeconds);
      });
      if (workerId === null) unplaced.push(waiting);
      const worker = workerId ? workers.find((w) => w.id === workerId) : undefined;
      if (worker) {
        placed += 1;
        worker.allocatedCpuMillis += waiting.cpuMillis;
        worker.allocatedMemoryMb += waiting.memoryMb;
        worker.allocatedPorts += waiting.ports;
      }
    }
    if (scope !== 'all') await backOff(read, unplaced, now);
    if (batch.length < SCHEDULE_BATCH) break;
    after = batch[batch.length - 1].id;
  }
  return { placed, anyWorker: true };
}

/** Moves the next retry of sandboxes that are still waiting further out: one statement per backoff step. */
async function backOff(em: Em, sandboxes: readonly Waiting[], now: Date): Promise<void> {
  const byAttempts = new Map<number, string[]>();
  for (const s of sandboxes) {
    const attempts = Math.min(s.placementAttempts + 1, MAX_COUNTED_ATTEMPTS);
    const ids = byAttempts.get(attempts);
    if (ids) ids.push(s.id);
    else byAttempts.set(attempts, [s.id]);
  }
  for (const [attempts, ids] of byAttempts) {
    await em.nativeUpdate(
      Sandbox,
      { id: { $in: ids }, status: { $in: [...UNPLACED_STATUSES] } },
      { placementAttempts: attempts, nextPlacementAt: new Date(now.getTime() + placementBackoffMs(attempts)) },
    );
  }
}
