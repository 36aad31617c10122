import { type FilterQuery, raw, UniqueConstraintViolationException } from '@mikro-orm/core';
import { hasTenantRole, ROLE_RANK, visibleTenantIds } from '../auth/identity.js';
import { AuditEntry } from '../db/entities/audit-entry.js';
import { WITH_DELETED } from '../db/entities/base.js';
import { Member, TENANT_ROLES, type TenantRole } from '../db/entities/member.js';
import { Sandbox } from '../db/entities/sandbox.js';
import { Tenant, type TenantPolicy, type TenantQuota } from '../db/entities/tenant.js';
import { isUuid } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { findRows } from '../db/rows.js';
import { audited } from './audit.js';
import type { ServiceContext } from './context.js';
import { AlreadyExistsError, ForbiddenError, NotFoundError, ValidationError } from './errors.js';
import { IMAGE_PATTERN_MAX_LENGTH } from './input-limits.js';
import { lockedRead } from './locks.js';
import { validateMessageRetention } from './message-retention.js';
import { recordEvent } from './outbox.js';
import { keysetPage, type Page, type PageArgs } from './pagination.js';
import { dueBy, wantPlacement } from './sweep-signals.js';

export const TENANT_SLUG_PATTERN = /^[a-z0-9-]{3,40}$/;
export const TENANT_NAME_MAX_LENGTH = 200;

/** What a new tenant may use unless its creator says otherwise. */
export const DEFAULT_QUOTA: TenantQuota = { maxSandboxes: 10, maxCpuMillis: 8_000, maxMemoryMb: 16_384 };
export const DEFAULT_POLICY: TenantPolicy = { allowedImages: [], maxSandboxTtlSeconds: null };

/**
 * Sandbox states that count against the tenant's quota. LOST is one: it waits to be placed
 * again, like PENDING, so its slot cannot be taken by a new sandbox meanwhile.
 */
export const RESERVING_STATUSES = ['PENDING', 'SCHEDULED', 'STARTING', 'RUNNING', 'LOST'] as const;

/** The sandboxes counted against the quota: RESERVING_STATUSES, and those STOPPING for a restart (they come back). */
export const RESERVING_QUOTA = {
  $or: [{ status: { $in: [...RESERVING_STATUSES] } }, { status: 'STOPPING', restartRequestedAt: { $ne: null } }],
} as const;

export interface CreateTenantInput {
  slug: string;
  name: string;
  quota?: Partial<TenantQuota> | null;
  policy?: Partial<TenantPolicy> | null;
}

export interface UpdateTenantInput {
  tenantId: string;
  name?: string | null;
  quota?: Partial<TenantQuota> | null;
  policy?: Partial<TenantPolicy> | null;
  /** Absent: unchanged; null: the platform's message retention (off unless set); days: older messages are pruned. */
  messageRetentionDays?: number | null;
}

export interface AddMemberInput {
  tenantId: string;
  subject: string;
  role: TenantRole;
}

export const MEMBER_SUBJECT_MAX_LENGTH = 300;

export interface TenantUsage {
  sandboxes: number;
  cpuMillis: number;
  memoryMb: number;
}

export class TenantService {
  constructor(private readonly ctx: ServiceContext) {}

  async create(input: CreateTenantInput): Promise<Tenant> {
    return audited(
      this.ctx,
      'createTenant',
      {},
      async (em) => {
        if (!this.ctx.identity.platformAdmin) throw new ForbiddenError('only a platform admin may create tenants');
        const slug = input.slug.trim();
        if (!TENANT_SLUG_PATTERN.test(slug)) {
          throw new ValidationError('slug must be 3 to 40 characters of a-z, 0-9 and "-"', 'input.slug');
        }
        const name = validateName(input.name);
        const quota = validateQuota({ ...DEFAULT_QUOTA, ...(input.quota ?? {}) });
        const policy = validatePolicy({ ...DEFAULT_POLICY, ...(input.policy ?? {}) });
        if (await em.count(Tenant, { slug })) throw new AlreadyExistsError('Tenant', 'slug', slug);
        const now = this.ctx.clock.now();
        const tenant = em.create(Tenant, { slug, name, quota, policy, createdAt: now });
        try {
          await em.flush();
        } catch (err) {
          // Two creates raced past the check above: the unique index decides.
          if (err instanceof UniqueConstraintViolationException) throw new AlreadyExistsError('Tenant', 'slug', slug);
          throw err;
        }
        return tenant;
      },
      (tenant) => ({ tenantId: tenant.id, targetId: tenant.id }),
    );
  }

