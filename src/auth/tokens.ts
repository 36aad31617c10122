import {
  decodeJwt,
  decodeProtectedHeader,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
  type ProtectedHeaderParameters,
  SignJWT,
} from 'jose';
import { ApiToken, type TokenKind } from '../db/entities/api-token.js';
import { Member, TENANT_ROLES, type TenantRole } from '../db/entities/member.js';
import { newId } from '../db/ids.js';
import type { Em, Orm } from '../db/orm.js';
import { AuthenticationError } from '../kernel/errors.js';
import type { ExternalIssuer } from './external.js';
import type { Identity } from './identity.js';
import type { IdentityCache } from './identity-cache.js';
import { SIGNING_ALG, type SigningKeys } from './keys.js';

/** How stale `lastUsedAt` may get before a request refreshes it (avoids a write per request). */
export const LAST_USED_RESOLUTION_MS = 60_000;

/** The private claim holding what a Flotilla token grants. */
const CLAIM = 'flotilla';

interface FlotillaClaim {
  kind: TokenKind;
  tenantId?: string;
  role?: TenantRole;
  workerId?: string;
  scopes?: string[];
}

export interface MintOptions {
  /** The token id (`jti`); a new one unless given (e.g. to name the subject after it). */
  id?: string;
  kind: TokenKind;
  subject: string;
  tenantId?: string | null;
  role?: TenantRole | null;
  workerId?: string | null;
  scopes?: string[];
  /** null = no expiry. */
  ttlSeconds: number | null;
}

export interface MintedToken {
  token: string;
  record: ApiToken;
}

export interface TokenSettings {
  issuer: string;
  audience: string;
}

/**
 * Mints the server's own tokens and turns a bearer token into an Identity. Every token it
 * mints has a row in api_tokens (its `jti`), so any token can be revoked; verification fails
 * closed: whatever cannot be checked is refused.
 */
export class TokenService {
  private readonly external: ReadonlyMap<string, ExternalIssuer>;

  constructor(
    private readonly orm: Orm,
    private readonly keys: SigningKeys,
    private readonly settings: TokenSettings,
    external: readonly ExternalIssuer[] = [],
    private readonly cache: IdentityCache | null = null,
    /** Whether the cache may answer now: only while access changes reach it (the event log is followed). */
    private readonly cacheTrusted: () => boolean = () => true,
  ) {
    this.external = new Map(external.map((e) => [e.issuer, e]));
  }

  /** Records the token in `em` (the caller's transaction) and signs it. */
  async mint(em: Em, options: MintOptions, now: Date = new Date()): Promise<MintedToken> {
    const id = options.id ?? newId(now.getTime());
    const expiresAt = options.ttlSeconds === null ? null : new Date(now.getTime() + options.ttlSeconds * 1000);
    const record = em.create(ApiToken, {
      id,
      kind: options.kind,
      subject: options.subject,
      tenant: options.tenantId ?? null,
      role: options.role ?? null,
      workerId: options.workerId ?? null,
      scopes: options.scopes ?? [],
      expiresAt,
      lastUsedAt: null,
      revokedAt: null,
      createdAt: now,
    });
    em.persist(record);
    const claim: FlotillaClaim = { kind: options.kind };
    if (options.tenantId) claim.tenantId = options.tenantId;
    if (options.role) claim.role = options.role;
    if (options.workerId) claim.workerId = options.workerId;
    if (options.scopes?.length) claim.scopes = options.scopes;
    const signer = this.keys.currentSigner();
    const jwt = new SignJWT({ [CLAIM]: claim })
      .setProtectedHeader({ alg: SIGNING_ALG, kid: signer.kid, typ: 'JWT' })
      .setIssuer(this.settings.issuer)
      .setAudience(this.settings.audience)
      .setSubject(options.subject)
      .setJti(id)
      .setIssuedAt(Math.floor(now.getTime() / 1000));
    if (expiresAt) jwt.setExpirationTime(Math.floor(expiresAt.getTime() / 1000));
    return { token: await jwt.sign(signer.key), record };
  }

  /**
   * Verifies a bearer token and builds the caller's identity, or throws AuthenticationError.
   * The unverified `iss` only picks which key source to try; that source then checks
   * everything (signature with its own algorithms, iss, aud, exp, nbf).
   */
  async authenticate(token: string, now: Date = new Date()): Promise<Identity> {
    const cache = this.cache && this.cacheTrusted() ? this.cache : null;
    if (!cache) return (await this.verify(token, now)).identity;
    const cached = cache.get(token, now.getTime());
    if (cached) {
      if (isOwn(cached) && cache.claimLastUsedWrite(token, now.getTime(), LAST_USED_RESOLUTION_MS))
        this.touchLastUsed(cached.tokenId, now);
      return cached;
    }
    const generation = cache.generation;
    const { identity, lastUsedAt } = await this.verify(token, now);
    if (!identity.provisional) cache.set(token, identity, generation, now.getTime(), lastUsedAt?.getTime() ?? null);
    return identity;
  }

  /** Off the request's path: last use is tracked to the minute, and a failed write loses nothing else. */
  private touchLastUsed(tokenId: string, now: Date): void {
    void this.orm.em
      .fork()
      .nativeUpdate(ApiToken, { id: tokenId }, { lastUsedAt: now })
      .catch(() => undefined);
  }

