import { type FilterQuery, raw } from '@mikro-orm/core';
import { z } from 'zod';
import { hasTenantRole, type Identity, visibleTenantIds } from '../auth/identity.js';
import { Lease } from '../db/entities/lease.js';
import { PortAllocation } from '../db/entities/port-allocation.js';
import {
  ACTIVE_SANDBOX,
  type AgentPhase,
  Sandbox,
  type SandboxStatus,
  STDIN_FRAMINGS,
  type StdinFraming,
} from '../db/entities/sandbox.js';
import { Tenant } from '../db/entities/tenant.js';
import { ACTIVE_WORKER } from '../db/entities/worker.js';
import { isUuid } from '../db/ids.js';
import { databaseKindOf, type Em } from '../db/orm.js';
import { findRows } from '../db/rows.js';
import { audited } from './audit.js';
import type { ServiceContext } from './context.js';
import { forgetSandboxEnv } from './env.js';
import {
  ForbiddenError,
  InvalidTransitionError,
  NoCapacityError,
  NotFoundError,
  PolicyViolationError,
  QuotaExceededError,
  ValidationError,
} from './errors.js';
import { DEFAULT_MAX_PORTS_PER_SANDBOX } from './input-limits.js';
import { labelsInput, parseInput, regionInput } from './inputs.js';
import { requireFencingToken } from './leases.js';
import {
  applyTransition,
  cancelRestart,
  isHolding,
  isRestarting,
  startWaiting,
  WORKER_REPORTABLE,
} from './lifecycle.js';
import { lockedRead, lockRow } from './locks.js';
import { recordEvent } from './outbox.js';
import { keysetPage, type Page, type PageArgs } from './pagination.js';
import { placeSandbox, whyNoWorkerCouldFit } from './scheduler.js';
import { dueBy } from './sweep-signals.js';
import { RESERVING_QUOTA } from './tenants.js';
import { transactionNow } from './time.js';
import { type Resources, validateLabels, visibleWorkersFilter } from './workers.js';

export const SANDBOX_NAME_MAX_LENGTH = 200;
export const IMAGE_MAX_LENGTH = 500;
export const COMMAND_MAX_ARGS = 256;
export const STATUS_REASON_MAX_LENGTH = 2_000;
export const AGENT_ACTIVITY_MAX_LENGTH = 2_000;

export interface CreateSandboxInput {
  tenantId: string;
  name: string;
  image: string;
  command?: string[] | null;
  resources: Resources;
  /** Raw from the caller; validated here. */
  labels?: unknown;
  ttlSeconds?: number | null;
  /** Worker labels raw from the caller; validated here. */
  placement?: { region?: string | null; workerLabels?: unknown } | null;
  /** How many ports of its worker's range it needs (default 0). */
  ports?: number | null;
  /** How messages are written to its process's stdin (default PLAIN). */
  stdinFraming?: StdinFraming | null;
}

/** The `CreateSandboxInput` model: what a caller sends, checked once, here. */
export const createSandboxInput = z.object({
  name: z
    .string()
    .trim()
    .min(1, `name must be 1 to ${SANDBOX_NAME_MAX_LENGTH} characters`)
    .max(SANDBOX_NAME_MAX_LENGTH, `name must be 1 to ${SANDBOX_NAME_MAX_LENGTH} characters`),
  image: z
    .string()
    .trim()
    .min(1, `image must be 1 to ${IMAGE_MAX_LENGTH} characters`)
    .max(IMAGE_MAX_LENGTH, `image must be 1 to ${IMAGE_MAX_LENGTH} characters`),
  command: z
    .array(z.string())
    .max(COMMAND_MAX_ARGS, `command has at most ${COMMAND_MAX_ARGS} arguments`)
    .nullish()
    .transform((command) => command ?? []),
  resources: z.object({
    cpuMillis: z.number().int().positive('resources.cpuMillis must be a positive whole number'),
    memoryMb: z.number().int().positive('resources.memoryMb must be a positive whole number'),
  }),
  ttlSeconds: z
    .number()
    .int('ttlSeconds must be a positive whole number')
    .positive('ttlSeconds must be a positive whole number')
    .nullish()
    .transform((ttl) => ttl ?? null),
  labels: labelsInput.nullish().transform((labels) => labels ?? {}),
  placement: z
    .object({
      region: regionInput,
      workerLabels: labelsInput.nullish().transform((labels) => labels ?? {}),
    })
    .nullish()
    .transform((placement) => (placement ? { region: placement.region, labels: placement.workerLabels } : null)),
  ports: z
    .number()
    .int('ports must be a whole number, 0 or more')
    .min(0, 'ports must be a whole number, 0 or more')
    .nullish()
    .transform((ports) => ports ?? 0),
  stdinFraming: z
    .enum(STDIN_FRAMINGS)
    .nullish()
    .transform((framing) => framing ?? 'PLAIN'),
});

