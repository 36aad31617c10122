import type { FilterQuery } from '@mikro-orm/core';
import type { TokenAuthority } from '../auth/authority.js';
import { hasTenantRole } from '../auth/identity.js';
import { ApiToken } from '../db/entities/api-token.js';
import { TENANT_ROLES, type TenantRole } from '../db/entities/member.js';
import { Tenant } from '../db/entities/tenant.js';
import { isUuid, newId } from '../db/ids.js';
import { audited } from './audit.js';
import type { ServiceContext } from './context.js';
import { ForbiddenError, NotFoundError, UnavailableError, ValidationError } from './errors.js';
import { keysetPage, type Page, type PageArgs } from './pagination.js';
import { revokeToken } from './revocation.js';

/** The shortest lifetime an API token may be given (shorter ones expire before they are copied). */
export const MIN_API_TOKEN_TTL_SECONDS = 60;

export interface CreateApiTokenInput {
  tenantId: string;
  role: TenantRole;
  ttlSeconds: number;
}

export interface CreatedApiToken {
  apiToken: ApiToken;
  /** The signed token: shown once, never stored. */
  token: string;
}

/** API tokens for SDKs: one tenant, one role, a lifetime; managed by the tenant's ADMINs. */
export class ApiTokenService {
  constructor(private readonly ctx: ServiceContext) {}

  async create(input: CreateApiTokenInput): Promise<CreatedApiToken> {
    const { identity } = this.ctx;
    return audited(
      this.ctx,
      'createApiToken',
      { tenantId: isUuid(input.tenantId) ? input.tenantId : null },
      async (em) => {
        const authority = this.authority();
        if (!isUuid(input.tenantId) || !hasTenantRole(identity, input.tenantId, 'VIEWER'))
          throw new NotFoundError('Tenant', input.tenantId);
        if (!hasTenantRole(identity, input.tenantId, 'ADMIN'))
          throw new ForbiddenError('only a tenant ADMIN may create API tokens');
        if (!TENANT_ROLES.includes(input.role))
          throw new ValidationError(`role must be one of ${TENANT_ROLES.join(', ')}`, 'input.role');
        const maxTtl = authority.maxApiTokenTtlSeconds;
        if (
          !Number.isInteger(input.ttlSeconds) ||
          input.ttlSeconds < MIN_API_TOKEN_TTL_SECONDS ||
          input.ttlSeconds > maxTtl
        ) {
          throw new ValidationError(
            `ttlSeconds must be a whole number from ${MIN_API_TOKEN_TTL_SECONDS} to ${maxTtl}`,
            'input.ttlSeconds',
          );
        }
        const tenant = await em.findOne(Tenant, { id: input.tenantId });
        if (!tenant) throw new NotFoundError('Tenant', input.tenantId);
        const now = this.ctx.clock.now();
        const id = newId(now.getTime());
        // Its own subject: an API token never inherits its creator's memberships.
        const minted = await authority.mint(
          em,
          {
            id,
            kind: 'API',
            subject: `api-token:${id}`,
            tenantId: tenant.id,
            role: input.role,
            ttlSeconds: input.ttlSeconds,
          },
          now,
        );
        await em.flush();
        return { apiToken: minted.record, token: minted.token };
      },
      (created) => ({ targetId: created.apiToken.id }),
    );
  }

  /**
   * Revokes a token: a tenant ADMIN may revoke that tenant's API tokens, a platform admin any
   * token. Revoking twice is harmless. Live sockets of the token close at once (4403).
   */
  async revoke(tokenId: string): Promise<ApiToken> {
    const { identity } = this.ctx;
    const revoked = await audited(
      this.ctx,
      'revokeToken',
      { targetId: tokenId.slice(0, 300) },
      async (em) => {
        this.authority(); // refuse before writing when live sockets could not be ended
        const record = isUuid(tokenId) ? await em.findOne(ApiToken, { id: tokenId }) : null;
        const tenantId = record?.tenant?.id ?? null;
        if (
          !record ||
          !(identity.platformAdmin || (tenantId !== null && hasTenantRole(identity, tenantId, 'VIEWER')))
        ) {
          throw new NotFoundError('ApiToken', tokenId);
        }
        if (!this.canManage(record)) throw new ForbiddenError('only a tenant ADMIN may revoke its API tokens');
        await revokeToken(em, record, tenantId, this.ctx.clock.now());
        return record;
      },
      (record) => ({ tenantId: record.tenant?.id ?? null }),
    );
    this.authority().endSessions({ tokenIds: [revoked.id] });
    return revoked;
  }

  /** The tenant's API tokens, oldest first (revoked and expired ones included). */
  async list(tenantId: string, args: PageArgs): Promise<Page<ApiToken>> {
    if (!hasTenantRole(this.ctx.identity, tenantId, 'ADMIN'))
      throw new ForbiddenError('only a tenant ADMIN may list API tokens');
    return keysetPage(this.ctx.em, ApiToken, { tenant: tenantId, kind: 'API' }, args);
  }

  /** The API tokens among `ids` the caller may manage, in no particular order. */
  async findVisibleByIds(ids: readonly string[]): Promise<ApiToken[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const where: FilterQuery<ApiToken> = { id: { $in: wanted }, kind: 'API' };
    const rows = await this.ctx.em.find(ApiToken, where);
    return rows.filter((r) => this.canManage(r));
  }

  private canManage(record: ApiToken): boolean {
    if (this.ctx.identity.platformAdmin) return true;
    return (
      record.kind === 'API' && record.tenant !== null && hasTenantRole(this.ctx.identity, record.tenant.id, 'ADMIN')
    );
  }

  private authority(): TokenAuthority {
    if (!this.ctx.tokens) throw new UnavailableError('tokens cannot be issued here');
    return this.ctx.tokens;
  }
}
