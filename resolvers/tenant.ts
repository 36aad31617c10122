import { AuditEntry } from '../src/db/entities/audit-entry.js';
import { Tenant } from '../src/db/entities/tenant.js';
import { AlreadyExistsError, ForbiddenError, NotFoundError, ValidationError } from '../src/domain/errors.js';
import { builder, mutationResult } from './builder.js';
import { localIdOf } from './ids.js';
import { MemberRef } from './member.js';
import { connection, connectionType, pageArgs } from './pagination.js';

const QuotaType = builder.objectRef<Tenant['quota']>('Quota').implement({
  fields: (t) => ({
    maxSandboxes: t.exposeInt('maxSandboxes'),
    maxCpuMillis: t.exposeInt('maxCpuMillis'),
    maxMemoryMb: t.exposeInt('maxMemoryMb'),
  }),
});

const PolicyType = builder.objectRef<Tenant['policy']>('Policy').implement({
  fields: (t) => ({
    allowedImages: t.exposeStringList('allowedImages', {
      description: 'Glob patterns, e.g. "ghcr.io/acme/*". Empty = any image.',
    }),
    maxSandboxTtlSeconds: t.exposeInt('maxSandboxTtlSeconds', { nullable: true, description: 'null = no limit' }),
  }),
});

const UsageType = builder.objectRef<{ sandboxes: number; cpuMillis: number; memoryMb: number }>('Usage').implement({
  description: 'What the tenant reserves right now.',
  fields: (t) => ({
    sandboxes: t.exposeInt('sandboxes'),
    cpuMillis: t.exposeInt('cpuMillis'),
    memoryMb: t.exposeInt('memoryMb'),
  }),
});

