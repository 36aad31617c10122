import { randomUUID } from 'node:crypto';
import type { Context } from '../../resolvers/builder.js';
import type { TokenAuthority } from '../auth/authority.js';
import type { Identity } from '../auth/identity.js';
import type { IdentityCache } from '../auth/identity-cache.js';
import type { SecretKeyring } from '../auth/secret-keys.js';
import { bearerToken, type TokenService } from '../auth/tokens.js';
import type { Database } from '../db/database.js';
import type { Em } from '../db/orm.js';
import type { DomainSettings } from '../domain/context.js';
import { createServices, type Services } from '../domain/services.js';
import type { SharedReads } from '../domain/shared-reads.js';
import type { SweepSignals } from '../domain/sweep-signals.js';
import type { EventBus } from '../events/bus.js';
import type { EventHub } from '../events/hub.js';
import type { Clock } from '../kernel/clock.js';
import { AuthenticationError, DomainError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import { toGraphQLError } from './errors.js';
import type { RateLimiter } from './rate-limit.js';
import type { SessionRegistry } from './sessions.js';

/** Where Pothos keeps a context's caches (its DataLoaders): `context[symbol] || context`. */
const POTHOS_CONTEXT_CACHE = Symbol.for('Pothos.contextCache');

/** What the context factory needs beyond the database and the token service. */
export interface ContextOptions {
  /** The subscription hub, once the event stream runs. */
  events: () => EventHub | null;
  sessions: SessionRegistry;
  rateLimiter: RateLimiter;
  maxApiTokenTtlSeconds: number;
  /** The process's verified tokens: revocations and membership changes committed here drop theirs at once. */
  identities?: IdentityCache | null;
  /** The domain sweeper, told after each commit what may let it place or sweep. */
  sweep?: SweepSignals;
  logger?: Logger;
  /** The keys secrets are encrypted with at rest. */
  secrets?: SecretKeyring;
  /** Aborted when the server stops taking work (see ServiceContext.stopping). */
  stopping?: AbortSignal;
}

/**
 * Builds the per-operation context for HTTP, SSE and WebSocket alike: authenticate (or
 * reuse the identity a socket authenticated with), fork an EntityManager, bind services.
 */
export class ContextFactory {
  constructor(
    private readonly db: Database,
    private readonly tokens: () => TokenService,
    private readonly clock: Clock,
    private readonly settings: DomainSettings,
    private readonly bus: EventBus,
    private readonly options: ContextOptions,
  ) {}

  /** Verifies an Authorization header value; throws a coded GraphQLError when it cannot. */
  async authenticate(authorization: string | null | undefined): Promise<Identity> {
    try {
      return await this.identify(authorization);
    } catch (err) {
      throw toGraphQLError(err as DomainError);
    }
  }

  /** As `authenticate`, but throws the DomainError itself, for callers that act on its code. */
  async identify(authorization: string | null | undefined): Promise<Identity> {
    try {
      const token = bearerToken(authorization);
      if (!token) throw new AuthenticationError('authentication required: send "Authorization: Bearer <token>"');
      // Touch the store first: while it is down, nothing is admitted.
      void this.db.orm;
      return await this.tokens().authenticate(token, this.clock.now());
    } catch (err) {
      if (err instanceof DomainError) throw err;
      // Fail closed: whatever prevented verification, the request is refused.
      throw new AuthenticationError('token could not be verified');
    }
  }

  /**
   * The context of one operation. A socket's identity is re-checked for expiry (its timer may
   * not have fired yet), and every operation counts against its token's rate limit.
   */
  create(
    identity: Identity,
    requestId: string = randomUUID(),
    abortSignal: () => AbortSignal | null = NO_SIGNAL,
  ): Context {
    if (identity.expiresAt && identity.expiresAt.getTime() <= this.clock.now().getTime()) {
      throw toGraphQLError(new AuthenticationError('token has expired'));
    }
    this.options.rateLimiter.enforce(identity.tokenId);
    const tokens: TokenAuthority = {
      mint: (tx, mintOptions, now) => this.tokens().mint(tx, mintOptions, now),
      endSessions: ({ tokenIds, subject }) => {
        for (const tokenId of tokenIds ?? []) this.options.identities?.dropToken(tokenId);
        if (subject) this.options.identities?.dropSubject(subject);
        if (tokenIds?.length) this.options.sessions.endTokens(tokenIds);
        if (subject) this.options.sessions.endSubject(subject);
      },
      membershipChanged: (subject) => this.options.identities?.dropSubject(subject),
      maxApiTokenTtlSeconds: this.options.maxApiTokenTtlSeconds,
    };
    return this.contextOf(identity, requestId, tokens, () => this.db.orm.em.fork(), undefined, abortSignal);
  }

  /**
   * A read-only context for shared subscription execution: no rate limit or expiry check (each
   * subscriber's own were done when it subscribed), and services on the given EntityManager,
   * which every group executing the same event batch shares.
   */
  createShared(identity: Identity, em: Em, sharedReads: SharedReads): Context {
    return this.contextOf(identity, randomUUID(), READ_ONLY_TOKENS, () => em, sharedReads);
  }

  private contextOf(
    identity: Identity,
    requestId: string,
    tokens: TokenAuthority,
    em: () => Em,
    sharedReads?: SharedReads,
    abortSignal: () => AbortSignal | null = NO_SIGNAL,
  ): Context {
    const bind = (as: Identity) =>
      new LazyServices(() =>
        createServices({
          em: em(),
          identity: as,
          clock: this.clock,
          settings: this.settings,
          bus: this.bus,
          tokens,
          events: this.options.events,
          sharedReads,
          sweep: this.options.sweep,
          logger: this.options.logger,
          stopping: this.options.stopping,
          secrets: this.options.secrets,
        }),
      );
    const context: Context & { [POTHOS_CONTEXT_CACHE]: object } = {
      identity,
      services: bind(identity),
      requestId,
      abortSignal,
      // Pothos keys its per-request DataLoaders by this object; replacing it empties them.
      [POTHOS_CONTEXT_CACHE]: {},
      // `this`, not `context`: the server hands resolvers a copy of this object merged into its own.
      renew(this: Context & { [POTHOS_CONTEXT_CACHE]: object }, narrowed?: Identity) {
        const changed = narrowed !== undefined && narrowed !== this.identity;
        // Called per event for every live subscriber: free when nothing read through the services
        // since the last time (DataLoaders load through them, so their cache is still empty).
        if (!changed && this.services instanceof LazyServices && !this.services.isBound) return;
        if (changed) this.identity = narrowed;
        this.services = bind(this.identity);
        // Also drops what was cached for the old identity (DataLoaders, scope-auth's answers).
        this[POTHOS_CONTEXT_CACHE] = {};
      },
    };
    return context;
  }
}

/**
 * Services bound on first use. A live subscription keeps its context for its whole life but,
 * executing through the shared groups, rarely touches it after subscribing, so it must not hold
 * an EntityManager fork meanwhile. Getters live on the prototype, so the server's merge of the
 * context into its own object copies this instance, not the bound services.
 */
class LazyServices implements Services {
  private bound: Services | null = null;
  constructor(private readonly create: () => Services) {}
  get isBound(): boolean {
    return this.bound !== null;
  }
  private get all(): Services {
    this.bound ??= this.create();
    return this.bound;
  }
  get context() {
    return this.all.context;
  }
  get tenants() {
    return this.all.tenants;
  }
  get workers() {
    return this.all.workers;
  }
  get sandboxes() {
    return this.all.sandboxes;
  }
  get sandboxWaits() {
    return this.all.sandboxWaits;
  }
  get leases() {
    return this.all.leases;
  }
  get messages() {
    return this.all.messages;
  }
  get questions() {
    return this.all.questions;
  }

  get deliveries() {
    return this.all.deliveries;
  }
  get events() {
    return this.all.events;
  }
  get apiTokens() {
    return this.all.apiTokens;
  }
  get env() {
    return this.all.env;
  }
  get subscriptions() {
    return this.all.subscriptions;
  }
  get channels() {
    return this.all.channels;
  }
  get channelInbound() {
    return this.all.channelInbound;
  }
}

const NO_SIGNAL = (): AbortSignal | null => null;

/** Shared execution only reads: anything that would mint or end sessions is a bug. */
const READ_ONLY_TOKENS: TokenAuthority = {
  mint: () => {
    throw new Error('shared subscription execution cannot mint tokens');
  },
  endSessions: () => {
    throw new Error('shared subscription execution cannot end sessions');
  },
  membershipChanged: () => {
    throw new Error('shared subscription execution cannot change memberships');
  },
  maxApiTokenTtlSeconds: 0,
};
