import { type FilterQuery, UniqueConstraintViolationException } from '@mikro-orm/core';
import { z } from 'zod';
import { hasTenantRole, type Identity, visibleTenantIds } from '../auth/identity.js';
import { WITH_DELETED } from '../db/entities/base.js';
import { Lease } from '../db/entities/lease.js';
import { Sandbox } from '../db/entities/sandbox.js';
import { Tenant } from '../db/entities/tenant.js';
import { Worker, type WorkerStatus } from '../db/entities/worker.js';
import { isUuid } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { findRows } from '../db/rows.js';
import { audited } from './audit.js';
import type { ServiceContext } from './context.js';
import {
  AlreadyExistsError,
  ForbiddenError,
  LeaseConflictError,
  NotFoundError,
  UnavailableError,
  ValidationError,
} from './errors.js';
import { PUBLIC_BASE_URL_MAX_LENGTH, WORKER_PORT_RANGE_MAX_SIZE, WORKER_VERSION_MAX_LENGTH } from './input-limits.js';
import { jsonInput, labelsInput, parseInput, regionInput } from './inputs.js';
import { HOLDING_STATUSES, releaseFromGoneWorker } from './lifecycle.js';
import { lockedRead } from './locks.js';
import { recordEvent } from './outbox.js';
import { keysetPage, type Page, type PageArgs } from './pagination.js';
import { revokeToken } from './revocation.js';
import { heartbeatHorizon } from './scheduler.js';
import { dueBy, wantPlacement } from './sweep-signals.js';
import { estimatedNow, transactionNow } from './time.js';

/** What a worker token may do, and nothing else. */
export const WORKER_SCOPES = ['worker:heartbeat', 'worker:lease', 'sandbox:report', 'message:post'] as const;
export const WORKER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
/** Upper bound of one worker's advertised capacity (a sanity check on input). */
export const MAX_WORKER_CPU_MILLIS = 1_024_000;
export const MAX_WORKER_MEMORY_MB = 16_777_216;

export interface Resources {
  cpuMillis: number;
  memoryMb: number;
}

export interface RegisterWorkerInput {
  name: string;
  region?: string | null;
  /** Raw from the caller; validated here. */
  labels?: unknown;
  capacity: Resources;
  tenantId?: string | null;
  /** The ports it offers sandboxes, and where they are reached; absent = no ports. Validated here. */
  ports?: { from: number; to: number; publicBaseUrl?: string | null } | null;
}

const PORT_RANGE = 'ports must satisfy 1 ≤ from ≤ to ≤ 65535';

