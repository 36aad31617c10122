import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  type CryptoKey,
  decodeJwt,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  SignJWT,
} from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import WebSocket from 'ws';
import { SigningKeys } from '../../src/auth/keys.js';
import { TokenService } from '../../src/auth/tokens.js';
import { ApiToken } from '../../src/db/entities/api-token.js';
import { AuditEntry } from '../../src/db/entities/audit-entry.js';
import { Event } from '../../src/db/entities/event.js';
import { Member } from '../../src/db/entities/member.js';
import { SigningKey } from '../../src/db/entities/signing-key.js';
import { Tenant } from '../../src/db/entities/tenant.js';
import { inTransaction } from '../../src/domain/outbox.js';
import { revokeToken } from '../../src/domain/revocation.js';
import { sha256 } from '../../src/server/persisted-operations.js';
import { DRIVERS, tempDir } from '../helpers/databases.js';
import { type GraphQLResponse, localId, startTestServer, type TestServer, wsRequest } from '../helpers/server.js';

const OIDC_ISSUER = 'https://idp.test';
const DOWN_ISSUER = 'https://down.test';
const HS_ISSUER = 'https://hs.test';
const AUDIENCE = 'flotilla-api';
const HS_SECRET = 'a-shared-secret-of-at-least-thirty-two-bytes';

const VIEWER_QUERY = '{ viewer { subject platformAdmin } }';
const CREATE_TENANT =
  'mutation($input: CreateTenantInput!) { createTenant(input: $input) { __typename ... on CreateTenantPayload { tenant { id } } } }';
const CREATE_API_TOKEN = /* GraphQL */ `
  mutation($input: CreateApiTokenInput!) {
    createApiToken(input: $input) {
      __typename
      ... on CreateApiTokenPayload { token apiToken { id role createdAt expiresAt lastUsedAt revokedAt } }
      ... on Error { message code }
      ... on ValidationError { field }
    }
  }
`;
const REVOKE_TOKEN = /* GraphQL */ `
  mutation($input: RevokeTokenInput!) {
    revokeToken(input: $input) {
      __typename
      ... on RevokeTokenPayload { tokenId revokedAt apiToken { id revokedAt } }
      ... on Error { message code }
    }
  }
`;

interface CreatedToken {
  createApiToken: {
    __typename: string;
    token?: string;
    apiToken?: { id: string; role: string; revokedAt: string | null };
    code?: string;
    field?: string;
  };
}

/** A local JWKS endpoint whose keys the test controls, and can take down. */
interface JwksServer {
  url: string;
  keys: JWK[];
  close(): Promise<void>;
}

async function startJwksServer(): Promise<JwksServer> {
  const state: { keys: JWK[] } = { keys: [] };
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    get keys() {
      return state.keys;
    },
    set keys(keys: JWK[]) {
      state.keys = keys;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface IdpKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function idpKey(alg: 'RS256' | 'ES256', kid: string): Promise<IdpKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Signs claims as an external issuer would. */
async function idpToken(
  key: IdpKey,
  claims: JWTPayload,
  options: { issuer?: string; audience?: string; expiresIn?: number } = {},
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid })
    .setIssuer(options.issuer ?? OIDC_ISSUER)
    .setAudience(options.audience ?? AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(nowSeconds() + (options.expiresIn ?? 600))
    .sign(key.privateKey);
}

async function hsToken(claims: JWTPayload, secret = HS_SECRET, issuer = HS_ISSUER): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(issuer)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(nowSeconds() + 600)
    .sign(new TextEncoder().encode(secret));
}

/** The server's own active private key, read from its store, to forge tokens that differ in one claim only. */
async function serverKey(server: TestServer): Promise<{ kid: string; key: CryptoKey }> {
  const row = await server.app.db.orm.em
    .fork()
    .findOneOrFail(SigningKey, { retiredAt: null }, { orderBy: { createdAt: 'desc' } });
  return { kid: row.id, key: (await importJWK(row.privateJwk as JWK, 'ES256')) as CryptoKey };
}

/** Counts rows of every table a hostile request could touch. */
async function snapshot(server: TestServer): Promise<Record<string, number>> {
  const em = server.app.db.orm.em.fork();
  return {
    tenants: await em.count(Tenant, {}),
    members: await em.count(Member, {}),
    apiTokens: await em.count(ApiToken, {}),
    revokedTokens: await em.count(ApiToken, { revokedAt: { $ne: null } }),
    auditEntries: await em.count(AuditEntry, {}),
    events: await em.count(Event, {}),
    signingKeys: await em.count(SigningKey, {}),
  };
}

function codeOf(res: GraphQLResponse): string | undefined {
  return res.body.errors?.[0]?.extensions?.code;
}

