import { Member, TENANT_ROLES } from '../src/db/entities/member.js';
import { AlreadyExistsError, ForbiddenError, NotFoundError, ValidationError } from '../src/domain/errors.js';
import { builder, mutationResult } from './builder.js';
import { encodeGlobalId, localIdOf } from './ids.js';

export const TenantRoleEnum = builder.enumType('TenantRole', { values: TENANT_ROLES });

export const MemberRef = builder.node(builder.objectRef<Member>('Member'), {
  id: { resolve: (m) => m.id },
  loadMany: (ids, ctx) =>
    ctx.services.tenants.membersByIds(ids).then((found) => ids.map((id) => found.find((m) => m.id === id) ?? null)),
  isTypeOf: (value) => value instanceof Member,
  fields: (t) => ({
    subject: t.exposeString('subject'),
    role: t.field({ type: TenantRoleEnum, resolve: (m) => m.role }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const AddMemberInput = builder.inputType('AddMemberInput', {
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    subject: t.string({ required: true, description: "A token's subject, e.g. an OIDC user." }),
    role: t.field({ type: TenantRoleEnum, required: true }),
  }),
});

const RemoveMemberInput = builder.inputType('RemoveMemberInput', {
  fields: (t) => ({ memberId: t.id({ required: true }) }),
});

const RemoveMemberPayload = builder.objectRef<Member>('RemoveMemberPayload').implement({
  fields: (t) => ({
    removedMemberId: t.id({ resolve: (member) => encodeGlobalId('Member', member.id) }),
    subject: t.exposeString('subject'),
  }),
});

builder.mutationFields((t) => ({
  addMember: t.field({
    type: MemberRef,
    errors: mutationResult('AddMember', [NotFoundError, ForbiddenError, ValidationError, AlreadyExistsError], {
      field: 'member',
    }),
    description: 'Tenant ADMIN. Adding an existing subject changes its role.',
    args: { input: t.arg({ type: AddMemberInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'ADMIN' },
    }),
    resolve: (_root, { input }, ctx) =>
      ctx.services.tenants.addMember({
        tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'),
        subject: input.subject,
        role: input.role,
      }),
  }),
  removeMember: t.field({
    type: RemoveMemberPayload,
    errors: mutationResult('RemoveMember', [NotFoundError, ForbiddenError]),
    description: 'Tenant ADMIN.',
    args: { input: t.arg({ type: RemoveMemberInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.tenants.removeMember(localIdOf(input.memberId, 'Member', 'input.memberId')),
  }),
}));