export interface SandboxFilter {
  status?: readonly SandboxStatus[] | null;
  workerId?: string | null;
  /** Raw from the caller; validated here. */
  label?: unknown;
  nameContains?: string | null;
}

export interface RestartSandboxInput {
  sandboxId: string;
  /** Why (optional): kept in the status reason, `restart requested: <reason>`. */
  reason?: string | null;
}

export interface ReportSandboxStatusInput {
  sandboxId: string;
  fencingToken: string;
  status: SandboxStatus;
  reason?: string | null;
  exitCode?: number | null;
}

export interface ReportAgentStatusInput {
  sandboxId: string;
  fencingToken: string;
  phase: AgentPhase;
  activity?: string | null;
}

/** Glob match for image patterns: `*` is any run of characters, `?` one character. */
export function imageMatches(image: string, glob: string): boolean {
  const pattern = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${pattern}$`).test(image);
}

/** Which sandboxes a caller may read: its tenants', or (a worker) those placed on it. */
export function visibleSandboxesFilter(identity: Identity): FilterQuery<Sandbox> {
  if (identity.platformAdmin) return {};
  if (identity.workerId) return { worker: identity.workerId };
  return { tenant: { $in: visibleTenantIds(identity) ?? [] } };
}

/** `visibleSandboxesFilter` for a row already read (shared reads of live subscriptions). */
export function sandboxVisibleTo(identity: Identity, sandbox: Sandbox): boolean {
  if (identity.platformAdmin) return true;
  if (identity.workerId) return sandbox.worker?.id === identity.workerId;
  return (visibleTenantIds(identity) ?? []).includes(sandbox.tenant.id);
}

export class SandboxService {
  constructor(private readonly ctx: ServiceContext) {}

  /**
   * Checks policy and quota, places the sandbox and reserves capacity, in one transaction.
   * The tenant row is locked first (Postgres), so concurrent creates of one tenant queue
   * up behind each other and each sees the usage the previous one committed.
   */
  async create(input: CreateSandboxInput): Promise<Sandbox> {
    return audited(
      this.ctx,
      'createSandbox',
      { tenantId: input.tenantId },
      async (em) => {
        if (!isUuid(input.tenantId) || !hasTenantRole(this.ctx.identity, input.tenantId, 'OPERATOR')) {
          throw new ForbiddenError('creating sandboxes needs the OPERATOR role in the tenant');
        }
        const {
          name,
          image,
          command,
          resources,
          ttlSeconds: ttl,
          labels,
          placement,
          ports,
          stdinFraming,
        } = parseInput(createSandboxInput, input, 'input');
        const { cpuMillis, memoryMb } = resources;
        const maxPorts = this.ctx.settings.maxPortsPerSandbox ?? DEFAULT_MAX_PORTS_PER_SANDBOX;
        if (ports > maxPorts) throw new ValidationError(`ports must be at most ${maxPorts}`, 'input.ports');

        await lockRow(em, 'tenants', input.tenantId);
        const tenant = await em.findOne(Tenant, input.tenantId, { refresh: true });
        if (!tenant) throw new ForbiddenError('creating sandboxes needs the OPERATOR role in the tenant');

        const { allowedImages, maxSandboxTtlSeconds } = tenant.policy;
        if (allowedImages.length > 0 && !allowedImages.some((glob) => imageMatches(image, glob))) {
          throw new PolicyViolationError(`image "${image}" is not allowed by the tenant's policy`, 'allowedImages');
        }
        if (maxSandboxTtlSeconds !== null && (ttl === null || ttl > maxSandboxTtlSeconds)) {
          throw new PolicyViolationError(
            `ttlSeconds must be set and at most ${maxSandboxTtlSeconds}`,
            'maxSandboxTtlSeconds',
          );
        }

        const usage = await reservedBy(em, tenant.id);
        const { quota } = tenant;
        if (usage.sandboxes + 1 > quota.maxSandboxes)
          throw new QuotaExceededError('sandboxes', quota.maxSandboxes, usage.sandboxes + 1);
        if (usage.cpuMillis + cpuMillis > quota.maxCpuMillis)
          throw new QuotaExceededError('cpuMillis', quota.maxCpuMillis, usage.cpuMillis + cpuMillis);
        if (usage.memoryMb + memoryMb > quota.maxMemoryMb)
          throw new QuotaExceededError('memoryMb', quota.maxMemoryMb, usage.memoryMb + memoryMb);
        const unfit = await whyNoWorkerCouldFit(em, tenant.id, { cpuMillis, memoryMb, ports });
        if (unfit) throw new NoCapacityError(unfit);

        // The placement judges workers' heartbeat age: on the one time source (time.ts).
        const now = await transactionNow(em, this.ctx.clock);
        const sandbox = em.create(Sandbox, {
          tenant: tenant.id,
          name,
          image,
          command,
          cpuMillis,
          memoryMb,
          ports,
          stdinFraming,
          labels,
          placement,
          status: 'PENDING',
          ttlSeconds: ttl,
          expiresAt: ttl === null ? null : new Date(now.getTime() + ttl * 1000),
          createdAt: now,
        });
        startWaiting(sandbox, now);
        if (sandbox.expiresAt) dueBy(em, sandbox.expiresAt);
        await em.flush();
        recordEvent(
          em,
          {
            type: 'SANDBOX_STATUS_CHANGED',
            tenantId: tenant.id,
            sandboxId: sandbox.id,
            data: { from: null, to: 'PENDING', stateVersion: 0 },
          },
          now,
        );
        // No room now: it stays PENDING until a trigger (capacity released, a worker online…) or its backoff retry.
        await placeSandbox(em, sandbox, now, this.ctx.settings.heartbeatTtlSeconds);
        return sandbox;
      },
      (sandbox) => ({ targetId: sandbox.id }),
    );
  }

  /**
   * Asks the worker to stop it (SANDBOX_STOP_REQUESTED); unplaced sandboxes stop at once. A
   * restart under way becomes a plain stop: it ends STOPPED and releases what it held.
   */
  async stop(sandboxId: string): Promise<Sandbox> {
    return this.operate('stopSandbox', sandboxId, async (em, sandbox, now) => {
      if (isRestarting(sandbox)) {
        await cancelRestart(em, sandbox, now, 'stop requested');
        await this.requestStop(em, sandbox, now);
        return;
      }
      if (sandbox.status === 'STOPPING' || sandbox.status === 'STOPPED') return;
      const onWorker = isHolding(sandbox.status) && sandbox.worker !== null;
      await applyTransition(em, sandbox, onWorker ? 'STOPPING' : 'STOPPED', now, { reason: 'stop requested' });
      if (onWorker) await this.requestStop(em, sandbox, now);
    });
  }

  /**
   * Restarts a RUNNING sandbox where it is: RUNNING → STOPPING with the restart flag and the
   * reason, and SANDBOX_RESTART_REQUESTED for its worker, which stops the process (grace period,
   * then kill) and reports STARTING, then RUNNING. Capacity, ports, placement and lease are kept.
   * Asking again while it restarts changes nothing; any other status is InvalidTransitionError.
   */
  async restart(input: RestartSandboxInput): Promise<Sandbox> {
    return this.operate('restartSandbox', input.sandboxId, async (em, sandbox, now) => {
      if (isRestarting(sandbox)) return;
      if (sandbox.status !== 'RUNNING' || !sandbox.worker)
        throw new InvalidTransitionError(
          sandbox.status,
          'STOPPING',
          `only a RUNNING sandbox can be restarted; this one is ${sandbox.status}`,
        );
      const given = input.reason?.trim();
      const reason = given ? `restart requested: ${given}` : 'restart requested';
      await applyTransition(em, sandbox, 'STOPPING', now, { reason, restart: true });
      recordEvent(
        em,
        {
          type: 'SANDBOX_RESTART_REQUESTED',
          tenantId: sandbox.tenant.id,
          sandboxId: sandbox.id,
          workerId: sandbox.worker.id,
          data: { workerId: sandbox.worker.id, reason: given || null },
        },
        now,
      );
    });
  }

  /** Soft delete: released, hidden from lists, kept for audit; its own variables and secrets go (env.ts). */
  async delete(sandboxId: string): Promise<Sandbox> {
    return this.operate('deleteSandbox', sandboxId, async (em, sandbox, now) => {
      const onWorker = isHolding(sandbox.status) && sandbox.worker !== null;
      await applyTransition(em, sandbox, 'DELETED', now, { reason: 'deleted' });
      await forgetSandboxEnv(em, sandbox.id);
      if (onWorker) await this.requestStop(em, sandbox, now);
    });
  }

  /** A worker's report about a sandbox it holds the lease of; a stale token changes nothing. */
  async reportStatus(input: ReportSandboxStatusInput): Promise<Sandbox> {
    return audited(
      this.ctx,
      'reportSandboxStatus',
      { targetId: input.sandboxId },
      async (em) => {
        const sandbox = await requireFencingToken(
          em,
          this.ctx.identity,
          'sandbox:report',
          input.sandboxId,
          input.fencingToken,
          this.ctx.clock,
        );
        if (!WORKER_REPORTABLE.includes(input.status)) throw new InvalidTransitionError(sandbox.status, input.status);
        if (input.status === sandbox.status) return sandbox;
        const reason = input.reason ? input.reason.slice(0, STATUS_REASON_MAX_LENGTH) : null;
        await applyTransition(em, sandbox, input.status, this.ctx.clock.now(), {
          reason,
          exitCode: input.exitCode ?? undefined,
        });
        return sandbox;
      },
      (s) => ({ tenantId: s.tenant.id }),
    );
  }

  async reportAgentStatus(input: ReportAgentStatusInput): Promise<Sandbox> {
    return audited(
      this.ctx,
      'reportAgentStatus',
      { targetId: input.sandboxId },
      async (em) => {
        const now = this.ctx.clock.now();
        const sandbox = await requireFencingToken(
          em,
          this.ctx.identity,
          'sandbox:report',
          input.sandboxId,
          input.fencingToken,
          this.ctx.clock,
        );
        const from = sandbox.agentPhase;
        sandbox.agentPhase = input.phase;
        sandbox.agentActivity = input.activity ? input.activity.slice(0, AGENT_ACTIVITY_MAX_LENGTH) : null;
        sandbox.agentUpdatedAt = now;
        await em.flush();
        recordEvent(
          em,
          {
            type: 'AGENT_STATUS_CHANGED',
            tenantId: sandbox.tenant.id,
            sandboxId: sandbox.id,
            workerId: sandbox.worker?.id ?? null,
            data: { from, to: input.phase },
          },
          now,
        );
        return sandbox;
      },
      (s) => ({ tenantId: s.tenant.id }),
    );
  }

  async findVisibleByIds(ids: readonly string[]): Promise<Sandbox[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const { sharedReads, identity } = this.ctx;
    if (sharedReads) return (await sharedReads.byIds(Sandbox, wanted)).filter((s) => sandboxVisibleTo(identity, s));
    return findRows(this.ctx.em, Sandbox, { $and: [{ id: { $in: wanted } }, visibleSandboxesFilter(identity)] });
  }

  /** A tenant's sandboxes, oldest first; another tenant's reads like a missing one. */
  async listForTenant(tenantId: string, filter: SandboxFilter | null, args: PageArgs): Promise<Page<Sandbox>> {
    if (!isUuid(tenantId) || !hasTenantRole(this.ctx.identity, tenantId, 'VIEWER'))
      throw new NotFoundError('Tenant', tenantId);
    return keysetPage(
      this.ctx.em,
      Sandbox,
      () => ({ $and: [{ tenant: tenantId }, ...filterClauses(this.ctx.em, filter)] }),
      args,
    );
  }

  /** Sandboxes placed on a worker the caller may see. */
  async listForWorker(workerId: string, args: PageArgs): Promise<Page<Sandbox>> {
    return keysetPage(
      this.ctx.em,
      Sandbox,
      { $and: [{ worker: workerId }, visibleSandboxesFilter(this.ctx.identity)] },
      args,
    );
  }

  /** Leases of the given sandboxes, for the per-request loader. */
  async leasesOf(sandboxIds: readonly string[]): Promise<Lease[]> {
    if (sandboxIds.length === 0) return [];
    // A lease reads as absent when its holder does not (another worker, to a worker token; a
    // deleted worker): Lease.holder is non-null, and what a caller cannot see must look missing.
    return this.ctx.em.find(Lease, {
      sandbox: { $in: [...sandboxIds] },
      holder: { $and: [ACTIVE_WORKER, visibleWorkersFilter(this.ctx.identity)] },
    });
  }

  /** Ports held by the given sandboxes, for the per-request loader (rows: no unit of work). */
  async portsOf(sandboxIds: readonly string[]): Promise<PortAllocation[]> {
    if (sandboxIds.length === 0) return [];
    return findRows(this.ctx.em, PortAllocation, { sandbox: { $in: [...sandboxIds] } }, { orderBy: { name: 'asc' } });
  }

  async leasesByIds(ids: readonly string[]): Promise<Lease[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    return this.ctx.em.find(Lease, {
      id: { $in: wanted },
      sandbox: { $and: [ACTIVE_SANDBOX, visibleSandboxesFilter(this.ctx.identity)] },
      holder: { $and: [ACTIVE_WORKER, visibleWorkersFilter(this.ctx.identity)] },
    });
  }

  private async operate(
    action: string,
    sandboxId: string,
    change: (em: Em, sandbox: Sandbox, now: Date) => Promise<void>,
  ): Promise<Sandbox> {
    return audited(
      this.ctx,
      action,
      { targetId: sandboxId },
      async (em) => {
        const sandbox = await this.lockVisible(em, sandboxId);
        if (!hasTenantRole(this.ctx.identity, sandbox.tenant.id, 'OPERATOR'))
          throw new ForbiddenError(`${action} needs the OPERATOR role in the tenant`);
        await change(em, sandbox, this.ctx.clock.now());
        return sandbox;
      },
      (s) => ({ tenantId: s.tenant.id }),
    );
  }

  private async lockVisible(em: Em, sandboxId: string): Promise<Sandbox> {
    const sandbox = isUuid(sandboxId) ? await em.findOne(Sandbox, sandboxId, lockedRead(em)) : null;
    if (!sandbox || !hasTenantRole(this.ctx.identity, sandbox.tenant.id, 'VIEWER'))
      throw new NotFoundError('Sandbox', sandboxId);
    return sandbox;
  }

  private async requestStop(em: Em, sandbox: Sandbox, now: Date): Promise<void> {
    recordEvent(
      em,
      {
        type: 'SANDBOX_STOP_REQUESTED',
        tenantId: sandbox.tenant.id,
        sandboxId: sandbox.id,
        workerId: sandbox.worker?.id ?? null,
        data: { workerId: sandbox.worker?.id ?? null },
      },
      now,
    );
  }
}