async function post(
  url: string,
  body: string,
  headers: Record<string, string>,
): Promise<{ status: number; code?: string; text: string }> {
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as GraphQLResponse['body']).errors?.[0]?.extensions?.code;
  } catch {
    code = undefined;
  }
  return { status: res.status, code, text };
}

/** Opens a graphql-transport-ws socket, waits for the ack, and reports how the server closes it. */
async function openSocket(url: string, token: string): Promise<{ closed: Promise<{ code: number; reason: string }> }> {
  const socket = new WebSocket(url, 'graphql-transport-ws');
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    socket.on('open', () =>
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })),
    );
    socket.on('message', (data) => {
      if ((JSON.parse(data.toString()) as { type: string }).type === 'connection_ack') resolve();
    });
    socket.on('error', reject);
    void closed.then((c) => reject(new Error(`closed before ack: ${c.code} ${c.reason}`)));
  });
  return { closed };
}

describe.each(DRIVERS)('hostile input on %s', (kind) => {
  let server: TestServer;
  let jwks: JwksServer;
  let rsaKey: IdpKey;
  let ecKey: IdpKey;
  let acmeId: string;
  let otherId: string;

  beforeAll(async () => {
    jwks = await startJwksServer();
    rsaKey = await idpKey('RS256', 'rsa-1');
    ecKey = await idpKey('ES256', 'ec-1');
    jwks.keys = [rsaKey.publicJwk, ecKey.publicJwk];
    server = await startTestServer(kind, {
      env: {
        FLOTILLA_OIDC_ISSUERS: JSON.stringify([
          {
            issuer: OIDC_ISSUER,
            audience: AUDIENCE,
            jwksUrl: jwks.url,
            jwksCooldownSeconds: 0,
            subjectPrefix: 'idp|',
            groupRoles: [
              { group: 'ops', platformAdmin: true },
              { group: 'acme-admins', tenant: 'acme', role: 'ADMIN' },
              { group: 'acme-viewers', tenant: 'acme', role: 'VIEWER' },
            ],
          },
          {
            issuer: DOWN_ISSUER,
            audience: AUDIENCE,
            jwksUrl: `http://127.0.0.1:${await deadPort()}/jwks.json`,
            jwksTimeoutMs: 1000,
          },
        ]),
        FLOTILLA_HS256_ISSUERS: JSON.stringify([
          {
            issuer: HS_ISSUER,
            audience: AUDIENCE,
            secret: HS_SECRET,
            groupRoles: [{ group: 'acme-viewers', tenant: 'acme', role: 'VIEWER' }],
          },
        ]),
        FLOTILLA_MAX_QUERY_DEPTH: '6',
      },
    });
    const acme = await server.gql<{ createTenant: { tenant: { id: string } } }>(CREATE_TENANT, {
      input: { slug: 'acme', name: 'Acme' },
    });
    const other = await server.gql<{ createTenant: { tenant: { id: string } } }>(CREATE_TENANT, {
      input: { slug: 'other', name: 'Other' },
    });
    acmeId = acme.body.data?.createTenant.tenant.id as string;
    otherId = other.body.data?.createTenant.tenant.id as string;
  });
  afterAll(async () => {
    await server?.close();
    await jwks?.close();
  });

  it('refuses every forged or invalid token of its own issuer, and changes no row', async () => {
    const [h, p, s] = (await server.apiToken(localId(acmeId), 'VIEWER')).split('.');
    const before = await snapshot(server);
    const adminJti = decodeJwt(server.adminToken).jti as string;
    const own = await serverKey(server);
    const claims = { flotilla: { kind: 'ADMIN' } };
    const sign = (build: (jwt: SignJWT) => SignJWT, key: { kid: string; key: CryptoKey } = own) =>
      build(
        new SignJWT(claims)
          .setProtectedHeader({ alg: 'ES256', kid: key.kid })
          .setSubject('platform-admin')
          .setJti(adminJti)
          .setIssuedAt(),
      ).sign(key.key);

    // The key itself is accepted when everything else is right, so each case below differs in one thing only.
    const genuine = await sign((j) =>
      j
        .setIssuer('flotilla')
        .setAudience('flotilla')
        .setExpirationTime(nowSeconds() + 600),
    );
    expect((await server.gql(VIEWER_QUERY, undefined, genuine)).status).toBe(200);

    const jwk = (await (await fetch(`${server.app.url}/.well-known/jwks.json`)).json()) as { keys: JWK[] };
    const publicPem = await exportSPKI((await importJWK(jwk.keys[0], 'ES256')) as CryptoKey);
    const payload = {
      iss: 'flotilla',
      aud: 'flotilla',
      sub: 'platform-admin',
      jti: adminJti,
      iat: nowSeconds(),
      flotilla: { kind: 'ADMIN' },
    };
    const unknownKey = await generateKeyPair('ES256');

    const escalated = {
      ...(JSON.parse(Buffer.from(p, 'base64url').toString()) as JWTPayload),
      flotilla: { kind: 'ADMIN' },
    };

    const cases: [string, string, RegExp][] = [
      [
        'alg none',
        `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(payload)}.`,
        /algorithm none is not accepted/,
      ],
      [
        'HS256 keyed with the public JWK',
        await new SignJWT(claims)
          .setProtectedHeader({ alg: 'HS256', kid: own.kid })
          .setIssuer('flotilla')
          .setAudience('flotilla')
          .setSubject('platform-admin')
          .setJti(adminJti)
          .sign(new TextEncoder().encode(JSON.stringify(jwk.keys[0]))),
        /algorithm HS256 is not accepted/,
      ],
      [
        'HS256 keyed with the public PEM',
        await new SignJWT(claims)
          .setProtectedHeader({ alg: 'HS256', kid: own.kid })
          .setIssuer('flotilla')
          .setAudience('flotilla')
          .setSubject('platform-admin')
          .setJti(adminJti)
          .sign(new TextEncoder().encode(publicPem)),
        /algorithm HS256 is not accepted/,
      ],
      ['wrong issuer', await sign((j) => j.setIssuer('evil').setAudience('flotilla')), /issuer is not trusted/],
      ['wrong audience', await sign((j) => j.setIssuer('flotilla').setAudience('someone-else')), /"aud"/],
      [
        'expired',
        await sign((j) =>
          j
            .setIssuer('flotilla')
            .setAudience('flotilla')
            .setExpirationTime(nowSeconds() - 60),
        ),
        /expired/,
      ],
      [
        'not yet valid',
        await sign((j) =>
          j
            .setIssuer('flotilla')
            .setAudience('flotilla')
            .setNotBefore(nowSeconds() + 3600),
        ),
        /"nbf"/,
      ],
      [
        'unknown kid',
        await sign((j) => j.setIssuer('flotilla').setAudience('flotilla'), {
          kid: 'no-such-kid',
          key: unknownKey.privateKey,
        }),
        /unknown key/,
      ],
      ['tampered payload', `${h}.${base64url(escalated)}.${s}`, /signature is not valid/],
      [
        'unknown token id',
        await new SignJWT(claims)
          .setProtectedHeader({ alg: 'ES256', kid: own.kid })
          .setIssuer('flotilla')
          .setAudience('flotilla')
          .setSubject('platform-admin')
          .setJti('01900000-0000-7000-8000-000000000000')
          .sign(own.key),
        /not known/,
      ],
      ['not a JWT', 'definitely.not.ajwt', /malformed/],
    ];
    for (const [name, token, message] of cases) {
      const res = await server.gql(
        CREATE_TENANT,
        { input: { slug: `forged-${name.replace(/\W+/g, '-').slice(0, 30)}`, name } },
        token,
      );
      expect({ name, status: res.status, code: codeOf(res) }).toEqual({ name, status: 401, code: 'UNAUTHENTICATED' });
      expect(res.body.errors?.[0].message, name).toMatch(message);
      expect(res.body.data ?? null).toBeNull();
    }
    expect(await snapshot(server)).toEqual(before);
  });

  it('creates API tokens for tenant ADMINs only, lists them without the secret, and revokes them', async () => {
    const viewer = await server.apiToken(localId(acmeId), 'VIEWER');
    const admin = await server.apiToken(localId(acmeId), 'ADMIN');
    const before = await server.app.db.orm.em.fork().count(ApiToken, {});

    const refused = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: acmeId, role: 'ADMIN', ttlSeconds: 3600 } },
      viewer,
    );
    expect(refused.body.data?.createApiToken).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });
    const foreign = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: otherId, role: 'VIEWER', ttlSeconds: 3600 } },
      admin,
    );
    expect(foreign.body.data?.createApiToken).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });
    const badTtl = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: acmeId, role: 'VIEWER', ttlSeconds: 5 } },
      admin,
    );
    expect(badTtl.body.data?.createApiToken).toMatchObject({
      __typename: 'ValidationError',
      field: 'input.ttlSeconds',
    });
    expect(await server.app.db.orm.em.fork().count(ApiToken, {})).toBe(before);
    const audit = await server.app.db.orm.em
      .fork()
      .find(AuditEntry, { action: 'createApiToken' }, { orderBy: { id: 'asc' } });
    expect(audit.map((a) => a.outcome)).toEqual(['FORBIDDEN', 'NOT_FOUND', 'VALIDATION_FAILED']);

    const created = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: acmeId, role: 'OPERATOR', ttlSeconds: 3600 } },
      admin,
    );
    const payload = created.body.data?.createApiToken;
    expect(payload?.__typename).toBe('CreateApiTokenPayload');
    expect(payload?.apiToken).toMatchObject({ role: 'OPERATOR', revokedAt: null });
    const secret = payload?.token as string;

    // The new token works, and only for its own tenant and role.
    const own = await server.gql<{ viewer: { platformAdmin: boolean }; tenants: { totalCount: number } }>(
      '{ viewer { platformAdmin } tenants { totalCount } }',
      undefined,
      secret,
    );
    expect(own.body.data).toEqual({ viewer: { platformAdmin: false }, tenants: { totalCount: 1 } });
    const escalate = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: acmeId, role: 'ADMIN', ttlSeconds: 3600 } },
      secret,
    );
    expect(escalate.body.data?.createApiToken.__typename).toBe('ForbiddenError');

    const list = await server.gql<{
      tenant: {
        apiTokens: { totalCount: number; edges: { node: { id: string; role: string; lastUsedAt: string | null } }[] };
      };
    }>(
      'query($id: ID!) { tenant(id: $id) { apiTokens(first: 100) { totalCount edges { node { id role lastUsedAt revokedAt expiresAt createdAt } } } } }',
      { id: acmeId },
      admin,
    );
    const listed = list.body.data?.tenant.apiTokens.edges.find((e) => e.node.id === payload?.apiToken?.id);
    expect(listed?.node.role).toBe('OPERATOR');
    expect(listed?.node.lastUsedAt).not.toBeNull();
    expect(JSON.stringify(list.body)).not.toContain(secret.split('.')[2]);
    const viewerList = await server.gql(
      'query($id: ID!) { tenant(id: $id) { apiTokens { totalCount } } }',
      { id: acmeId },
      viewer,
    );
    expect(codeOf(viewerList)).toBe('FORBIDDEN');

    // Another tenant's ADMIN cannot even see the token exists.
    const otherAdmin = await server.apiToken(localId(otherId), 'ADMIN');
    const hidden = await server.gql<{ revokeToken: { __typename: string } }>(
      REVOKE_TOKEN,
      { input: { tokenId: payload?.apiToken?.id } },
      otherAdmin,
    );
    expect(hidden.body.data?.revokeToken.__typename).toBe('NotFoundError');

    const revoked = await server.gql<{ revokeToken: { __typename: string; revokedAt: string } }>(
      REVOKE_TOKEN,
      { input: { tokenId: payload?.apiToken?.id } },
      admin,
    );
    expect(revoked.body.data?.revokeToken.__typename).toBe('RevokeTokenPayload');
    const after = await server.gql(VIEWER_QUERY, undefined, secret);
    expect(after.status).toBe(401);
    expect(after.body.errors?.[0].message).toMatch(/revoked/);
    const row = await server.app.db.orm.em
      .fork()
      .findOneOrFail(ApiToken, { id: localId(payload?.apiToken?.id as string) });
    expect(row.revokedAt).not.toBeNull();
    const revocations = await server.app.db.orm.em
      .fork()
      .find(AuditEntry, { action: 'revokeToken' }, { orderBy: { id: 'asc' } });
    expect(revocations.map((a) => [a.outcome, a.targetId])).toEqual([
      ['NOT_FOUND', row.id],
      ['ok', row.id],
    ]);
  });

  it('accepts OIDC tokens (RS256 and ES256) and maps groups to tenant roles and platform admin', async () => {
    const admin = await idpToken(rsaKey, { sub: 'alice', groups: ['acme-admins'] });
    const me = await server.gql<{
      viewer: { subject: string; platformAdmin: boolean };
      tenants: { edges: { node: { slug: string } }[] };
    }>('{ viewer { subject platformAdmin } tenants { edges { node { slug } } } }', undefined, admin);
    expect(me.body.data).toEqual({
      viewer: { subject: 'idp|alice', platformAdmin: false },
      tenants: { edges: [{ node: { slug: 'acme' } }] },
    });
    const created = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: acmeId, role: 'VIEWER', ttlSeconds: 600 } },
      admin,
    );
    expect(created.body.data?.createApiToken.__typename).toBe('CreateApiTokenPayload');

    const viewer = await idpToken(ecKey, { sub: 'bob', groups: ['acme-viewers'] });
    const refused = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: acmeId, role: 'VIEWER', ttlSeconds: 600 } },
      viewer,
    );
    expect(refused.body.data?.createApiToken.__typename).toBe('ForbiddenError');

    const ops = await idpToken(ecKey, { sub: 'carol', groups: ['ops'] });
    const opsView = await server.gql<{ viewer: { platformAdmin: boolean } }>(VIEWER_QUERY, undefined, ops);
    expect(opsView.body.data?.viewer.platformAdmin).toBe(true);

    // No mapped group: sees nothing, until a membership names its subject.
    const nobody = await idpToken(rsaKey, { sub: 'dave', groups: ['unrelated'] });
    const none = await server.gql<{ tenants: { totalCount: number } }>('{ tenants { totalCount } }', undefined, nobody);
    expect(none.body.data?.tenants.totalCount).toBe(0);
    const added = await server.gql<{ addMember: { __typename: string } }>(
      'mutation($i: AddMemberInput!) { addMember(input: $i) { __typename } }',
      { i: { tenantId: otherId, subject: 'idp|dave', role: 'VIEWER' } },
    );
    expect(added.body.data?.addMember.__typename).toBe('AddMemberPayload');
    const member = await server.gql<{ tenants: { edges: { node: { slug: string } }[] } }>(
      '{ tenants { edges { node { slug } } } }',
      undefined,
      nobody,
    );
    expect(member.body.data?.tenants.edges.map((e) => e.node.slug)).toEqual(['other']);
  });

  it('refuses OIDC tokens with a wrong audience, expired, HS256 against its keys, unknown keys, or when its JWKS is down', async () => {
    const before = await snapshot(server);
    const rsaPem = await exportSPKI((await importJWK(rsaKey.publicJwk, 'RS256')) as CryptoKey);
    const cases: [string, string, RegExp][] = [
      ['wrong audience', await idpToken(rsaKey, { sub: 'alice', groups: ['ops'] }, { audience: 'other-api' }), /"aud"/],
      ['expired', await idpToken(rsaKey, { sub: 'alice', groups: ['ops'] }, { expiresIn: -60 }), /expired/],
      [
        'issuer not configured',
        await idpToken(rsaKey, { sub: 'alice', groups: ['ops'] }, { issuer: 'https://evil.test' }),
        /issuer is not trusted/,
      ],
      [
        'HS256 keyed with the RSA public key',
        await new SignJWT({ sub: 'alice', groups: ['ops'] })
          .setProtectedHeader({ alg: 'HS256', kid: rsaKey.kid })
          .setIssuer(OIDC_ISSUER)
          .setAudience(AUDIENCE)
          .setExpirationTime(nowSeconds() + 600)
          .sign(new TextEncoder().encode(rsaPem)),
        /algorithm HS256 is not accepted/,
      ],
      [
        'signed by a key not in the JWKS',
        await idpToken(await idpKey('RS256', 'rogue'), { sub: 'alice', groups: ['ops'] }),
        /unknown key/,
      ],
      [
        'without exp',
        await new SignJWT({ sub: 'alice', groups: ['ops'] })
          .setProtectedHeader({ alg: 'ES256', kid: ecKey.kid })
          .setIssuer(OIDC_ISSUER)
          .setAudience(AUDIENCE)
          .sign(ecKey.privateKey),
        /"exp"/,
      ],
      [
        'JWKS unreachable',
        await idpToken(rsaKey, { sub: 'alice', groups: ['ops'] }, { issuer: DOWN_ISSUER }),
        /keys are unavailable/,
      ],
    ];
    for (const [name, token, message] of cases) {
      const res = await server.gql(CREATE_TENANT, { input: { slug: 'oidc-forged', name } }, token);
      expect({ name, status: res.status, code: codeOf(res) }).toEqual({ name, status: 401, code: 'UNAUTHENTICATED' });
      expect(res.body.errors?.[0].message, name).toMatch(message);
    }
    expect(await snapshot(server)).toEqual(before);
  });

  it('picks up a rotated OIDC key (unknown kid refreshes the JWKS) and denies when the JWKS goes down', async () => {
    const rotated = await idpKey('RS256', 'rsa-2');
    const early = await idpToken(rotated, { sub: 'erin', groups: ['ops'] });
    expect((await server.gql(VIEWER_QUERY, undefined, early)).status).toBe(401);
    jwks.keys = [...jwks.keys, rotated.publicJwk];
    const res = await server.gql<{ viewer: { platformAdmin: boolean } }>(
      VIEWER_QUERY,
      undefined,
      await idpToken(rotated, { sub: 'erin', groups: ['ops'] }),
    );
    expect(res.body.data?.viewer.platformAdmin).toBe(true);

    await jwks.close();
    const unseen = await idpKey('ES256', 'ec-after-outage');
    const denied = await server.gql(VIEWER_QUERY, undefined, await idpToken(unseen, { sub: 'erin', groups: ['ops'] }));
    expect(denied.status).toBe(401);
    expect(codeOf(denied)).toBe('UNAUTHENTICATED');
  });

  it('accepts HS256 tokens of a configured shared secret only', async () => {
    const good = await server.gql<{ tenants: { edges: { node: { slug: string } }[] } }>(
      '{ tenants { edges { node { slug } } } }',
      undefined,
      await hsToken({ sub: 'svc', groups: ['acme-viewers'] }),
    );
    expect(good.body.data?.tenants.edges.map((e) => e.node.slug)).toEqual(['acme']);
    const wrongSecret = await server.gql(
      VIEWER_QUERY,
      undefined,
      await hsToken({ sub: 'svc' }, 'another-secret-that-is-long-enough-to-pass'),
    );
    expect(wrongSecret.status).toBe(401);
    expect(wrongSecret.body.errors?.[0].message).toMatch(/signature is not valid/);
    const asOwnIssuer = await server.gql(
      VIEWER_QUERY,
      undefined,
      await hsToken({ sub: 'platform-admin' }, HS_SECRET, 'flotilla'),
    );
    expect(asOwnIssuer.status).toBe(401);
  });

  it('refuses oversized, deep, complex, wide and alias-bomb documents and huge pages, changing no row', async () => {
    const before = await snapshot(server);
    const url = server.app.graphqlUrl;
    const auth = { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` };

    const huge = JSON.stringify({
      query: `mutation { createTenant(input: {slug: "big", name: "${'x'.repeat(1024 * 1024)}"}) { __typename } }`,
    });
    const tooLarge = await post(url, huge, auth);
    expect({ status: tooLarge.status, code: tooLarge.code }).toEqual({ status: 413, code: 'PAYLOAD_TOO_LARGE' });

    const chunked = await fetch(url, {
      method: 'POST',
      headers: auth,
      body: new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(JSON.stringify({ query: VIEWER_QUERY })));
          controller.close();
        },
      }),
      duplex: 'half',
    } as RequestInit & { duplex: 'half' });
    expect(chunked.status).toBe(411);

    const deep = await server.gql('{ tenants { edges { node { members { edges { node { subject } } } } } } }');
    expect(codeOf(deep)).toBe('QUERY_TOO_DEEP');
    const shallowEnough = await server.gql('{ tenants { edges { node { members { totalCount } } } } }');
    expect(shallowEnough.body.errors).toBeUndefined();

    const complex = await server.gql(
      'query($n: Int) { tenants(first: $n) { edges { node { members(first: $n) { totalCount pageInfo { hasNextPage } } } } } }',
      { n: 100 },
    );
    expect(codeOf(complex)).toBe('QUERY_TOO_COMPLEX');
    const sameWithSmallPages = await server.gql(
      'query($n: Int) { tenants(first: $n) { edges { node { members(first: $n) { totalCount pageInfo { hasNextPage } } } } } }',
      { n: 5 },
    );
    expect(sameWithSmallPages.body.errors).toBeUndefined();

    const wide = await server.gql(`{ ${'__typename '.repeat(6000)} }`);
    expect(codeOf(wide)).toBe('TOO_MANY_TOKENS');

    const aliases = Array.from(
      { length: 40 },
      (_, i) => `a${i}: createTenant(input: {slug: "alias-${i}", name: "x"}) { __typename }`,
    ).join(' ');
    const bomb = await server.gql(`mutation { ${aliases} }`);
    expect(codeOf(bomb)).toBe('TOO_MANY_ALIASES');

    expect(codeOf(await server.gql('{ tenants(first: 1000000) { totalCount } }'))).toBe('QUERY_TOO_COMPLEX');
    expect(codeOf(await server.gql('{ tenants(first: 101) { totalCount } }'))).toBe('VALIDATION_FAILED');

    // Introspection is on by default.
    const intro = await server.gql<{ __schema: { queryType: { name: string } } }>(
      '{ __schema { queryType { name } } }',
    );
    expect(intro.body.data?.__schema.queryType.name).toBe('Query');
    expect(await snapshot(server)).toEqual(before);
  });

  it('refuses cross-site (CSRF-able) requests and mutations over GET', async () => {
    const before = await snapshot(server);
    const url = server.app.graphqlUrl;
    const body = JSON.stringify({
      query: 'mutation { createTenant(input: {slug: "csrf", name: "x"}) { __typename } }',
    });
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const res = await post(url, body, { 'content-type': type });
      expect({ type, status: res.status, code: res.code }).toEqual({ type, status: 403, code: 'CSRF_REJECTED' });
    }
    const get = await fetch(`${url}?query=${encodeURIComponent(VIEWER_QUERY)}`);
    expect(get.status).toBe(403);
    // A browser opening a shared GraphiQL link gets the page (which runs nothing by itself).
    const page = await fetch(`${url}?query=${encodeURIComponent(VIEWER_QUERY)}`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('GraphiQL');
    // A JSON post passes the CSRF check (and then needs a token).
    expect((await post(url, body, { 'content-type': 'application/json' })).status).toBe(401);
    const mutationOverGet = await fetch(
      `${url}?query=${encodeURIComponent('mutation { createTenant(input: {slug: "via-get", name: "x"}) { __typename } }')}`,
      {
        headers: { authorization: `Bearer ${server.adminToken}` },
      },
    );
    expect(mutationOverGet.status).toBe(405);
    expect(await snapshot(server)).toEqual(before);
  });

  it('closes a socket with 4403 when its token expires, and when its token is revoked', async () => {
    const wsUrl = server.app.graphqlUrl.replace(/^http/, 'ws');
    const shortLived = await server.app.db.orm.em
      .fork()
      .transactional((em) =>
        server.app
          .tokens()
          .mint(em, { kind: 'API', subject: 'short', tenantId: localId(acmeId), role: 'VIEWER', ttlSeconds: 2 }),
      );
    const expiring = await openSocket(wsUrl, shortLived.token);
    expect(await expiring.closed).toEqual({ code: 4403, reason: 'token expired' });

    const admin = await server.apiToken(localId(acmeId), 'ADMIN');
    const created = await server.gql<CreatedToken>(
      CREATE_API_TOKEN,
      { input: { tenantId: acmeId, role: 'VIEWER', ttlSeconds: 600 } },
      admin,
    );
    const token = created.body.data?.createApiToken;
    const live = await openSocket(wsUrl, token?.token as string);
    await server.gql(REVOKE_TOKEN, { input: { tokenId: token?.apiToken?.id } }, admin);
    expect(await live.closed).toEqual({ code: 4403, reason: 'token revoked' });

    // Revoked elsewhere (another replica writes the row): the socket's next operation ends it.
    const elsewhere = await server.apiToken(localId(acmeId), 'VIEWER');
    const socket = new WebSocket(wsUrl, 'graphql-transport-ws');
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    await new Promise<void>((resolve) => {
      socket.on('open', () =>
        socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${elsewhere}` } })),
      );
      socket.on('message', (data) => {
        if ((JSON.parse(data.toString()) as { type: string }).type === 'connection_ack') resolve();
      });
    });
    // As another replica revokes: the row and TOKEN_REVOKED in one transaction, no local session ended.
    await inTransaction(server.app.db.orm.em.fork(), (em) =>
      revokeToken(em, decodeJwt(elsewhere).jti as string, null, new Date()),
    );
    await server.app.events().settle();
    socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: VIEWER_QUERY } }));
    expect(await closed).toEqual({ code: 4403, reason: 'token revoked' });
    expect(server.app.sessions.size).toBe(0);
  });

  it('rotates its own signing key: old tokens verify until their key is removed', async () => {
    const orm = server.app.db.orm;
    const oldToken = await server.apiToken(localId(acmeId), 'VIEWER');
    // What `flotilla keys rotate` does, from another process's point of view.
    const cli = new SigningKeys(orm, undefined);
    await cli.init();
    const oldKid = cli.list().find((k) => k.signing)?.kid as string;
    const newKid = await cli.rotate();
    const minted = await orm.em.fork().transactional((em) =>
      new TokenService(orm, cli, { issuer: 'flotilla', audience: 'flotilla' }).mint(em, {
        kind: 'API',
        subject: 'rotated',
        tenantId: localId(acmeId),
        role: 'VIEWER',
        ttlSeconds: 600,
      }),
    );
    expect((await server.gql(VIEWER_QUERY, undefined, minted.token)).status).toBe(200);
    expect((await server.gql(VIEWER_QUERY, undefined, oldToken)).status).toBe(200);
    const served = (await (await fetch(`${server.app.url}/.well-known/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    expect(served.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([oldKid, newKid]));

    expect(await cli.remove(oldKid)).toBe(true);
    await server.app.keys()?.reload(); // what the periodic reload does
    const refused = await server.gql(VIEWER_QUERY, undefined, oldToken);
    expect(refused.status).toBe(401);
    expect((await server.gql(VIEWER_QUERY, undefined, minted.token)).status).toBe(200);
    await expect(cli.remove(newKid)).rejects.toThrow(/active signing key/);
  });
});

describe.each(DRIVERS)('strict limits on %s', (kind) => {
  const VIEWER = '{ viewer { subject } }';
  const INTROSPECT = '{ __schema { queryType { name } } }';
  let server: TestServer;
  let offsetMs = 0;

  beforeAll(async () => {
    const file = join(tempDir('flotilla-persisted-'), 'operations.json');
    writeFileSync(file, JSON.stringify({ [sha256(VIEWER)]: VIEWER, [sha256(INTROSPECT)]: INTROSPECT }));
    server = await startTestServer(kind, {
      clock: { now: () => new Date(Date.now() + offsetMs) },
      env: {
        FLOTILLA_PERSISTED_OPERATIONS_FILE: file,
        FLOTILLA_PERSISTED_OPERATIONS_ONLY: 'true',
        FLOTILLA_RATE_LIMIT_PER_MINUTE: '5',
        FLOTILLA_INTROSPECTION: 'false',
      },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  const persisted = (query: string, token: string) =>
    post(
      server.app.graphqlUrl,
      JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: sha256(query) } } }),
      {
        'content-type': 'application/json',
        authorization: `Bearer ${token}`,
      },
    );

  async function adminToken(subject: string): Promise<string> {
    const minted = await server.app.db.orm.em
      .fork()
      .transactional((em) => server.app.tokens().mint(em, { kind: 'ADMIN', subject, ttlSeconds: 3600 }));
    return minted.token;
  }

  it('runs only persisted operations, with introspection off', async () => {
    const token = await adminToken('persisted');
    const text = await server.gql(VIEWER);
    expect({ status: text.status, code: codeOf(text) }).toEqual({ status: 400, code: 'PERSISTED_QUERY_ONLY' });
    const unknown = await post(
      server.app.graphqlUrl,
      JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: sha256('{ nope }') } } }),
      {
        'content-type': 'application/json',
        authorization: `Bearer ${token}`,
      },
    );
    expect({ status: unknown.status, code: unknown.code }).toEqual({ status: 400, code: 'PERSISTED_QUERY_NOT_FOUND' });
    const known = await persisted(VIEWER, token);
    expect(known.status).toBe(200);
    expect(JSON.parse(known.text)).toEqual({ data: { viewer: { subject: 'persisted' } } });
    const intro = await persisted(INTROSPECT, token);
    expect(intro.text).toMatch(/introspection/i);
    expect(JSON.parse(intro.text).data ?? null).toBeNull();
  });

  it('applies persisted-only mode over WebSocket too', async () => {
    const client = server.ws(await adminToken('ws-persisted'));
    await expect(wsRequest(client, VIEWER)).rejects.toThrow(/only persisted operations/);
    const result = await new Promise<unknown>((resolve, reject) => {
      let last: unknown;
      client.subscribe(
        { query: '', extensions: { persistedQuery: { version: 1, sha256Hash: sha256(VIEWER) } } },
        { next: (value) => (last = value), error: reject, complete: () => resolve(last) },
      );
    });
    expect(result).toEqual({ data: { viewer: { subject: 'ws-persisted' } } });
  });

  it('refuses HS256 tokens when no shared secret is configured', async () => {
    const res = await persisted(VIEWER, await hsToken({ sub: 'svc' }));
    expect({ status: res.status, code: res.code }).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
  });

  it('rate-limits per token with 429 RATE_LIMITED, and refills over time', async () => {
    const busy = await adminToken('busy');
    const calm = await adminToken('calm');
    for (let i = 0; i < 5; i += 1) expect((await persisted(VIEWER, busy)).status).toBe(200);
    const limited = await fetch(server.app.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${busy}` },
      body: JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: sha256(VIEWER) } } }),
    });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('12');
    expect(((await limited.json()) as GraphQLResponse['body']).errors?.[0].extensions?.code).toBe('RATE_LIMITED');
    // Another token has its own budget.
    expect((await persisted(VIEWER, calm)).status).toBe(200);
    offsetMs += 12_000;
    expect((await persisted(VIEWER, busy)).status).toBe(200);
    expect((await persisted(VIEWER, busy)).status).toBe(429);
  });
});

