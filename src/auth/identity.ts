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
  /**
   * The part of `tenantRoles` the token's own claims grant (an external issuer's group mapping),
   * which no membership change takes away. Absent: none.
   */
  claimedRoles?: ReadonlyMap<string, TenantRole>;
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

/** Sources whose tenant roles come from the subject's memberships (API tokens carry theirs in the token). */
const MEMBERSHIP_SOURCES: ReadonlySet<TokenSource> = new Set(['OIDC', 'HS256']);

/**
 * The identity after the subject's membership of a tenant changed to `role` (null: removed), as
 * far as it lowers what the identity holds: a new object (identities are shared between requests
 * and streams, so one is never changed in place), or the same one when nothing is lost. A raise is
 * not applied: the holder sees it on its next request. Platform admins and identities whose roles
 * come from the token itself are unaffected.
 */
export function withMembershipLowered(identity: Identity, tenantId: string, role: TenantRole | null): Identity {
  if (identity.platformAdmin || !MEMBERSHIP_SOURCES.has(identity.source)) return identity;
  const held = identity.tenantRoles.get(tenantId);
  if (held === undefined) return identity;
  const claimed = identity.claimedRoles?.get(tenantId);
  let next: TenantRole | undefined = role ?? undefined;
  if (claimed !== undefined && (next === undefined || ROLE_RANK[claimed] > ROLE_RANK[next])) next = claimed;
  if (next !== undefined && ROLE_RANK[next] >= ROLE_RANK[held]) return identity;
  const tenantRoles = new Map(identity.tenantRoles);
  if (next === undefined) tenantRoles.delete(tenantId);
  else tenantRoles.set(tenantId, next);
  return { ...identity, tenantRoles };
}
