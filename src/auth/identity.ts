import type { TenantRole } from '../db/entities/member.js';

/** Where the token came from: minted by this server (ADMIN, API, WORKER) or an external issuer. */
export type TokenSource = 'ADMIN' | 'API' | 'WORKER' | 'OIDC' | 'HS256';

/** Who is calling, as established from a verified token. Services decide what it may do. */
export interface Identity {
  subject: string;
  /** The token's id (`jti`), for revocation and last-use tracking. */
  tokenId: string;
  source: TokenSource;
  platformAdmin: boolean;
  /** Roles per tenant id: from memberships of the subject and from the token itself. */
  tenantRoles: ReadonlyMap<string, TenantRole>;
  /** Set for worker tokens: the one worker this token may act for. */
  workerId: string | null;
  scopes: ReadonlySet<string>;
  expiresAt: Date | null;
  /**
   * Set when a group grant names a tenant that does not exist yet: such an identity is not
   * remembered between requests, so the tenant is granted as soon as it is created.
   */
  provisional?: boolean;
}

export const ROLE_RANK: Record<TenantRole, number> = { VIEWER: 1, OPERATOR: 2, ADMIN: 3 };

/** True when the identity holds at least `role` in the tenant (platform admins hold every role). */
export function hasTenantRole(identity: Identity, tenantId: string, role: TenantRole): boolean {
  if (identity.platformAdmin) return true;
  const held = identity.tenantRoles.get(tenantId);
  return held !== undefined && ROLE_RANK[held] >= ROLE_RANK[role];
}

/** Tenants the identity may read; null means all of them. */
export function visibleTenantIds(identity: Identity): string[] | null {
  return identity.platformAdmin ? null : [...identity.tenantRoles.keys()];
}
