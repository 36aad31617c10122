import { Member, TENANT_ROLES } from '../src/db/entities/member.js';
import { AlreadyExistsError, ForbiddenError, NotFoundError, ValidationError } from '../src/domain/errors.js';
import { builder } from './builder.js';
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

class AddMemberPayload {
  constructor(readonly member: Member) {}
}
builder.objectType(AddMemberPayload, {
  name: 'AddMemberPayload',
  isTypeOf: (value) => value instanceof AddMemberPayload,
  fields: (t) => ({ member: t.field({ type: MemberRef, resolve: (p) => p.member }) }),
});

class RemoveMemberPayload {
  constructor(readonly member: Member) {}
}
builder.objectType(RemoveMemberPayload, {
  name: 'RemoveMemberPayload',
  isTypeOf: (value) => value instanceof RemoveMemberPayload,
  fields: (t) => ({
    removedMemberId: t.id({ resolve: (p) => encodeGlobalId('Member', p.member.id) }),
    subject: t.string({ resolve: (p) => p.member.subject }),
  }),
});

const AddMemberResult = builder.errorUnion('AddMemberResult', {
  types: [AddMemberPayload, NotFoundError, ForbiddenError, ValidationError, AlreadyExistsError],
});
const RemoveMemberResult = builder.errorUnion('RemoveMemberResult', {
  types: [RemoveMemberPayload, NotFoundError, ForbiddenError],
});

builder.mutationFields((t) => ({
  addMember: t.field({
    type: AddMemberResult,
    description: 'Tenant ADMIN. Adding an existing subject changes its role.',
    args: { input: t.arg({ type: AddMemberInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant'), role: 'ADMIN' },
    }),
    resolve: async (_root, { input }, ctx) =>
      new AddMemberPayload(
        await ctx.services.tenants.addMember({
          tenantId: localIdOf(input.tenantId, 'Tenant'),
          subject: input.subject,
          role: input.role,
        }),
      ),
  }),
  removeMember: t.field({
    type: RemoveMemberResult,
    description: 'Tenant ADMIN.',
    args: { input: t.arg({ type: RemoveMemberInput, required: true }) },
    resolve: async (_root, { input }, ctx) =>
      new RemoveMemberPayload(await ctx.services.tenants.removeMember(localIdOf(input.memberId, 'Member'))),
  }),
}));