/** The `WorkerPortsInput` model: a port range of at most WORKER_PORT_RANGE_MAX_SIZE ports and an http(s) base URL. */
export const workerPortsInput = z
  .object({
    from: z.number().int(PORT_RANGE).min(1, PORT_RANGE).max(65_535, PORT_RANGE),
    to: z.number().int(PORT_RANGE).min(1, PORT_RANGE).max(65_535, PORT_RANGE),
    publicBaseUrl: z
      .string()
      .trim()
      .max(PUBLIC_BASE_URL_MAX_LENGTH, `publicBaseUrl must be at most ${PUBLIC_BASE_URL_MAX_LENGTH} characters`)
      .nullish()
      .transform((url, ctx) => {
        if (!url) return null;
        const parsed = URL.canParse(url) ? new URL(url) : null;
        if (
          !parsed ||
          (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') ||
          parsed.port !== '' ||
          (parsed.pathname !== '/' && parsed.pathname !== '') ||
          parsed.search !== '' ||
          parsed.hash !== '' ||
          parsed.username !== '' ||
          parsed.password !== ''
        ) {
          ctx.addIssue({
            code: 'custom',
            message:
              'publicBaseUrl must be an http or https URL of a host alone, e.g. http://10.0.0.7 (no port or path)',
          });
          return z.NEVER;
        }
        return `${parsed.protocol}//${parsed.host}`;
      }),
  })
  .check((ctx) => {
    const { from, to } = ctx.value;
    if (from > to) ctx.issues.push({ code: 'custom', message: PORT_RANGE, path: ['to'], input: ctx.value });
    else if (to - from + 1 > WORKER_PORT_RANGE_MAX_SIZE)
      ctx.issues.push({
        code: 'custom',
        message: `a port range has at most ${WORKER_PORT_RANGE_MAX_SIZE} ports`,
        path: ['to'],
        input: ctx.value,
      });
  })
  .nullish()
  .transform((ports) => ports ?? null);

export interface HeartbeatInput {
  workerId?: string | null;
  /** Raw from the caller: a JSON object. */
  observed?: unknown;
  version?: string | null;
}

export interface WorkerWithToken {
  worker: Worker;
  token: string;
}

/** The status a reader sees: a stale heartbeat reads as OFFLINE even before the sweeper runs. */
export function effectiveWorkerStatus(worker: Worker, now: Date, heartbeatTtlSeconds: number): WorkerStatus {
  if (worker.status === 'OFFLINE') return 'OFFLINE';
  const lastSign = worker.lastHeartbeatAt ?? worker.createdAt;
  return lastSign.getTime() < heartbeatHorizon(now, heartbeatTtlSeconds).getTime() ? 'OFFLINE' : worker.status;
}

/** Which workers a caller may see: its own, shared ones, and its tenants' dedicated ones. */
export function visibleWorkersFilter(identity: Identity): FilterQuery<Worker> {
  if (identity.platformAdmin) return {};
  if (identity.workerId) return { id: identity.workerId };
  const tenants = visibleTenantIds(identity) ?? [];
  return { $or: [{ tenant: null }, { tenant: { $in: tenants } }] };
}

/** `visibleWorkersFilter` for a row already read (shared reads of live subscriptions). */
export function workerVisibleTo(identity: Identity, worker: Worker): boolean {
  if (identity.platformAdmin) return true;
  if (identity.workerId) return worker.id === identity.workerId;
  return !worker.tenant || (visibleTenantIds(identity) ?? []).includes(worker.tenant.id);
}

/** Stores a worker's new status and appends WORKER_STATUS_CHANGED, in the caller's transaction. */
async function changeStatus(em: Em, worker: Worker, to: WorkerStatus, now: Date): Promise<void> {
  const from = worker.status;
  worker.status = to;
  await em.flush();
  recordEvent(
    em,
    { type: 'WORKER_STATUS_CHANGED', tenantId: worker.tenant?.id ?? null, workerId: worker.id, data: { from, to } },
    now,
  );
}

export class WorkerService {
  constructor(private readonly ctx: ServiceContext) {}

  async register(input: RegisterWorkerInput): Promise<WorkerWithToken> {
    return audited(
      this.ctx,
      'registerWorker',
      { tenantId: input.tenantId ?? null },
      async (em) => {
        const tenantId = input.tenantId ?? null;
        this.requireManager(tenantId);
        if (tenantId && (!isUuid(tenantId) || !(await em.count(Tenant, { id: tenantId }))))
          throw new NotFoundError('Tenant', tenantId);
        const name = input.name.trim();
        if (!WORKER_NAME_PATTERN.test(name))
          throw new ValidationError(
            'name must be 1 to 200 characters of A-Z, a-z, 0-9, ".", "_" and "-"',
            'input.name',
          );
        validateCapacity(input.capacity);
        const region = parseInput(regionInput, input.region, 'input.region');
        const labels = validateLabels(input.labels ?? {}, 'input.labels');
        const ports = parseInput(workerPortsInput, input.ports, 'input.ports');
        // Names stay taken by deleted workers (the unique index covers them).
        if (await em.count(Worker, { name }, WITH_DELETED)) throw new AlreadyExistsError('Worker', 'name', name);
        const now = this.ctx.clock.now();
        const worker = em.create(Worker, {
          name,
          tenant: tenantId,
          region,
          labels,
          capacityCpuMillis: input.capacity.cpuMillis,
          capacityMemoryMb: input.capacity.memoryMb,
          portsFrom: ports?.from ?? null,
          portsTo: ports?.to ?? null,
          publicBaseUrl: ports?.publicBaseUrl ?? null,
          status: 'ONLINE',
          // Heartbeat age counts from here until the first heartbeat: on the one time source.
          createdAt: await transactionNow(em, this.ctx.clock),
        });
        try {
          await em.flush();
        } catch (err) {
          if (err instanceof UniqueConstraintViolationException) throw new AlreadyExistsError('Worker', 'name', name);
          throw err;
        }
        const token = await this.mintFor(em, worker, now);
        recordEvent(
          em,
          { type: 'WORKER_STATUS_CHANGED', tenantId, workerId: worker.id, data: { from: null, to: 'ONLINE' } },
          now,
        );
        this.cameOnline(em, now);
        return { worker, token };
      },
      (r) => ({ targetId: r.worker.id }),
    );
  }

  /** Revokes the worker's current token and mints a new one, shown once. */
  async rotateToken(workerId: string): Promise<WorkerWithToken> {
    let revoked: string | null = null;
    const rotated = await audited(this.ctx, 'rotateWorkerToken', { targetId: workerId }, async (em) => {
      const worker = await this.manageable(em, workerId);
      const now = this.ctx.clock.now();
      revoked = worker.tokenId;
      if (worker.tokenId) await revokeToken(em, worker.tokenId, worker.tenant?.id ?? null, now);
      const token = await this.mintFor(em, worker, now);
      return { worker, token };
    });
    this.endSessionsOf(revoked);
    return rotated;
  }

  /** After a commit that revoked a worker token: this process's sockets close now (other replicas' streams end from the log). */
  private endSessionsOf(tokenId: string | null): void {
    if (tokenId) this.ctx.tokens?.endSessions({ tokenIds: [tokenId] });
  }

  /** DRAINING: keeps its sandboxes, takes no new placements. */
  async drain(workerId: string): Promise<Worker> {
    return audited(this.ctx, 'drainWorker', { targetId: workerId }, async (em) => {
      const worker = await this.manageable(em, workerId);
      const now = this.ctx.clock.now();
      worker.drainRequestedAt ??= now;
      if (worker.status !== 'DRAINING') await changeStatus(em, worker, 'DRAINING', now);
      return worker;
    });
  }

  /** Lifts a drain: the worker takes new placements again (once it is online). */
  async undrain(workerId: string): Promise<Worker> {
    return audited(this.ctx, 'undrainWorker', { targetId: workerId }, async (em) => {
      const worker = await this.manageable(em, workerId);
      const now = this.ctx.clock.now();
      worker.drainRequestedAt = null;
      if (worker.status === 'DRAINING') {
        await changeStatus(em, worker, 'ONLINE', now);
        this.cameOnline(em, now);
      }
      return worker;
    });
  }

  /** Refused while the worker holds a live lease; its other placed sandboxes go LOST and are placed again. */
  async delete(workerId: string): Promise<Worker> {
    let revoked: string | null = null;
    const deleted = await audited(this.ctx, 'deleteWorker', { targetId: workerId }, async (em) => {
      // Lock order everywhere is sandbox before worker: read the worker unlocked here.
      await this.manageable(em, workerId, false);
      const now = this.ctx.clock.now();
      const held = await em.count(Lease, {
        holder: workerId,
        expiresAt: { $gt: await transactionNow(em, this.ctx.clock) },
        sandbox: { status: { $in: [...HOLDING_STATUSES] } },
      });
      if (held > 0)
        throw new LeaseConflictError(
          `worker still holds ${held} lease(s); drain it and let them finish or expire first`,
        );
      const placed = await em.find(
        Sandbox,
        { worker: workerId, status: { $in: [...HOLDING_STATUSES] } },
        { fields: ['id'], orderBy: { id: 'asc' } },
      );
      // Lock every sandbox before the first release touches the worker row.
      const locked: Sandbox[] = [];
      for (const { id } of placed) locked.push(await em.findOneOrFail(Sandbox, id, lockedRead(em)));
      for (const sandbox of locked) {
        if (HOLDING_STATUSES.includes(sandbox.status) && sandbox.worker?.id === workerId) {
          await releaseFromGoneWorker(em, sandbox, now, 'worker deleted');
        }
      }
      const worker = await em.findOneOrFail(Worker, workerId, lockedRead(em));
      const from = worker.status;
      worker.deletedAt = now;
      worker.status = 'OFFLINE';
      revoked = worker.tokenId;
      if (worker.tokenId) await revokeToken(em, worker.tokenId, worker.tenant?.id ?? null, now);
      await em.flush();
      recordEvent(
        em,
        {
          type: 'WORKER_STATUS_CHANGED',
          tenantId: worker.tenant?.id ?? null,
          workerId: worker.id,
          data: { from, to: 'OFFLINE', deleted: true },
        },
        now,
      );
      return worker;
    });
    this.endSessionsOf(revoked);
    return deleted;
  }

  /**
   * A worker's own heartbeat: proves it is alive, reports what it observes and its version. Only
   * a heartbeat that changes the worker's status (back from OFFLINE) is audited; routine ones
   * change no state worth an entry (docs/security.md).
   */
  async heartbeat(input: HeartbeatInput): Promise<Worker> {
    const workerId = this.ctx.identity.workerId;
    let statusChanged = false;
    return audited(
      this.ctx,
      'heartbeat',
      { targetId: workerId },
      async (em) => {
        if (!workerId || !this.ctx.identity.scopes.has('worker:heartbeat'))
          throw new ForbiddenError('only a worker token may send heartbeats');
        if (input.workerId && input.workerId !== workerId)
          throw new ForbiddenError('a worker may only heartbeat for itself');
        const worker = await em.findOne(Worker, workerId, lockedRead(em));
        if (!worker) throw new NotFoundError('Worker', workerId);
        const now = await transactionNow(em, this.ctx.clock);
        const from = effectiveWorkerStatus(worker, now, this.ctx.settings.heartbeatTtlSeconds);
        worker.lastHeartbeatAt = now;
        const observed = observedOf(input.observed);
        if (observed) worker.observed = observed;
        if (input.version) worker.version = input.version.slice(0, WORKER_VERSION_MAX_LENGTH);
        // Back from offline: still draining if a drain was asked for and not lifted.
        if (worker.status === 'OFFLINE') worker.status = worker.drainRequestedAt ? 'DRAINING' : 'ONLINE';
        await em.flush();
        const to = worker.status;
        if (from !== to) {
          statusChanged = true;
          recordEvent(
            em,
            { type: 'WORKER_STATUS_CHANGED', tenantId: worker.tenant?.id ?? null, workerId, data: { from, to } },
            now,
          );
          // Back online: waiting sandboxes may fit now (a routine heartbeat frees nothing: capacity
          // is only released by sandbox transitions, which say so themselves).
          if (to === 'ONLINE') this.cameOnline(em, now);
          else dueBy(em, this.heartbeatDeadline(now));
        }
        return worker;
      },
      () => (statusChanged ? {} : null),
    );
  }

  /** In the transaction that made a worker ONLINE: placement may succeed now, and its heartbeat TTL starts. */
  private cameOnline(em: Em, now: Date): void {
    wantPlacement(em);
    dueBy(em, this.heartbeatDeadline(now));
  }

  /** When a worker last heard from at `now` turns OFFLINE unless it heartbeats again. */
  private heartbeatDeadline(now: Date): Date {
    return new Date(now.getTime() + this.ctx.settings.heartbeatTtlSeconds * 1000 + 1);
  }

  async findVisibleByIds(ids: readonly string[]): Promise<Worker[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const { sharedReads, identity } = this.ctx;
    if (sharedReads) return (await sharedReads.byIds(Worker, wanted)).filter((w) => workerVisibleTo(identity, w));
    return findRows(this.ctx.em, Worker, { $and: [{ id: { $in: wanted } }, visibleWorkersFilter(identity)] });
  }

  /** Like findVisibleByIds, deleted workers included: a lease keeps naming its last holder. */
  async findVisibleByIdsWithDeleted(ids: readonly string[]): Promise<Worker[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    return this.ctx.em.find(
      Worker,
      { $and: [{ id: { $in: wanted } }, visibleWorkersFilter(this.ctx.identity)] },
      WITH_DELETED,
    );
  }

  /** Platform admins see every worker; others the shared ones and their tenants' dedicated ones. */
  async list(args: PageArgs & { status?: readonly WorkerStatus[] | null }): Promise<Page<Worker>> {
    let where: FilterQuery<Worker> = visibleWorkersFilter(this.ctx.identity);
    if (args.status?.length) where = { $and: [where, this.statusFilter(args.status)] };
    return keysetPage(this.ctx.em, Worker, where, args);
  }

  /** A tenant's dedicated workers. */
  async listForTenant(tenantId: string, args: PageArgs): Promise<Page<Worker>> {
    if (!hasTenantRole(this.ctx.identity, tenantId, 'VIEWER')) throw new NotFoundError('Tenant', tenantId);
    return keysetPage(this.ctx.em, Worker, { tenant: tenantId }, args);
  }

  /** The status a reader sees: the stored one, OFFLINE once the heartbeat is older than the TTL. */
  statusOf(worker: Worker): WorkerStatus {
    return effectiveWorkerStatus(worker, estimatedNow(this.ctx.clock), this.ctx.settings.heartbeatTtlSeconds);
  }

  /** Stored status and heartbeat age together, so the filter agrees with what `status` reads. */
  private statusFilter(statuses: readonly WorkerStatus[]): FilterQuery<Worker> {
    const horizon = heartbeatHorizon(estimatedNow(this.ctx.clock), this.ctx.settings.heartbeatTtlSeconds);
    const fresh: FilterQuery<Worker> = {
      $or: [{ lastHeartbeatAt: { $gte: horizon } }, { lastHeartbeatAt: null, createdAt: { $gte: horizon } }],
    };
    const stale: FilterQuery<Worker> = {
      $or: [{ lastHeartbeatAt: { $lt: horizon } }, { lastHeartbeatAt: null, createdAt: { $lt: horizon } }],
    };
    const parts: FilterQuery<Worker>[] = [];
    for (const status of statuses) {
      if (status === 'OFFLINE') parts.push({ $or: [{ status: 'OFFLINE' }, stale] });
      else parts.push({ $and: [{ status }, fresh] });
    }
    return { $or: parts };
  }

  private requireManager(tenantId: string | null): void {
    if (this.ctx.identity.platformAdmin) return;
    if (tenantId && hasTenantRole(this.ctx.identity, tenantId, 'ADMIN')) return;
    throw new ForbiddenError(
      tenantId
        ? 'only a tenant ADMIN may manage its dedicated workers'
        : 'only a platform admin may manage shared workers',
    );
  }

  /** The worker (row-locked unless told not to) if the caller may manage it; otherwise it reads as missing. */
  private async manageable(em: Em, workerId: string, lock = true): Promise<Worker> {
    const worker = isUuid(workerId)
      ? await em.findOne(Worker, workerId, lock ? lockedRead(em) : { refresh: true })
      : null;
    if (!worker) throw new NotFoundError('Worker', workerId);
    const tenantId = worker.tenant?.id ?? null;
    if (!this.ctx.identity.platformAdmin) {
      if (!tenantId || !hasTenantRole(this.ctx.identity, tenantId, 'VIEWER'))
        throw new NotFoundError('Worker', workerId);
      this.requireManager(tenantId);
    }
    return worker;
  }

  private async mintFor(em: Em, worker: Worker, now: Date): Promise<string> {
    if (!this.ctx.tokens) throw new UnavailableError('tokens cannot be minted here');
    const minted = await this.ctx.tokens.mint(
      em,
      {
        kind: 'WORKER',
        subject: `worker:${worker.name}`,
        workerId: worker.id,
        scopes: [...WORKER_SCOPES],
        ttlSeconds: null,
      },
      now,
    );
    worker.tokenId = minted.record.id;
    await em.flush();
    return minted.token;
  }
}

function validateCapacity(capacity: Resources): void {
  if (!Number.isInteger(capacity.cpuMillis) || capacity.cpuMillis <= 0 || capacity.cpuMillis > MAX_WORKER_CPU_MILLIS) {
    throw new ValidationError(
      `capacity.cpuMillis must be a whole number from 1 to ${MAX_WORKER_CPU_MILLIS}`,
      'input.capacity.cpuMillis',
    );
  }
  if (!Number.isInteger(capacity.memoryMb) || capacity.memoryMb <= 0 || capacity.memoryMb > MAX_WORKER_MEMORY_MB) {
    throw new ValidationError(
      `capacity.memoryMb must be a whole number from 1 to ${MAX_WORKER_MEMORY_MB}`,
      'input.capacity.memoryMb',
    );
  }
}

/** Labels are a flat object of short strings (the `labelsInput` model). */
export function validateLabels(labels: unknown, field: string): Record<string, string> {
  return parseInput(labelsInput, labels, field);
}

function observedOf(value: unknown): Record<string, unknown> | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value))
    throw new ValidationError('observed must be a JSON object', 'input.observed');
  return parseInput(jsonInput, value, 'input.observed') as Record<string, unknown>;
}