  /**
   * Name, policy and message retention: tenant ADMIN. Quota: platform admin only (a tenant must not raise its own
   * limits). Another tenant reads as missing.
   */
  async update(input: UpdateTenantInput): Promise<Tenant> {
    return audited(this.ctx, 'updateTenant', { tenantId: input.tenantId, targetId: input.tenantId }, async (em) => {
      const tenant = await this.visibleTenant(em, input.tenantId);
      if (!hasTenantRole(this.ctx.identity, tenant.id, 'ADMIN'))
        throw new ForbiddenError('updating a tenant needs the ADMIN role');
      if (input.quota && !this.ctx.identity.platformAdmin)
        throw new ForbiddenError('only a platform admin may change quotas');
      if (input.name !== undefined && input.name !== null) tenant.name = validateName(input.name);
      if (input.quota) {
        tenant.quota = validateQuota({ ...tenant.quota, ...input.quota });
        wantPlacement(em);
      }
      if (input.policy) tenant.policy = validatePolicy({ ...tenant.policy, ...input.policy });
      if (input.messageRetentionDays !== undefined) {
        tenant.messageRetentionDays = validateMessageRetention(input.messageRetentionDays);
        // The sweeper reads its due times again once this commits (old messages may be due now).
        dueBy(em, this.ctx.clock.now());
      }
      await em.flush();
      return tenant;
    });
  }

  /** Adds a member, or changes the role of an existing one (tenant ADMIN). */
  async addMember(input: AddMemberInput): Promise<Member> {
    const member = await audited(
      this.ctx,
      'addMember',
      { tenantId: input.tenantId },
      async (em) => {
        const tenant = await this.visibleTenant(em, input.tenantId);
        if (!hasTenantRole(this.ctx.identity, tenant.id, 'ADMIN'))
          throw new ForbiddenError('managing members needs the ADMIN role');
        const subject = input.subject.trim();
        if (subject.length === 0 || subject.length > MEMBER_SUBJECT_MAX_LENGTH) {
          throw new ValidationError(`subject must be 1 to ${MEMBER_SUBJECT_MAX_LENGTH} characters`, 'input.subject');
        }
        if (!TENANT_ROLES.includes(input.role)) throw new ValidationError('unknown role', 'input.role');
        const now = this.ctx.clock.now();
        const existing = await em.findOne(Member, { tenant: tenant.id, subject });
        if (existing) {
          const previousRole = existing.role;
          if (previousRole === input.role) return existing;
          existing.role = input.role;
          await em.flush();
          recordMemberChange(em, existing, previousRole, now);
          return existing;
        }
        const member = em.create(Member, {
          tenant: tenant.id,
          subject,
          role: input.role,
          createdAt: now,
        });
        try {
          await em.flush();
        } catch (err) {
          if (err instanceof UniqueConstraintViolationException)
            throw new AlreadyExistsError('Member', 'subject', subject);
          throw err;
        }
        recordMemberChange(em, member, null, now);
        return member;
      },
      (m) => ({ targetId: m.id }),
    );
    this.ctx.tokens?.membershipChanged(member.subject);
    return member;
  }

