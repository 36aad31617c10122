import { ApiToken } from '../src/db/entities/api-token.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../src/domain/errors.js';
import { builder, mutationResult } from './builder.js';
import { localIdOf } from './ids.js';
import { TenantRoleEnum } from './member.js';
import { connection, connectionType, pageArgs } from './pagination.js';
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

export const ApiTokenConnection = connectionType('ApiTokenConnection', ApiTokenRef);

builder.objectField(TenantRef, 'apiTokens', (t) =>
  t.field({
    type: ApiTokenConnection,
    description: 'Tenant ADMIN only.',
    authScopes: (tenant) => ({ tenantRole: { tenantId: tenant.id, role: 'ADMIN' } }),
    args: pageArgs(t.arg),
    resolve: (tenant, args, ctx) => connection(args, (page) => ctx.services.apiTokens.list(tenant.id, page)),
  }),
);

const CreateApiTokenInput = builder.inputType('CreateApiTokenInput', {
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    role: t.field({ type: TenantRoleEnum, required: true }),
    ttlSeconds: t.int({ required: true, description: 'Lifetime in seconds (at least 60; the server caps it).' }),
  }),
});

const CreateApiTokenPayload = builder
  .objectRef<{ apiToken: ApiToken; token: string }>('CreateApiTokenPayload')
  .implement({
    fields: (t) => ({
      apiToken: t.field({ type: ApiTokenRef, resolve: (p) => p.apiToken }),
      token: t.exposeString('token', { description: 'The bearer token. Shown only this once: store it now.' }),
    }),
  });

const RevokeTokenInput = builder.inputType('RevokeTokenInput', {
  fields: (t) => ({ tokenId: t.id({ required: true }) }),
});

const RevokeTokenPayload = builder.objectRef<ApiToken>('RevokeTokenPayload').implement({
  fields: (t) => ({
    tokenId: t.id({ resolve: (token) => token.id }),
    revokedAt: t.field({ type: 'DateTime', resolve: (token) => token.revokedAt ?? new Date(0) }),
    apiToken: t.field({
      type: ApiTokenRef,
      nullable: true,
      description: 'The revoked token when it is an API token (null for worker and admin tokens).',
      resolve: (token) => (token.kind === 'API' ? token : null),
    }),
  }),
});

builder.mutationFields((t) => ({
  createApiToken: t.field({
    type: CreateApiTokenPayload,
    errors: mutationResult('CreateApiToken', [ValidationError, NotFoundError, ForbiddenError]),
    description: 'Tenant ADMIN only. The token is in the result once and never again.',
    args: { input: t.arg({ type: CreateApiTokenInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.apiTokens.create({
        tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'),
        role: input.role,
        ttlSeconds: input.ttlSeconds,
      }),
  }),
  revokeToken: t.field({
    type: RevokeTokenPayload,
    errors: mutationResult('RevokeToken', [NotFoundError, ForbiddenError]),
    description:
      "A tenant ADMIN revokes its tenant's API tokens; a platform admin any token. Live sockets of the token close (4403).",
    args: { input: t.arg({ type: RevokeTokenInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.apiTokens.revoke(localIdOf(input.tokenId, 'ApiToken', 'input.tokenId')),
  }),
}));
