import { createClient, type FlotillaClient } from '../../src/client/index.js';
import {
  type OidcTokens,
  refreshTokens,
  renewAt,
  type SignInConfig,
  startSignIn,
  storedTokens,
  storeTokens,
} from './oidc.js';

const TOKEN_KEY = 'flotilla.token';
/** Where GraphiQL keeps its request headers (same origin), so it opens already signed in. */
const GRAPHIQL_HEADERS_KEY = 'graphiql:headers';

export type ConnectionState = 'offline' | 'connecting' | 'live' | 'reconnecting' | 'resumed';

type Listener = (state: ConnectionState) => void;

/** The signed-in token (kept in session storage) and the one SDK client built on it. */
export class Session {
  private client: FlotillaClient | null = null;
  private listeners = new Set<Listener>();
  private renewal: ReturnType<typeof setTimeout> | null = null;
  /** A renewal is under way (a rotated refresh token must not be spent twice). */
  private renewing = false;
  state: ConnectionState = 'offline';

  get token(): string | null {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  signIn(token: string): void {
    sessionStorage.setItem(TOKEN_KEY, token.trim());
    localStorage.setItem(GRAPHIQL_HEADERS_KEY, JSON.stringify({ Authorization: `Bearer ${token.trim()}` }, null, 2));
    void this.client?.close();
    this.client = null;
  }

  /**
   * Signed in through the OIDC provider: the ID token goes to Flotilla. Unlike a pasted token it is
   * kept in this tab only (GraphiQL's headers live in localStorage, so it does not get it).
   */
  signInWithOidc(tokens: OidcTokens, config: SignInConfig, onEnded: (reason: string) => void): void {
    storeTokens(tokens);
    sessionStorage.setItem(TOKEN_KEY, tokens.idToken);
    void this.client?.close();
    this.client = null;
    this.scheduleRenewal(config, onEnded);
  }

  /** The OIDC tokens of this tab's sign-in, if it was one. */
  get oidc(): OidcTokens | null {
    return storedTokens();
  }

  /**
   * Renews the OIDC sign-in before its ID token expires: with the refresh token, or, when the
   * provider gave none, by a silent re-login (prompt=none; the provider's own session signs in
   * again without a form, or the sign-in view comes back). The SDK reads the token per request
   * (and per reconnect), so open views keep working with the new one.
   */
  scheduleRenewal(config: SignInConfig, onEnded: (reason: string) => void = () => undefined): void {
    if (this.renewing) return;
    if (this.renewal) clearTimeout(this.renewal);
    this.renewal = null;
    const tokens = storedTokens();
    if (!tokens) return;
    this.renewal = setTimeout(
      () => {
        this.renewal = null;
        this.renewing = true;
        void this.renew(config, tokens, onEnded).then((renewed) => {
          this.renewing = false;
          if (renewed) this.scheduleRenewal(config, onEnded);
        });
      },
      Math.max(0, renewAt(tokens) - Date.now()),
    );
  }

  /** True when new tokens are in place (the next renewal is to be scheduled). */
  private async renew(config: SignInConfig, tokens: OidcTokens, onEnded: (reason: string) => void): Promise<boolean> {
    try {
      if (!tokens.refreshToken) {
        await startSignIn(config, { silent: true }); // the page leaves for the provider
        return false;
      }
      const next = await refreshTokens(config, tokens);
      if (storedTokens()?.idToken !== tokens.idToken) return false; // signed out (or in again) meanwhile
      storeTokens(next);
      sessionStorage.setItem(TOKEN_KEY, next.idToken);
      return true;
    } catch (err) {
      this.signOut();
      onEnded(`Your sign-in could not be renewed: ${(err as Error).message} Sign in again.`);
      return false;
    }
  }

  signOut(): void {
    if (this.renewal) clearTimeout(this.renewal);
    this.renewal = null;
    storeTokens(null);
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(GRAPHIQL_HEADERS_KEY);
    void this.client?.close();
    this.client = null;
    this.setState('offline');
  }

  api(): FlotillaClient {
    this.client ??= createClient({
      url: new URL('/graphql', location.href).toString(),
      token: () => this.token ?? '',
      // A closed socket alone is not news (it also closes when a view no longer subscribes);
      // views report real reconnects through the SDK's onReconnect.
      onConnectionChange: (change) => {
        if (change === 'connected') this.setState(this.state === 'reconnecting' ? 'resumed' : 'live');
        else if (change === 'connecting' && this.state === 'offline') this.setState('connecting');
      },
    });
    return this.client;
  }

  onState(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  setState(state: ConnectionState): void {
    this.state = state;
    for (const l of this.listeners) l(state);
  }
}

export const session = new Session();