/** What a tenant reserves now (the sandboxes RESERVING_QUOTA counts), read inside the transaction. */
async function reservedBy(
  em: Em,
  tenantId: string,
): Promise<{ sandboxes: number; cpuMillis: number; memoryMb: number }> {
  const rows: { n: number | string; cpu: number | string | null; mem: number | string | null }[] = await em
    .createQueryBuilder(Sandbox, 's')
    .select([raw('count(*) as n'), raw('sum(s.cpu_millis) as cpu'), raw('sum(s.memory_mb) as mem')])
    .where({ tenant: tenantId, ...RESERVING_QUOTA })
    .execute('all', false);
  const row = rows[0];
  return { sandboxes: Number(row?.n ?? 0), cpuMillis: Number(row?.cpu ?? 0), memoryMb: Number(row?.mem ?? 0) };
}

function filterClauses(em: Em, filter: SandboxFilter | null): FilterQuery<Sandbox>[] {
  if (!filter) return [];
  const clauses: FilterQuery<Sandbox>[] = [];
  if (filter.status?.length) clauses.push({ status: { $in: [...filter.status] } });
  // An id that cannot exist matches nothing (and never reaches a uuid column).
  if (filter.workerId) clauses.push(isUuid(filter.workerId) ? { worker: filter.workerId } : { id: { $in: [] } });
  if (filter.nameContains) {
    // A plain substring, case-insensitive: no LIKE, so `%` and `_` in the search are characters.
    const position = databaseKindOf(em) === 'postgres' ? 'strpos' : 'instr';
    const needle = filter.nameContains.toLowerCase();
    clauses.push({
      [raw((alias: string) => `${position}(lower(${alias}.name), ?)`, [needle])]: { $gt: 0 },
    } as FilterQuery<Sandbox>);
  }
  if (filter.label) {
    // Labels are matched exactly, key by key, in JSON (both drivers support this path syntax).
    for (const [key, value] of Object.entries(validateLabels(filter.label, 'filter.label'))) {
      clauses.push({ labels: { [key]: value } } as FilterQuery<Sandbox>);
    }
  }
  return clauses;
}
