import type { Config } from '../config/index.js';
import { describeDatabase } from '../config/index.js';
import { ensureAdminToken, mintAdminToken } from '../auth/bootstrap.js';
import { SigningKeys } from '../auth/keys.js';
import { TokenService } from '../auth/tokens.js';
import { Database } from '../db/database.js';
import type { Orm } from '../db/orm.js';
import { systemClock, type Clock } from '../domain/context.js';
import { schema } from '../../resolvers/index.js';
import { InProcessBus } from '../events/bus.js';
import { ContextFactory } from './context.js';
import { createLogger, type Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { GRAPHQL_PATH, startHttpServer, type RunningServer } from './server.js';

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
  /** Mints another platform-admin token (also written to <dataDir>/admin.token). */
  mintAdminToken(): Promise<string>;
  close(): Promise<void>;
}

export interface StartOptions {
  clock?: Clock;
  logger?: Logger;
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

  const db = new Database(config.databaseUrl, {
    migrate: config.migrateOnStart,
    logger,
    onReady: async (orm) => {
      const loaded = new SigningKeys(orm, config.signingKeyFile);
      await loaded.init();
      const service = new TokenService(orm, loaded, { issuer: config.tokenIssuer, audience: config.tokenAudience });
      adminToken = await ensureAdminToken(orm, service, { dataDir: config.dataDir, ttlSeconds: config.adminTokenTtlSeconds });
      keys = loaded;
      tokens = service;
    },
  });
  logger.info({ database: describeDatabase(config.databaseUrl) }, 'starting');
  await db.start();

  const getTokens = (): TokenService => {
    if (!tokens) throw new Error('tokens are not ready');
    return tokens;
  };
  const bus = new InProcessBus();
  const contexts = new ContextFactory(db, getTokens, clock, { heartbeatTtlSeconds: config.heartbeatTtlSeconds }, bus);
  let http: RunningServer;
  try {
    http = await startHttpServer(
      { schema, db, contexts, keys: () => keys, logger, metrics, shutdownTimeoutMs: config.shutdownTimeoutMs },
      { host: config.host, port: config.port },
    );
  } catch (err) {
    await db.close();
    throw err;
  }
  logger.info({ url: `${http.url}${GRAPHQL_PATH}` }, 'listening');

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
    async mintAdminToken() {
      const minted = await mintAdminToken(await ready, getTokens(), { dataDir: config.dataDir, ttlSeconds: config.adminTokenTtlSeconds });
      return minted.token;
    },
    async close() {
      await http.close();
      await db.close();
      logger.info('stopped');
    },
  };
}
