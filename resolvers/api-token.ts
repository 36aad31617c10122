import { ApiToken } from '../src/db/entities/api-token.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../src/domain/errors.js';
import { builder } from './builder.js';
import { TenantRoleEnum } from './member.js';
import { type ConnectionResult, decodeCursor, toConnection } from './pagination.js';
import { TenantRef } from './tenant.js';

/** An API token as its managers see it: never the secret. */
export const ApiTokenRef = builder.loadableNode('ApiToken', {
  description: 'A token for SDKs: one tenant, one role. The secret is shown once, at creation.',
  id: { resolve: (token: ApiToken) => token.id },
  isTypeOf: (value) => value instanceof ApiToken,
  load: (ids: string[], ctx) => ctx.services.apiTokens.findVisibleByIds(ids),
  sort: (token) => token.id,
  fields: (t) => ({
    role: t.field({
      type: TenantRoleEnum,
      resolve: (token) => {
        // Only API tokens are exposed as ApiToken, and every API token has a role.
        if (!token.role) throw new Error(`token ${token.id} has no role`);
        return token.role;
      },
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', nullable: true }),
    lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true }),
  }),
});

export const ApiTokenConnection = builder.connectionObject({
  type: ApiTokenRef,
  name: 'ApiTokenConnection',
  fields: (t) => ({
    totalCount: t.int({ resolve: (conn) => (conn as unknown as ConnectionResult<ApiToken>).totalCount() }),
  }),
});

builder.objectField(TenantRef, 'apiTokens', (t) =>
  t.field({
    type: ApiTokenConnection,
    description: 'Tenant ADMIN only.',
    authScopes: (tenant) => ({ tenantRole: { tenantId: tenant.id, role: 'ADMIN' } }),
    args: { first: t.arg.int({ required: false }), after: t.arg.string({ required: false }) },
    resolve: async (tenant, args, ctx) =>
      toConnection(
        await ctx.services.apiTokens.list(tenant.id, { first: args.first, after: decodeCursor(args.after) }),
        !!args.after,
      ),
  }),
);

const CreateApiTokenInput = builder.inputType('CreateApiTokenInput', {
  fields: (t) => ({
    tenantId: t.globalID({ required: true, for: [TenantRef] }),
    role: t.field({ type: TenantRoleEnum, required: true }),
    ttlSeconds: t.int({ required: true, description: 'Lifetime in seconds (at least 60; the server caps it).' }),
  }),
});

class CreateApiTokenPayload {
  constructor(
    readonly apiToken: ApiToken,
    readonly token: string,
  ) {}
}
builder.objectType(CreateApiTokenPayload, {
  name: 'CreateApiTokenPayload',
  isTypeOf: (value) => value instanceof CreateApiTokenPayload,
  fields: (t) => ({
    apiToken: t.field({ type: ApiTokenRef, resolve: (p) => p.apiToken }),
    token: t.exposeString('token', { description: 'The bearer token. Shown only this once: store it now.' }),
  }),
});

const CreateApiTokenResult = builder.errorUnion('CreateApiTokenResult', {
  types: [CreateApiTokenPayload, ValidationError, NotFoundError, ForbiddenError],
});

const RevokeTokenInput = builder.inputType('RevokeTokenInput', {
  fields: (t) => ({ tokenId: t.globalID({ required: true, for: [ApiTokenRef] }) }),
});

class RevokeTokenPayload {
  constructor(readonly token: ApiToken) {}
}
builder.objectType(RevokeTokenPayload, {
  name: 'RevokeTokenPayload',
  isTypeOf: (value) => value instanceof RevokeTokenPayload,
  fields: (t) => ({
    tokenId: t.id({ resolve: (p) => p.token.id }),
    revokedAt: t.field({ type: 'DateTime', resolve: (p) => p.token.revokedAt ?? new Date(0) }),
    apiToken: t.field({
      type: ApiTokenRef,
      nullable: true,
      description: 'The revoked token when it is an API token (null for worker and admin tokens).',
      resolve: (p) => (p.token.kind === 'API' ? p.token : null),
    }),
  }),
});

const RevokeTokenResult = builder.errorUnion('RevokeTokenResult', {
  types: [RevokeTokenPayload, NotFoundError, ForbiddenError],
});

builder.mutationFields((t) => ({
  createApiToken: t.field({
    type: CreateApiTokenResult,
    description: 'Tenant ADMIN only. The token is in the result once and never again.',
    args: { input: t.arg({ type: CreateApiTokenInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const created = await ctx.services.apiTokens.create({
        tenantId: input.tenantId.id,
        role: input.role,
        ttlSeconds: input.ttlSeconds,
      });
      return new CreateApiTokenPayload(created.apiToken, created.token);
    },
  }),
  revokeToken: t.field({
    type: RevokeTokenResult,
    description:
      "A tenant ADMIN revokes its tenant's API tokens; a platform admin any token. Live sockets of the token close (4403).",
    args: { input: t.arg({ type: RevokeTokenInput, required: true }) },
    resolve: async (_root, { input }, ctx) =>
      new RevokeTokenPayload(await ctx.services.apiTokens.revoke(input.tokenId.id)),
  }),
}));