describe('database down (postgres)', () => {
  it('denies requests while their token cannot be checked, and serves again when the database returns', async () => {
    const server = await startTestServer('postgres');
    const admin = new pg.Client({ connectionString: inject('pgAdminUrl') });
    await admin.connect();
    const database = new URL(server.databaseUrl).pathname.slice(1);
    try {
      expect((await server.gql(VIEWER_QUERY)).status).toBe(200);
      // Never presented before, so not among the verified tokens this process remembers.
      const unseen = (
        await server.app.db.orm.em
          .fork()
          .transactional((em) =>
            server.app.tokens().mint(em, { kind: 'ADMIN', subject: 'platform-admin', ttlSeconds: 600 }),
          )
      ).token;
      await admin.query(`alter database "${database}" allow_connections false`);
      await admin.query(
        'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
        [database],
      );
      const denied = await server.gql(VIEWER_QUERY, undefined, unseen);
      expect({ status: denied.status, code: codeOf(denied) }).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
      expect(denied.body.data ?? null).toBeNull();
      await admin.query(`alter database "${database}" allow_connections true`);
      let status = 0;
      // The pool reconnects on its own; the first attempts may still meet a dead connection.
      for (let attempt = 0; attempt < 5 && status !== 200; attempt += 1)
        status = (await server.gql(VIEWER_QUERY)).status;
      expect(status).toBe(200);
    } finally {
      await admin.query(`alter database "${database}" allow_connections true`).catch(() => undefined);
      await admin.end();
      await server.close();
    }
  });
});