export const TenantRef = builder.loadableNode('Tenant', {
  id: { resolve: (tenant: Tenant) => tenant.id },
  isTypeOf: (value) => value instanceof Tenant,
  load: (ids: string[], ctx) => ctx.services.tenants.findVisibleByIds(ids),
  sort: (tenant) => tenant.id,
  fields: (t) => ({
    slug: t.exposeString('slug'),
    name: t.exposeString('name'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    quota: t.field({ type: QuotaType, resolve: (tenant) => tenant.quota }),
    policy: t.field({ type: PolicyType, resolve: (tenant) => tenant.policy }),
    messageRetentionDays: t.exposeInt('messageRetentionDays', {
      nullable: true,
      description:
        "Messages older than this many days are deleted by the sweeper; null (the default) = the platform's message retention (FLOTILLA_MESSAGE_RETENTION_SECONDS, off unless set).",
    }),
    usage: t.loadable({
      type: UsageType,
      load: async (ids: string[], ctx) => {
        const usage = await ctx.services.tenants.usageOf(ids);
        return ids.map((id) => usage.get(id) ?? { sandboxes: 0, cpuMillis: 0, memoryMb: 0 });
      },
      resolve: (tenant) => tenant.id,
    }),
    members: t.field({
      type: MemberConnection,
      args: pageArgs(t.arg),
      resolve: (tenant, args, ctx) => connection(args, (page) => ctx.services.tenants.listMembers(tenant.id, page)),
    }),
    auditEntries: t.field({
      type: AuditEntryConnection,
      description: 'Tenant ADMIN only.',
      args: pageArgs(t.arg),
      authScopes: (tenant) => ({ tenantRole: { tenantId: tenant.id, role: 'ADMIN' } }),
      resolve: (tenant, args, ctx) =>
        connection(args, (page) => ctx.services.tenants.listAuditEntries(tenant.id, page)),
    }),
  }),
});

const AuditEntryRef = builder.node(builder.objectRef<AuditEntry>('AuditEntry'), {
  id: { resolve: (entry) => entry.id },
  loadMany: (ids, ctx) =>
    ctx.services.tenants
      .auditEntriesByIds(ids)
      .then((found) => ids.map((id) => found.find((e) => e.id === id) ?? null)),
  isTypeOf: (value) => value instanceof AuditEntry,
  fields: (t) => ({
    at: t.field({ type: 'DateTime', resolve: (entry) => entry.createdAt }),
    actor: t.exposeString('actor'),
    action: t.exposeString('action'),
    targetId: t.id({ nullable: true, resolve: (entry) => entry.targetId }),
    outcome: t.exposeString('outcome'),
  }),
});

export const AuditEntryConnection = connectionType('AuditEntryConnection', AuditEntryRef);
export const TenantConnection = connectionType('TenantConnection', TenantRef);
export const MemberConnection = connectionType('MemberConnection', MemberRef);

builder.queryFields((t) => ({
  tenant: t.field({
    type: TenantRef,
    nullable: true,
    description: 'A tenant by id or by slug (give exactly one). Another tenant reads as null.',
    args: { id: t.arg.id({ required: false }), slug: t.arg.string({ required: false }) },
    authScopes: { authenticated: true },
    resolve: async (_root, args, ctx) => {
      if ((args.id ? 1 : 0) + (args.slug ? 1 : 0) !== 1)
        throw new ValidationError('give exactly one of id and slug', 'id');
      if (args.id) return localIdOf(args.id, 'Tenant', 'id');
      return ctx.services.tenants.findBySlug(args.slug as string);
    },
  }),
  tenants: t.field({
    type: TenantConnection,
    description: 'The tenants the caller can see.',
    args: pageArgs(t.arg),
    authScopes: { authenticated: true },
    resolve: (_root, args, ctx) => connection(args, (page) => ctx.services.tenants.list(page)),
  }),
}));

const QuotaInput = builder.inputType('QuotaInput', {
  fields: (t) => ({
    maxSandboxes: t.int({ required: false }),
    maxCpuMillis: t.int({ required: false }),
    maxMemoryMb: t.int({ required: false }),
  }),
});

const PolicyInput = builder.inputType('PolicyInput', {
  fields: (t) => ({
    allowedImages: t.stringList({ required: false }),
    maxSandboxTtlSeconds: t.int({ required: false }),
  }),
});

const CreateTenantInput = builder.inputType('CreateTenantInput', {
  fields: (t) => ({
    slug: t.string({ required: true, description: 'Unique, [a-z0-9-]{3,40}' }),
    name: t.string({ required: true }),
    quota: t.field({ type: QuotaInput, required: false }),
    policy: t.field({ type: PolicyInput, required: false }),
  }),
});

builder.mutationFields((t) => ({
  createTenant: t.field({
    type: TenantRef,
    errors: mutationResult('CreateTenant', [ValidationError, AlreadyExistsError, ForbiddenError], { field: 'tenant' }),
    description: 'Platform admins only.',
    args: { input: t.arg({ type: CreateTenantInput, required: true }) },
    authScopes: { platformAdmin: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.tenants.create({
        slug: input.slug,
        name: input.name,
        quota: input.quota ? stripNulls(input.quota) : null,
        policy: input.policy
          ? {
              allowedImages: input.policy.allowedImages ?? undefined,
              maxSandboxTtlSeconds: input.policy.maxSandboxTtlSeconds,
            }
          : null,
      }),
  }),
}));

const UpdateTenantInput = builder.inputType('UpdateTenantInput', {
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    name: t.string({ required: false }),
    quota: t.field({ type: QuotaInput, required: false, description: 'Platform admins only.' }),
    policy: t.field({ type: PolicyInput, required: false }),
    messageRetentionDays: t.int({
      required: false,
      description:
        "Days (1 to 3650) after which messages are deleted; null = the platform's message retention (off unless set); absent: unchanged.",
    }),
  }),
});

builder.mutationFields((t) => ({
  updateTenant: t.field({
    type: TenantRef,
    errors: mutationResult('UpdateTenant', [NotFoundError, ForbiddenError, ValidationError], { field: 'tenant' }),
    description: 'Name, policy and message retention: tenant ADMIN. Quota: platform admin.',
    args: { input: t.arg({ type: UpdateTenantInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'ADMIN' },
    }),
    resolve: (_root, { input }, ctx) =>
      ctx.services.tenants.update({
        tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'),
        name: input.name,
        quota: input.quota ? stripNulls(input.quota) : null,
        policy: input.policy
          ? {
              ...(input.policy.allowedImages ? { allowedImages: input.policy.allowedImages } : {}),
              ...(input.policy.maxSandboxTtlSeconds !== undefined
                ? { maxSandboxTtlSeconds: input.policy.maxSandboxTtlSeconds }
                : {}),
            }
          : null,
        ...(input.messageRetentionDays !== undefined ? { messageRetentionDays: input.messageRetentionDays } : {}),
      }),
  }),
}));

function stripNulls<T extends Record<string, unknown>>(value: T): { [K in keyof T]?: Exclude<T[K], null> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null && v !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], null>;
  };
}
