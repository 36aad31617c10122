/**
 * Dashboard sign-in through the organisation's OIDC provider: the authorization code flow with
 * PKCE (S256), `state` and `nonce`, as a public client (no secret in the browser). Everything is
 * kept in this tab's sessionStorage, never localStorage. The token sent to Flotilla is the ID
 * token (addressed to the dashboard's client id, which the server accepts for this issuer).
 */

/** What the server says at /dashboard/config.json. */
export interface SignInConfig {
  issuer: string;
  clientId: string;
  scopes: string;
  name: string;
}

interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  end_session_endpoint?: string;
}

/** The sign-in under way in this tab (between leaving for the provider and coming back). */
interface Pending {
  state: string;
  nonce: string;
  verifier: string;
  /** The dashboard route to return to. */
  hash: string;
}

/** The tokens of an OIDC sign-in: the ID token (what Flotilla gets), and a refresh token if given. */
export interface OidcTokens {
  idToken: string;
  refreshToken: string | null;
  /** The ID token's `exp`, in epoch ms. */
  expiresAt: number;
  /** The ID token's `iat`, in epoch ms. */
  issuedAt: number;
}

const PENDING_KEY = 'flotilla.oidc.pending';
const TOKENS_KEY = 'flotilla.oidc.tokens';

let configPromise: Promise<SignInConfig | null> | null = null;
let discoveryPromise: Promise<Discovery> | null = null;

/** The server's sign-in settings (null: only pasted tokens); fetched once per page. */
export function signInConfig(): Promise<SignInConfig | null> {
  configPromise ??= fetch(new URL('/dashboard/config.json', location.href), { cache: 'no-cache' })
    .then(async (res) => (res.ok ? (((await res.json()) as { signIn?: SignInConfig | null }).signIn ?? null) : null))
    .catch(() => null);
  return configPromise;
}

/** The provider's endpoints, from its discovery document (which must name the same issuer). */
function discover(config: SignInConfig): Promise<Discovery> {
  discoveryPromise ??= (async () => {
    const url = `${config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const res = await fetch(url);
    if (!res.ok) throw new Error(`the identity provider's discovery document answered ${res.status}`);
    const doc = (await res.json()) as Discovery;
    if (doc.issuer !== config.issuer)
      throw new Error(`the identity provider calls itself "${doc.issuer}", not "${config.issuer}"`);
    return doc;
  })();
  discoveryPromise.catch(() => {
    discoveryPromise = null;
  });
  return discoveryPromise;
}

