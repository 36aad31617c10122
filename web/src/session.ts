import { createClient, type FlotillaClient } from '../../src/client/index.js';

const TOKEN_KEY = 'flotilla.token';
/** Where GraphiQL keeps its request headers (same origin), so it opens already signed in. */
const GRAPHIQL_HEADERS_KEY = 'graphiql:headers';

export type ConnectionState = 'offline' | 'connecting' | 'live' | 'reconnecting' | 'resumed';

type Listener = (state: ConnectionState) => void;

/** The signed-in token (kept in session storage) and the one SDK client built on it. */
export class Session {
  private client: FlotillaClient | null = null;
  private listeners = new Set<Listener>();
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

  signOut(): void {
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