  async removeMember(memberId: string): Promise<Member> {
    const removed = await audited(
      this.ctx,
      'removeMember',
      { targetId: memberId },
      async (em) => {
        const member = isUuid(memberId) ? await em.findOne(Member, memberId) : null;
        if (!member || !hasTenantRole(this.ctx.identity, member.tenant.id, 'VIEWER'))
          throw new NotFoundError('Member', memberId);
        if (!hasTenantRole(this.ctx.identity, member.tenant.id, 'ADMIN'))
          throw new ForbiddenError('managing members needs the ADMIN role');
        em.remove(member);
        await em.flush();
        recordEvent(
          em,
          { type: 'MEMBER_REMOVED', tenantId: member.tenant.id, data: { subject: member.subject } },
          this.ctx.clock.now(),
        );
        return member;
      },
      (m) => ({ tenantId: m.tenant.id }),
    );
    this.ctx.tokens?.membershipChanged(removed.subject);
    return removed;
  }

  /** Members among `ids` whose tenant the caller may see (for node lookups). */
  async membersByIds(ids: readonly string[]): Promise<Member[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const members = await this.ctx.em.find(Member, { id: { $in: wanted } });
    return members.filter((m) => hasTenantRole(this.ctx.identity, m.tenant.id, 'VIEWER'));
  }

  /** Audit entries among `ids` of tenants the caller administers (for node lookups). */
  async auditEntriesByIds(ids: readonly string[]): Promise<AuditEntry[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const entries = await this.ctx.em.find(AuditEntry, { id: { $in: wanted } });
    return entries.filter((e) => e.tenantId !== null && hasTenantRole(this.ctx.identity, e.tenantId, 'ADMIN'));
  }

  /** The tenant's audit trail, oldest first (tenant ADMIN). */
  async listAuditEntries(tenantId: string, args: PageArgs): Promise<Page<AuditEntry>> {
    if (!hasTenantRole(this.ctx.identity, tenantId, 'ADMIN'))
      throw new ForbiddenError('the audit trail needs the ADMIN role');
    return keysetPage(this.ctx.em, AuditEntry, { tenantId }, args);
  }

  private async visibleTenant(em: Em, tenantId: string): Promise<Tenant> {
    const tenant = isUuid(tenantId) ? await em.findOne(Tenant, tenantId, lockedRead(em)) : null;
    if (!tenant || !hasTenantRole(this.ctx.identity, tenant.id, 'VIEWER')) throw new NotFoundError('Tenant', tenantId);
    return tenant;
  }

  /** The tenants among `ids` the caller may see, in no particular order. */
  async findVisibleByIds(ids: readonly string[]): Promise<Tenant[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const { workerId } = this.ctx.identity;
    if (workerId) {
      // A worker sees the tenants whose sandboxes are placed on it.
      const served = await this.tenantsServedBy(workerId);
      const allowed = wanted.filter((id) => served.includes(id));
      return allowed.length === 0 ? [] : findRows(this.ctx.em, Tenant, { id: { $in: allowed } });
    }
    const visible = visibleTenantIds(this.ctx.identity);
    const allowed = visible === null ? wanted : wanted.filter((id) => visible.includes(id));
    if (allowed.length === 0) return [];
    if (this.ctx.sharedReads) return this.ctx.sharedReads.byIds(Tenant, allowed);
    return findRows(this.ctx.em, Tenant, { id: { $in: allowed } });
  }

  private async tenantsServedBy(workerId: string): Promise<string[]> {
    // Deleted sandboxes included: a worker keeps seeing the tenant of a sandbox it ran (e.g. in its events).
    const rows = await this.ctx.em.find(Sandbox, { worker: workerId }, { fields: ['tenant'], ...WITH_DELETED });
    return [...new Set(rows.map((r) => r.tenant.id))];
  }

  async findBySlug(slug: string): Promise<Tenant | null> {
    const tenant = await this.ctx.em.findOne(Tenant, { slug });
    if (!tenant || !hasTenantRole(this.ctx.identity, tenant.id, 'VIEWER')) return null;
    return tenant;
  }

  async list(args: PageArgs): Promise<Page<Tenant>> {
    const visible = visibleTenantIds(this.ctx.identity);
    const where: FilterQuery<Tenant> = visible === null ? {} : { id: { $in: visible } };
    return keysetPage(this.ctx.em, Tenant, where, args);
  }

  async listMembers(tenantId: string, args: PageArgs): Promise<Page<Member>> {
    if (!hasTenantRole(this.ctx.identity, tenantId, 'VIEWER')) throw new ForbiddenError('not a member of this tenant');
    return keysetPage(this.ctx.em, Member, { tenant: tenantId }, args);
  }