function randomString(bytes = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function base64url(bytes: Uint8Array): string {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

async function challengeOf(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** The claims of a JWT, unverified (the server verifies; the browser only reads nonce, aud and exp). */
function claimsOf(jwt: string): Record<string, unknown> {
  const part = jwt.split('.')[1];
  if (!part) throw new Error('the identity provider returned an ID token that is not a JWT');
  const text = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
  const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
}

/** Leaves for the provider's sign-in page. `silent`: prompt=none (a re-login without a form, if its session lives). */
export async function startSignIn(config: SignInConfig, options: { silent?: boolean } = {}): Promise<void> {
  const discovery = await discover(config);
  const pending: Pending = {
    state: randomString(),
    nonce: randomString(),
    verifier: randomString(48),
    hash: location.hash || '#/',
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: config.clientId,
    redirect_uri: redirectUri(),
    scope: config.scopes,
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await challengeOf(pending.verifier),
    code_challenge_method: 'S256',
    ...(options.silent ? { prompt: 'none' } : {}),
  }).toString();
  location.assign(url.toString());
}

/** Where the provider sends the browser back: the dashboard's root (routes live in the hash). */
function redirectUri(): string {
  return new URL('/', location.href).toString();
}

/** True when this page load is the provider sending the browser back (code or error in the query). */
export function isCallback(): boolean {
  const params = new URLSearchParams(location.search);
  return params.has('state') && (params.has('code') || params.has('error'));
}

/**
 * Finishes a sign-in on the way back from the provider: checks `state` against this tab's pending
 * sign-in (a response it did not ask for is refused before anything is exchanged), exchanges the
 * code with the PKCE verifier, checks the ID token's nonce and audience. Returns the tokens and
 * the route to go back to; throws an Error in words otherwise. The query is cleared either way.
 */
export async function completeSignIn(config: SignInConfig): Promise<{ tokens: OidcTokens; hash: string }> {
  const params = new URLSearchParams(location.search);
  const raw = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  history.replaceState(null, '', `${location.pathname}${location.hash}`);
  const pending = raw ? (JSON.parse(raw) as Pending) : null;
  if (!pending || params.get('state') !== pending.state)
    throw new Error(
      'This sign-in response does not belong to a sign-in started in this tab (state mismatch). Sign in again.',
    );
  const error = params.get('error');
  if (error) {
    const described = params.get('error_description');
    throw new Error(`The identity provider refused the sign-in: ${described ? `${described} (${error})` : error}.`);
  }
  const code = params.get('code') as string;
  const discovery = await discover(config);
  const tokens = await tokenRequest(discovery, config, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri(),
    client_id: config.clientId,
    code_verifier: pending.verifier,
  });
  if (claimsOf(tokens.idToken).nonce !== pending.nonce)
    throw new Error('The ID token does not carry the nonce of this sign-in. Sign in again.');
  return { tokens, hash: pending.hash };
}

/** Trades the refresh token for new tokens (a provider may rotate the refresh token). */
export async function refreshTokens(config: SignInConfig, current: OidcTokens): Promise<OidcTokens> {
  if (!current.refreshToken) throw new Error('no refresh token');
  const discovery = await discover(config);
  const next = await tokenRequest(discovery, config, {
    grant_type: 'refresh_token',
    refresh_token: current.refreshToken,
    client_id: config.clientId,
  });
  return { ...next, refreshToken: next.refreshToken ?? current.refreshToken };
}

async function tokenRequest(
  discovery: Discovery,
  config: SignInConfig,
  form: Record<string, string>,
): Promise<OidcTokens> {
  const res = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams(form).toString(),
  });
  const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const reason =
      typeof body.error_description === 'string' ? body.error_description : String(body.error ?? res.status);
    throw new Error(`The identity provider did not issue tokens: ${reason}.`);
  }
  const idToken = body.id_token;
  if (typeof idToken !== 'string')
    throw new Error('The identity provider returned no ID token (is "openid" a scope?).');
  const claims = claimsOf(idToken);
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.iss !== config.issuer || !audiences.includes(config.clientId))
    throw new Error('The ID token was not issued by this issuer for this dashboard.');
  const exp = Number(claims.exp);
  return {
    idToken,
    refreshToken: typeof body.refresh_token === 'string' ? body.refresh_token : null,
    expiresAt: exp * 1000,
    issuedAt: Number(claims.iat ?? Math.floor(Date.now() / 1000)) * 1000,
  };
}

/** Where to send the browser to end the provider's session too, when it offers that; null otherwise. */
export async function endSessionUrl(config: SignInConfig, idToken: string): Promise<string | null> {
  const discovery = await discover(config).catch(() => null);
  if (!discovery?.end_session_endpoint) return null;
  const url = new URL(discovery.end_session_endpoint);
  url.search = new URLSearchParams({
    id_token_hint: idToken,
    client_id: config.clientId,
    post_logout_redirect_uri: redirectUri(),
  }).toString();
  return url.toString();
}

export function storedTokens(): OidcTokens | null {
  const raw = sessionStorage.getItem(TOKENS_KEY);
  return raw ? (JSON.parse(raw) as OidcTokens) : null;
}

export function storeTokens(tokens: OidcTokens | null): void {
  if (tokens) sessionStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
  else sessionStorage.removeItem(TOKENS_KEY);
}

/**
 * When to renew: before expiry by a third of the token's lifetime, at most a minute, so a
 * request never leaves with a token about to lapse.
 */
export function renewAt(tokens: OidcTokens): number {
  const lifetime = Math.max(0, tokens.expiresAt - tokens.issuedAt);
  return tokens.expiresAt - Math.min(60_000, lifetime / 3);
}
