import { schema } from '../../resolvers/index.js';
import { ensureAdminToken, mintAdminToken } from '../auth/bootstrap.js';
import { acceptedAudiences, dashboardSignIn } from '../auth/dashboard-sign-in.js';
import { type ExternalIssuer, Hs256Issuer, OidcIssuer } from '../auth/external.js';
import { IdentityCache } from '../auth/identity-cache.js';
import { SigningKeys } from '../auth/keys.js';
import { SecretKeyring } from '../auth/secret-keys.js';
import { TokenService } from '../auth/tokens.js';
import type { Config } from '../config/index.js';
import { describeDatabase, secretsKeyFile } from '../config/index.js';
import { Database } from '../db/database.js';
import type { Orm } from '../db/orm.js';
import { ChannelDrainer } from '../domain/channel-outbox.js';
import { DomainSweeper } from '../domain/sweeper.js';
import { type EventBus, InProcessBus } from '../events/bus.js';
import type { EventHub } from '../events/hub.js';
import { LOG_START, type LogEvent } from '../events/reader.js';
import { EventStream } from '../events/stream.js';
import { type Clock, systemClock } from '../kernel/clock.js';
import { createLogger, type Logger } from '../kernel/logger.js';
import { ContextFactory } from './context.js';
import { DeliveryGate } from './delivery-gate.js';
import { limitsFromConfig } from './limits.js';
import { LiveExecution } from './live-execution.js';
import { Metrics } from './metrics.js';
import { RateLimiter } from './rate-limit.js';
import { GRAPHQL_PATH, type RunningServer, startHttpServer } from './server.js';
import { SessionRegistry } from './sessions.js';
import { StreamCaps } from './stream-caps.js';

/** How often a server re-reads its signing keys, so a `flotilla keys rotate` elsewhere takes effect. */
export const KEY_RELOAD_INTERVAL_MS = 60_000;

export interface Flotilla {
  url: string;
  graphqlUrl: string;
  port: number;
  db: Database;
  logger: Logger;
  /** Set when this start minted the first platform-admin token. */
  adminToken: { token: string; file: string } | null;
  /** Resolves once the database is connected and migrated. */
  ready: Promise<Orm>;
  http: RunningServer;
  tokens: () => TokenService;
  /** Told after each committed write (services get it through their context). */
  bus: EventBus;
  /** The subscription hub (throws until the database is ready). */
  events: () => EventHub;
  /** Time-driven state (heartbeat TTL, lease expiry, sandbox TTL, audit retention) and placing waiting sandboxes. */
  sweeper: DomainSweeper;
  /** POSTs agent messages queued for chat channels (the channel outbox), with retries. */
  channelDrainer: ChannelDrainer;
  /** The signing keys, once the database is ready. */
  keys: () => SigningKeys | null;
  /** Live WebSocket sessions of this process (expiry and revocation close them). */
  sessions: SessionRegistry;
  /** Caps on sockets and streams per token and operations per socket (what each token holds open). */
  caps: StreamCaps;
  /** Mints another platform-admin token (also written to <dataDir>/admin.token). */
  mintAdminToken(): Promise<string>;
  close(): Promise<void>;
}

export interface StartOptions {
  clock?: Clock;
  logger?: Logger;
  /** Receives every SQL statement the ORM issues (tests count them). */
  onQuery?: (sql: string) => void;
  /** Run the domain sweeper on a timer (default true; tests drive it with runOnce). */
  sweep?: boolean;
  /** Serve the dashboard built into this directory instead of dist/web (a test's own build). */
  dashboardDir?: string;
}

/**
 * Starts a Flotilla server. The HTTP server comes up at once; if the database is down it
 * keeps retrying (readiness false, requests refused as unavailable) and serves when it
 * returns. Pending migrations with migrateOnStart=false are fatal.
 */