  /** The subject's memberships, in every tenant. */
  async membershipsOf(subject: string): Promise<Member[]> {
    return this.ctx.em.find(Member, { subject }, { orderBy: { id: 'asc' } });
  }

  /** What the tenants reserve right now, computed in one query for all of them. */
  async usageOf(tenantIds: readonly string[]): Promise<Map<string, TenantUsage>> {
    const usage = new Map<string, TenantUsage>(
      tenantIds.map((id) => [id, { sandboxes: 0, cpuMillis: 0, memoryMb: 0 }]),
    );
    if (tenantIds.length === 0) return usage;
    const rows: {
      tenant_id: string;
      sandboxes: number | string;
      cpu: number | string | null;
      mem: number | string | null;
    }[] = await this.ctx.em
      .createQueryBuilder(Sandbox, 's')
      .select([
        's.tenant_id',
        raw('count(*) as sandboxes'),
        raw('sum(s.cpu_millis) as cpu'),
        raw('sum(s.memory_mb) as mem'),
      ])
      .where({ tenant: { $in: [...tenantIds] }, ...RESERVING_QUOTA })
      .groupBy('s.tenant_id')
      .execute('all', false);
    for (const row of rows) {
      usage.set(row.tenant_id, {
        sandboxes: Number(row.sandboxes),
        cpuMillis: Number(row.cpu ?? 0),
        memoryMb: Number(row.mem ?? 0),
      });
    }
    return usage;
  }
}

function validateName(name: string): string {
  const trimmed = name.trim();
  if (trimmed.length === 0 || trimmed.length > TENANT_NAME_MAX_LENGTH) {
    throw new ValidationError(`name must be 1 to ${TENANT_NAME_MAX_LENGTH} characters`, 'input.name');
  }
  return trimmed;
}

function validateQuota(quota: TenantQuota): TenantQuota {
  for (const key of ['maxSandboxes', 'maxCpuMillis', 'maxMemoryMb'] as const) {
    const value = quota[key];
    if (!Number.isInteger(value) || value < 0)
      throw new ValidationError(`${key} must be a whole number ≥ 0`, `input.quota.${key}`);
  }
  return { maxSandboxes: quota.maxSandboxes, maxCpuMillis: quota.maxCpuMillis, maxMemoryMb: quota.maxMemoryMb };
}

function validatePolicy(policy: TenantPolicy): TenantPolicy {
  const images = policy.allowedImages ?? [];
  for (const [i, glob] of images.entries()) {
    if (typeof glob !== 'string' || glob.trim() === '' || glob.length > IMAGE_PATTERN_MAX_LENGTH) {
      throw new ValidationError(
        `image patterns must be non-empty strings of at most ${IMAGE_PATTERN_MAX_LENGTH} characters`,
        `input.policy.allowedImages.${i}`,
      );
    }
  }
  const ttl = policy.maxSandboxTtlSeconds ?? null;
  if (ttl !== null && (!Number.isInteger(ttl) || ttl <= 0)) {
    throw new ValidationError(
      'maxSandboxTtlSeconds must be a positive whole number or null',
      'input.policy.maxSandboxTtlSeconds',
    );
  }
  return { allowedImages: images.map((g) => g.trim()), maxSandboxTtlSeconds: ttl };
}

/**
 * An access change travels through the log, so every replica's cache of verified tokens drops
 * the subject's identities at once (a new role is seen on the next request) and, when the role
 * was lowered, its open streams of the tenant end (src/events/hub.ts).
 */
function recordMemberChange(em: Em, member: Member, previousRole: TenantRole | null, now: Date): void {
  recordEvent(
    em,
    {
      type: 'MEMBER_CHANGED',
      tenantId: member.tenant.id,
      data: {
        subject: member.subject,
        role: member.role,
        previousRole,
        lowered: previousRole !== null && ROLE_RANK[member.role] < ROLE_RANK[previousRole],
      },
    },
    now,
  );
}
