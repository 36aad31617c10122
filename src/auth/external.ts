import { createRemoteJWKSet, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions, jwtVerify } from 'jose';
import type { GroupRole, Hs256IssuerConfig, OidcIssuerConfig } from '../config/index.js';
import { Member, TENANT_ROLES, type TenantRole } from '../db/entities/member.js';
import { Tenant } from '../db/entities/tenant.js';
import type { Em } from '../db/orm.js';
import type { Identity } from './identity.js';
import { ROLE_RANK } from './identity.js';

/**
 * A token source this server does not mint for: an OIDC issuer (keys from its JWKS URL) or
 * an HS256 shared secret. Each accepts only its own algorithms, so an HS256 token can never
 * be checked against an RSA/EC public key, nor the reverse.
 */
export interface ExternalIssuer {
  readonly issuer: string;
  readonly audience: string;
  readonly algorithms: readonly string[];
  readonly source: 'OIDC' | 'HS256';
  verify(token: string, now: Date): Promise<JWTPayload>;
  identity(em: Em, payload: JWTPayload): Promise<Identity>;
}

/** Claims every external token must carry; without `exp` a stolen token would live forever. */
const REQUIRED_CLAIMS = ['sub', 'exp'];

abstract class ExternalIssuerBase implements ExternalIssuer {
  abstract readonly algorithms: readonly string[];
  abstract readonly source: 'OIDC' | 'HS256';
  /** Every `aud` a token may carry: the configured audience, plus any the caller adds (the dashboard's client id). */
  protected readonly audiences: string[];
  constructor(
    protected readonly config: OidcIssuerConfig | Hs256IssuerConfig,
    extraAudiences: readonly string[] = [],
  ) {
    this.audiences = [...new Set([config.audience, ...extraAudiences])];
  }

  get issuer(): string {
    return this.config.issuer;
  }
  get audience(): string {
    return this.config.audience;
  }

  /** Checks the signature with this source's keys, and the claims with `options`. */
  protected abstract verifyWith(token: string, options: JWTVerifyOptions): Promise<JWTPayload>;

  verify(token: string, now: Date): Promise<JWTPayload> {
    return this.verifyWith(token, {
      algorithms: [...this.algorithms],
      issuer: this.config.issuer,
      audience: this.audiences,
      currentDate: now,
      requiredClaims: REQUIRED_CLAIMS,
    });
  }

  /** Roles from the mapped groups, merged with the subject's memberships; the higher role wins. */
  async identity(em: Em, payload: JWTPayload): Promise<Identity> {
    const subject = `${this.config.subjectPrefix}${payload.sub as string}`;
    const groups = new Set(groupsOf(payload, this.config.groupsClaim));
    const granted = this.config.groupRoles.filter((g) => groups.has(g.group));
    const platformAdmin = granted.some((g) => 'platformAdmin' in g);
    const tenantGrants = granted.filter((g): g is Extract<GroupRole, { tenant: string }> => 'tenant' in g);
    const tenantRoles = new Map<string, TenantRole>();
    const raise = (tenantId: string, role: TenantRole) => {
      const held = tenantRoles.get(tenantId);
      if (!held || ROLE_RANK[role] > ROLE_RANK[held]) tenantRoles.set(tenantId, role);
    };
    let provisional = false;
    if (tenantGrants.length > 0) {
      const tenants = await em.find(Tenant, { slug: { $in: [...new Set(tenantGrants.map((g) => g.tenant))] } });
      const bySlug = new Map(tenants.map((t) => [t.slug, t.id]));
      for (const grant of tenantGrants) {
        const id = bySlug.get(grant.tenant);
        if (id) raise(id, grant.role);
        else provisional = true;
      }
    }
    const claimedRoles = new Map(tenantRoles);
    for (const m of await em.find(Member, { subject })) {
      if (TENANT_ROLES.includes(m.role)) raise(m.tenant.id, m.role);
    }
    const exp = payload.exp as number;
    return {
      subject,
      // External tokens need not carry a jti; issuer + subject + issue time names one token.
      tokenId: payload.jti ?? `${this.config.issuer}#${payload.sub as string}#${payload.iat ?? exp}`,
      source: this.source,
      platformAdmin,
      tenantRoles,
      ...(claimedRoles.size > 0 ? { claimedRoles } : {}),
      workerId: null,
      scopes: new Set(),
      expiresAt: new Date(exp * 1000),
      ...(provisional ? { provisional } : {}),
    };
  }
}

export class OidcIssuer extends ExternalIssuerBase {
  readonly source = 'OIDC' as const;
  readonly algorithms: readonly string[];
  /** jose caches the key set and refetches it (at most once per cooldown) when a kid is unknown. */
  private readonly jwks: JWTVerifyGetKey;

  /** `extraAudiences`: also accepted as `aud`, e.g. the dashboard's client id for the ID tokens it sends. */
  constructor(config: OidcIssuerConfig, extraAudiences: readonly string[] = []) {
    super(config, extraAudiences);
    this.algorithms = config.algorithms;
    this.jwks = createRemoteJWKSet(new URL(config.jwksUrl), {
      cooldownDuration: config.jwksCooldownSeconds * 1000,
      timeoutDuration: config.jwksTimeoutMs,
    });
  }

  protected async verifyWith(token: string, options: JWTVerifyOptions): Promise<JWTPayload> {
    return (await jwtVerify(token, this.jwks, options)).payload;
  }
}

export class Hs256Issuer extends ExternalIssuerBase {
  readonly source = 'HS256' as const;
  readonly algorithms = ['HS256'] as const;
  private readonly secret: Uint8Array;

  constructor(config: Hs256IssuerConfig) {
    super(config);
    this.secret = new TextEncoder().encode(config.secret);
  }

  protected async verifyWith(token: string, options: JWTVerifyOptions): Promise<JWTPayload> {
    return (await jwtVerify(token, this.secret, options)).payload;
  }
}

/** The groups in `claim` (a dotted path); a single string counts as one group, anything else as none. */
function groupsOf(payload: JWTPayload, claim: string): string[] {
  let value: unknown = payload;
  for (const part of claim.split('.')) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return [];
    value = (value as Record<string, unknown>)[part];
  }
  if (typeof value === 'string') return [value];
  return Array.isArray(value) ? value.filter((g): g is string => typeof g === 'string') : [];
}