export async function startFlotilla(config: Config, options: StartOptions = {}): Promise<Flotilla> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const clock = options.clock ?? systemClock;
  const metrics = new Metrics();
  let keys: SigningKeys | null = null;
  let tokens: TokenService | null = null;
  let adminToken: { token: string; file: string } | null = null;
  let events: EventStream | null = null;
  let closing = false;
  let keyReload: NodeJS.Timeout | null = null;

  const secrets = SecretKeyring.open(config.secretsKey, secretsKeyFile(config));
  const bus = new InProcessBus();
  const channelDrainer = new ChannelDrainer(
    () => (db.isStarted() ? db.orm : null),
    clock,
    {
      retryBaseMs: config.channelRetryBaseMs,
      maxAttempts: config.channelMaxAttempts,
      timeoutMs: config.channelTimeoutMs,
    },
    logger,
    secrets,
  );
  // Aborted when the HTTP server stops taking work: requests that wait (waitForSandbox) answer at once.
  const stopping = new AbortController();
  const identities = new IdentityCache(config.identityCacheSize);
  const stopEvents = async (): Promise<void> => {
    closing = true;
    await events?.close();
  };
  metrics.watchEvents(
    () => events?.stats() ?? { listenerReady: false, listenerReconnects: 0, subscribers: 0, slowClosed: 0 },
  );
  const db = new Database(config.databaseUrl, {
    migrate: config.migrateOnStart,
    logger,
    onQuery: options.onQuery,
    now: () => clock.now(),
    onReady: async (orm) => {
      // Counted per statement knex sends (cheap: no formatting), for /metrics.
      orm.em
        .getConnection()
        .getKnex()
        .on('query', (query: { sql?: string }) => {
          metrics.dbStatements.inc();
          // FLOTILLA_LOG_LEVEL=trace logs every statement (what runs when, e.g. while profiling).
          if (logger.isLevelEnabled('trace')) logger.trace({ sql: query.sql }, 'statement');
        });
      const loaded = new SigningKeys(orm, config.signingKeyFile);
      await loaded.init();
      // A removed key stops verifying: the tokens it signed must be verified again, and refused.
      loaded.onRemoved(() => identities.clear());
      const service = new TokenService(
        orm,
        loaded,
        { issuer: config.tokenIssuer, audience: config.tokenAudience },
        externalIssuers(config),
        identities,
        // Only while the event log is followed do access changes reach the cache.
        () => events?.readiness().ok === true,
      );
      adminToken = await ensureAdminToken(orm, service, {
        dataDir: config.dataDir,
        ttlSeconds: config.adminTokenTtlSeconds,
      });
      keys = loaded;
      tokens = service;
      // A failed start throws here, and the database's retry loop tries again.
      const stream = await EventStream.start(orm, {
        target: config.databaseUrl,
        listenTarget: config.eventListenUrl,
        bus,
        clock,
        retentionSeconds: config.eventRetentionSeconds,
        logger,
        hub: {
          onAccessChange: (event) => forgetAccess(identities, event),
          onEvent: (event) => channelDrainer.noticed(event),
        },
      });
      // Before the stream is published: deliveries left from before a restart are scheduled during the start.
      if (!closing) await channelDrainer.start(orm);
      if (closing) await stream.close();
      else events = stream;
      keyReload = setInterval(() => {
        loaded.reload().catch((err: Error) => logger.warn({ err: err.message }, 'could not reload signing keys'));
        try {
          secrets.reload();
        } catch (err) {
          logger.warn({ err: (err as Error).message }, 'could not reload the secrets keys');
        }
      }, KEY_RELOAD_INTERVAL_MS);
      keyReload.unref();
    },
  });
  logger.info({ database: describeDatabase(config.databaseUrl) }, 'starting');
  await db.start();

  const getTokens = (): TokenService => {
    if (!tokens) throw new Error('tokens are not ready');
    return tokens;
  };
  const limits = limitsFromConfig(config);
  const sessions = new SessionRegistry(clock);
  const sweeper = new DomainSweeper(
    () => (db.isStarted() ? db.orm : null),
    clock,
    config.heartbeatTtlSeconds,
    bus,
    (err) => logger.error({ err: (err as Error).message }, 'domain sweep failed'),
    {
      auditRetentionSeconds: config.auditRetentionSeconds,
      messageRetentionSeconds: config.messageRetentionSeconds,
      messageDispatchTimeoutSeconds: config.dispatchTimeoutSeconds,
    },
  );
  const caps = new StreamCaps({
    maxSubscriptionsPerSocket: config.maxSubscriptionsPerSocket,
    maxSocketsPerToken: config.maxSocketsPerToken,
    maxSseStreamsPerToken: config.maxSseStreamsPerToken,
  });
  const settings = {
    heartbeatTtlSeconds: config.heartbeatTtlSeconds,
    maxPortsPerSandbox: config.maxPortsPerSandbox,
    messageDispatchTimeoutSeconds: config.dispatchTimeoutSeconds,
  };
  const contexts = new ContextFactory(db, getTokens, clock, settings, bus, {
    events: () => events?.hub ?? null,
    sessions,
    rateLimiter: new RateLimiter(config.rateLimitPerMinute, clock),
    maxApiTokenTtlSeconds: config.apiTokenMaxTtlSeconds,
    identities,
    sweep: sweeper,
    logger,
    stopping: stopping.signal,
    secrets,
  });
  const liveExecution = config.sharedSubscriptionExecution
    ? new LiveExecution({
        sharedContext: (identity, em, reads) => contexts.createShared(identity, em, reads),
        fork: () => db.orm.em.fork(),
        batchOf: (event) => events?.hub.batchOf(event),
        position: () => events?.hub.position ?? LOG_START,
        gate: new DeliveryGate(),
      })
    : null;
  metrics.watchLiveExecution(() => liveExecution?.stats() ?? { groups: 0, executions: 0, deliveries: 0 });
  let http: RunningServer;
  try {
    http = await startHttpServer(
      {
        schema,
        db,
        contexts,
        keys: () => keys,
        logger,
        metrics,
        shutdownTimeoutMs: config.shutdownTimeoutMs,
        shutdownDrainMs: config.shutdownDrainMs,
        readiness: () => events?.readiness() ?? { ok: false, reason: 'event stream starting' },
        limits,
        sessions,
        caps,
        liveExecution: liveExecution?.plugin(),
        onStopping: () => stopping.abort(),
        dashboard: { signIn: dashboardSignIn(config) },
        dashboardDir: options.dashboardDir,
      },
      { host: config.host, port: config.port },
    );
  } catch (err) {
    await stopEvents();
    await db.close();
    throw err;
  }
  logger.info({ url: `${http.url}${GRAPHQL_PATH}` }, 'listening');

  if (options.sweep !== false) sweeper.start();

  const ready = db.whenReady();
  ready.catch(() => undefined); // callers that never await it must not see an unhandled rejection

  return {
    url: http.url,
    graphqlUrl: `${http.url}${GRAPHQL_PATH}`,
    port: http.port,
    db,
    logger,
    get adminToken() {
      return adminToken;
    },
    ready,
    http,
    tokens: getTokens,
    bus,
    events: () => {
      if (!events) throw new Error('the event stream is not ready');
      return events.hub;
    },
    sweeper,
    channelDrainer,
    keys: () => keys,
    sessions,
    caps,
    async mintAdminToken() {
      const minted = await mintAdminToken(await ready, getTokens(), {
        dataDir: config.dataDir,
        ttlSeconds: config.adminTokenTtlSeconds,
      });
      return minted.token;
    },
    async close() {
      closing = true;
      if (keyReload) clearInterval(keyReload);
      await sweeper.stop();
      await channelDrainer.stop();
      await http.close();
      await stopEvents();
      await db.close();
      logger.info('stopped');
    },
  };
}

/** The external token sources the config names (OIDC issuers, HS256 shared secrets). */
function externalIssuers(config: Config): ExternalIssuer[] {
  return [
    ...config.oidcIssuers.map((c) => new OidcIssuer(c, acceptedAudiences(config, c.issuer, c.audience))),
    ...config.hs256Issuers.map((c) => new Hs256Issuer(c)),
  ];
}

/** An access change read from the log (any replica's): the cached tokens it affects are verified again. */
function forgetAccess(identities: IdentityCache, event: LogEvent): void {
  const { tokenId, subject } = event.data;
  if (event.type === 'TOKEN_REVOKED' && typeof tokenId === 'string') identities.dropToken(tokenId);
  else if (typeof subject === 'string') identities.dropSubject(subject);
}
