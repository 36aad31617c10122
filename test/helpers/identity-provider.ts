import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { type ProviderContext } from 'oidc-provider';

/**
 * A real OpenID provider (the `oidc-provider` package) on 127.0.0.1, inside the test process: its
 * development login form takes any login and password, the login becomes `sub`, and `groups`
 * maps logins to the groups the ID token carries. One public client (PKCE, no secret) for the
 * dashboard, with refresh tokens. It counts what the token endpoint did.
 */
export interface IdentityProvider {
  issuer: string;
  jwksUrl: string;
  /** Token endpoint requests (any grant, successful or not). */
  tokenRequests: number;
  /** Successful grants by grant type (authorization_code, refresh_token). */
  grants: Record<string, number>;
  /** Login forms the provider showed (devInteractions' login prompt). */
  loginForms: number;
  /** Configures the provider for a dashboard at `origin` (known once Flotilla listens). */
  /** `refreshTokens: false`: the provider issues none (the dashboard then re-logs in silently). */
  serve(options: { origin: string; clientId: string; idTokenTtlSeconds: number; refreshTokens?: boolean }): void;
  close(): Promise<void>;
}

export async function startIdentityProvider(groups: Record<string, string[]>): Promise<IdentityProvider> {
  let provider: Provider | null = null;
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;
  const server: Server = createServer((req, res) => {
    if (req.method === 'POST' && req.url?.startsWith('/token')) idp.tokenRequests += 1;
    if (handler) handler(req, res);
    else {
      res.writeHead(503);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };

  const idp: IdentityProvider = {
    issuer,
    jwksUrl: `${issuer}/jwks`,
    tokenRequests: 0,
    grants: {},
    loginForms: 0,
    serve({ origin, clientId, idTokenTtlSeconds, refreshTokens = true }) {
      provider = new Provider(issuer, {
        clients: [
          {
            client_id: clientId,
            token_endpoint_auth_method: 'none',
            redirect_uris: [`${origin}/`],
            post_logout_redirect_uris: [`${origin}/`],
            grant_types: refreshTokens ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
            response_types: ['code'],
          },
        ],
        jwks: { keys: [signingKey] },
        cookies: { keys: [randomUUID()] },
        scopes: ['openid', 'offline_access', 'groups'],
        claims: { openid: ['sub'], groups: ['groups'] },
        // The ID token carries the scopes' claims itself (the dashboard sends it to Flotilla).
        conformIdTokenClaims: false,
        findAccount: (_ctx: ProviderContext, sub: string) => ({
          accountId: sub,
          claims: async () => ({ sub, groups: groups[sub] ?? [] }),
        }),
        // A first-party client: no consent screen, the grant is made on login.
        loadExistingGrant: async (ctx: ProviderContext) => {
          const { oidc } = ctx;
          const clientId = oidc.client?.clientId as string;
          const existing = oidc.result?.consent?.grantId ?? oidc.session?.grantIdFor(clientId);
          if (existing) return oidc.provider.Grant.find(existing);
          const grant = new oidc.provider.Grant({ clientId, accountId: oidc.session?.accountId as string });
          grant.addOIDCScope('openid groups');
          await grant.save();
          return grant;
        },
        // Refresh tokens without offline_access (which would need a consent prompt).
        issueRefreshToken: async () => refreshTokens,
        features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
        ttl: {
          IdToken: idTokenTtlSeconds,
          AccessToken: idTokenTtlSeconds,
          AuthorizationCode: 60,
          RefreshToken: 3600,
          Session: 3600,
          Interaction: 600,
          Grant: 3600,
        },
      });
      provider.on('interaction.started', (_ctx, prompt) => {
        if ((prompt as { name?: string }).name === 'login') idp.loginForms += 1;
      });
      provider.on('grant.success', (ctx) => {
        const type = String(ctx.oidc.params?.grant_type ?? 'unknown');
        idp.grants[type] = (idp.grants[type] ?? 0) + 1;
      });
      handler = provider.callback();
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return idp;
}