  private async verify(token: string, now: Date): Promise<{ identity: Identity; lastUsedAt: Date | null }> {
    const { header, issuer } = inspect(token);
    if (issuer === this.settings.issuer) return this.authenticateOwn(token, header, now);
    const external = issuer === undefined ? undefined : this.external.get(issuer);
    if (!external) throw new AuthenticationError('token issuer is not trusted');
    if (!external.algorithms.includes(String(header.alg))) {
      throw new AuthenticationError(`token algorithm ${String(header.alg)} is not accepted`);
    }
    let payload: JWTPayload;
    try {
      payload = await external.verify(token, now);
    } catch (err) {
      throw joseFailure(err);
    }
    return { identity: await external.identity(this.orm.em.fork(), payload), lastUsedAt: null };
  }

  private async authenticateOwn(
    token: string,
    header: ProtectedHeaderParameters,
    now: Date,
  ): Promise<{ identity: Identity; lastUsedAt: Date | null }> {
    const payload = await this.verifySignature(token, header, now);
    const claim = payload[CLAIM] as FlotillaClaim | undefined;
    if (!payload.jti || !payload.sub || !claim || typeof claim !== 'object') {
      throw new AuthenticationError('token is missing required claims');
    }
    const em = this.orm.em.fork();
    const record = await em.findOne(ApiToken, { id: payload.jti });
    if (!record) throw new AuthenticationError('token is not known to this server');
    if (record.revokedAt) throw new AuthenticationError('token has been revoked', 'REVOKED');
    if (record.expiresAt && record.expiresAt.getTime() <= now.getTime())
      throw new AuthenticationError('token has expired', 'EXPIRED');

    const tenantRoles = new Map<string, TenantRole>();
    if (record.kind === 'API' && record.tenant && record.role) tenantRoles.set(record.tenant.id, record.role);
    // An API token grants one role in one tenant, nothing more; workers act only as workers.
    if (record.kind === 'ADMIN') {
      const memberships = await em.find(Member, { subject: record.subject });
      for (const m of memberships) {
        if (!TENANT_ROLES.includes(m.role)) continue;
        tenantRoles.set(m.tenant.id, m.role);
      }
    }

    let lastUsedAt = record.lastUsedAt;
    if (!lastUsedAt || now.getTime() - lastUsedAt.getTime() > LAST_USED_RESOLUTION_MS) {
      await em.nativeUpdate(ApiToken, { id: record.id }, { lastUsedAt: now });
      lastUsedAt = now;
    }

    const identity: Identity = {
      subject: record.subject,
      tokenId: record.id,
      source: record.kind,
      platformAdmin: record.kind === 'ADMIN',
      tenantRoles,
      workerId: record.kind === 'WORKER' ? record.workerId : null,
      scopes: new Set(record.scopes),
      // The JWT's exp is whole seconds, so it may fall before the record's expiry: the earlier wins.
      expiresAt: earliest(record.expiresAt, payload.exp === undefined ? null : new Date(payload.exp * 1000)),
    };
    return { identity, lastUsedAt };
  }

  private async verifySignature(token: string, header: ProtectedHeaderParameters, now: Date): Promise<JWTPayload> {
    if (header.alg !== SIGNING_ALG)
      throw new AuthenticationError(`token algorithm ${String(header.alg)} is not accepted`);
    const kid = header.kid;
    if (!kid) throw new AuthenticationError('token has no key id');
    // Another replica may have rotated the key since we loaded ours.
    if (!this.keys.hasKid(kid)) await this.keys.reloadForUnknownKid(kid);
    try {
      const { payload } = await jwtVerify(token, this.keys.verificationKeys(), {
        algorithms: [SIGNING_ALG],
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        currentDate: now,
      });
      return payload;
    } catch (err) {
      throw joseFailure(err);
    }
  }
}

/** Tokens this server minted (each has an api_tokens row with its last use). */
function isOwn(identity: Identity): boolean {
  return identity.source === 'ADMIN' || identity.source === 'API' || identity.source === 'WORKER';
}

function earliest(a: Date | null, b: Date | null): Date | null {
  if (!a) return b;
  if (!b) return a;
  return a.getTime() <= b.getTime() ? a : b;
}

/** The header and the (unverified) issuer, or AuthenticationError for anything that is not a JWS. */
function inspect(token: string): { header: ProtectedHeaderParameters; issuer: string | undefined } {
  try {
    const header = decodeProtectedHeader(token);
    const claims = decodeJwt(token);
    return { header, issuer: typeof claims.iss === 'string' ? claims.iss : undefined };
  } catch {
    throw new AuthenticationError('token is malformed');
  }
}

function joseFailure(err: unknown): AuthenticationError {
  if (err instanceof joseErrors.JWTExpired) return new AuthenticationError('token has expired', 'EXPIRED');
  return new AuthenticationError(describeJoseError(err));
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTClaimValidationFailed)
    return `token claim "${err.claim}" is not valid: ${err.reason}`;
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'token was signed by an unknown key';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature is not valid';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm is not accepted';
  if (
    err instanceof joseErrors.JWKSTimeout ||
    err instanceof joseErrors.JWKSInvalid ||
    !(err instanceof joseErrors.JOSEError)
  ) {
    return "token could not be verified: the issuer's keys are unavailable";
  }
  return 'token could not be verified';
}

/** Reads the bearer token from an Authorization header value; null when absent. */
export function bearerToken(header: string | null | undefined): string | null {
  if (!header) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) throw new AuthenticationError('the Authorization header must be "Bearer <token>"');
  return match[1];
}
