import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { TENANT_ROLES } from '../db/entities/member.js';
import { DEFAULT_MAX_PORTS_PER_SANDBOX, MAX_PORTS_PER_SANDBOX_LIMIT } from '../domain/input-limits.js';
import { parseSecretKeys, SECRETS_KEY_FILE_NAME } from './secrets-key.js';

/**
 * Flotilla's configuration: environment variables, optionally layered over a JSON file
 * named by FLOTILLA_CONFIG_FILE (environment wins). Every problem is collected and
 * reported at once, naming the variable, so an operator fixes them in one go.
 */

export type DatabaseKind = 'sqlite' | 'postgres';

export interface DatabaseTarget {
  kind: DatabaseKind;
  /** The URL as configured, for display (password masked by `describeDatabase`). */
  url: string;
  /** SQLite: a file path or ':memory:'. Postgres: the full connection URL. */
  location: string;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Parses a database URL; throws a plain Error with a human sentence when it is not usable. */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  const trimmed = url.trim();
  if (trimmed.startsWith('sqlite:')) {
    let location = trimmed.slice('sqlite:'.length);
    if (location.startsWith('//')) location = location.slice(2);
    if (location === '')
      throw new Error('a sqlite URL needs a file path, e.g. sqlite:./data/flotilla.db or sqlite::memory:');
    return { kind: 'sqlite', url: trimmed, location };
  }
  if (trimmed.startsWith('postgres://') || trimmed.startsWith('postgresql://')) {
    let parsed: URL;
    try {
      parsed = new URL(trimmed);
    } catch {
      throw new Error('not a valid postgres URL (expected postgres://user:password@host:port/database)');
    }
    if (!parsed.hostname) throw new Error('a postgres URL needs a host');
    if (parsed.pathname === '' || parsed.pathname === '/') throw new Error('a postgres URL needs a database name');
    return { kind: 'postgres', url: trimmed, location: trimmed };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(trimmed)?.[1];
  throw new Error(
    scheme
      ? `unknown database scheme "${scheme}:" (use sqlite:PATH or postgres://…)`
      : 'not a database URL (use sqlite:PATH or postgres://…)',
  );
}

/** The URL with its password masked, for logs. */
export function describeDatabase(target: DatabaseTarget): string {
  if (target.kind === 'sqlite') return target.url;
  const parsed = new URL(target.url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const boolFrom = z.union([
  z.boolean(),
  z
    .string()
    .trim()
    .toLowerCase()
    .refine((s) => ['true', 'false', '1', '0', 'yes', 'no'].includes(s), 'must be true or false')
    .transform((s) => s === 'true' || s === '1' || s === 'yes'),
]);

/** Accepts a JSON string (from an environment variable) or an already-parsed value (from the file). */
function jsonValue<T extends z.ZodType>(schema: T) {
  return z.preprocess((value, ctx) => {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value) as unknown;
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `not valid JSON: ${(err as Error).message}` });
      return z.NEVER;
    }
  }, schema);
}

/** Fewest bytes an HS256 secret may have: the length of its hash (RFC 7518 §3.2). */
export const MIN_HS256_SECRET_BYTES = 32;

/** Maps one group of an external token to a role: platform admin, or a role in a tenant (by slug). */
const groupRoleSchema = z.union(
  [
    z.object({ group: z.string().min(1), platformAdmin: z.literal(true) }).strict(),
    z.object({ group: z.string().min(1), tenant: z.string().min(1), role: z.enum(TENANT_ROLES) }).strict(),
  ],
  {
    error: `must be {"group", "platformAdmin": true} or {"group", "tenant": "<slug>", "role": "${TENANT_ROLES.join('|')}"}`,
  },
);

const externalIssuerFields = {
  issuer: z.string().min(1),
  audience: z.string().min(1),
  /** Claim holding the caller's groups; a dotted path reaches nested claims (e.g. "realm_access.roles"). */
  groupsClaim: z.string().min(1).default('groups'),
  groupRoles: z.array(groupRoleSchema).default([]),
  /** Prepended to `sub` to form the subject that memberships name (keeps issuers apart). */
  subjectPrefix: z.string().default(''),
};

const oidcIssuerSchema = z
  .object({
    ...externalIssuerFields,
    jwksUrl: z.url(),
    algorithms: z
      .array(z.enum(['RS256', 'ES256']))
      .min(1)
      .default(['RS256', 'ES256']),
    /** Least time between two JWKS fetches triggered by an unknown kid. */
    jwksCooldownSeconds: z.number().min(0).max(3600).default(30),
    jwksTimeoutMs: z.number().int().min(100).max(60_000).default(5_000),
  })
  .strict();

const hs256IssuerSchema = z
  .object({
    ...externalIssuerFields,
    secret: z
      .string()
      .refine(
        (s) => Buffer.byteLength(s, 'utf8') >= MIN_HS256_SECRET_BYTES,
        `must be at least ${MIN_HS256_SECRET_BYTES} bytes`,
      ),
  })
  .strict();

export type OidcIssuerConfig = z.output<typeof oidcIssuerSchema>;
export type Hs256IssuerConfig = z.output<typeof hs256IssuerSchema>;
export type GroupRole = z.output<typeof groupRoleSchema>;

const configSchema = z
  .object({
    databaseUrl: z
      .string()
      .default('sqlite:./data/flotilla.db')
      .transform((url, ctx) => {
        try {
          return parseDatabaseUrl(url);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
          return z.NEVER;
        }
      }),
    port: intFrom(0, 65535).default(4000),
    host: z.string().min(1).default('127.0.0.1'),
    logLevel: z.enum(LOG_LEVELS).default('info'),
    dataDir: z.string().min(1).default('./data'),
    /**
     * Postgres only: where the one LISTEN connection per process goes, when FLOTILLA_DATABASE_URL
     * points at a pooler in transaction mode (LISTEN needs a session). Defaults to the database URL.
     */
    eventListenUrl: z
      .string()
      .optional()
      .transform((url, ctx) => {
        if (url === undefined) return undefined;
        try {
          const target = parseDatabaseUrl(url);
          if (target.kind !== 'postgres') throw new Error('must be a postgres:// URL');
          return target;
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
          return z.NEVER;
        }
      }),
    /** How long events stay in the log before the sweeper prunes them. */
    eventRetentionSeconds: intFrom(60, 10 * 365 * 24 * 3600).default(7 * 24 * 3600),
    /** How long audit entries are kept before the domain sweeper prunes them. */
    auditRetentionSeconds: intFrom(60, 100 * 365 * 24 * 3600).default(90 * 24 * 3600),
    /**
     * How long messages are kept where the tenant set no `messageRetentionDays` of its own;
     * 0 (the default): kept forever.
     */
    messageRetentionSeconds: intFrom(0, 100 * 365 * 24 * 3600)
      .default(0)
      .refine((s) => s === 0 || s >= 60, 'must be 0 (off) or at least 60'),
    /** Channel webhooks: the first retry's delay (each further one doubles), attempts before FAILED, and one POST's timeout. */
    channelRetryBaseMs: intFrom(1, 60 * 60 * 1000).default(2_000),
    channelMaxAttempts: intFrom(1, 100).default(8),
    channelTimeoutMs: intFrom(100, 5 * 60 * 1000).default(10_000),
    /** A message DISPATCHED to an agent and not confirmed DELIVERED within this goes back to PENDING. */
    dispatchTimeoutSeconds: intFrom(1, 24 * 3600).default(60),
    /** A worker whose last heartbeat is older than this reads as OFFLINE. */
    heartbeatTtlSeconds: intFrom(1, 24 * 3600).default(30),
    /** How many ports of its worker's range one sandbox may ask for (createSandbox's `ports`). */
    maxPortsPerSandbox: intFrom(0, MAX_PORTS_PER_SANDBOX_LIMIT).default(DEFAULT_MAX_PORTS_PER_SANDBOX),
    /** Apply pending migrations when `serve` starts; when false, refuse to start with pending ones. */
    migrateOnStart: boolFrom.default(true),
    /** How long SIGTERM waits for in-flight requests before closing the rest. */
    shutdownTimeoutMs: intFrom(0, 10 * 60 * 1000).default(10_000),
    /**
     * On SIGTERM, readiness turns false this long before sockets close and new requests are
     * refused, so a load balancer stops sending work first (the preStop pattern). 0: at once.
     */
    shutdownDrainMs: intFrom(0, 10 * 60 * 1000).default(0),
    /**
     * The keys secrets are encrypted with: comma-separated `kid:base64` (32 bytes each); the first
     * encrypts, the others still decrypt. Unset: a key file generated in the data directory.
     */
    secretsKey: z
      .string()
      .optional()
      .transform((value, ctx) => {
        if (value === undefined) return undefined;
        const { keys, problems } = parseSecretKeys(value);
        for (const message of problems) ctx.addIssue({ code: 'custom', message });
        return problems.length > 0 ? z.NEVER : keys;
      }),
    /** Keep the server's signing keys in this JSON file instead of the database. */
    signingKeyFile: z.string().min(1).optional(),
    /** Issuer and audience of the tokens this server mints. */
    tokenIssuer: z.string().min(1).default('flotilla'),
    tokenAudience: z.string().min(1).default('flotilla'),
    /** Lifetime of the bootstrap platform-admin token. */
    adminTokenTtlSeconds: intFrom(60, 10 * 365 * 24 * 3600).default(365 * 24 * 3600),
    /** OIDC issuers whose tokens are accepted (JSON array). */
    oidcIssuers: jsonValue(z.array(oidcIssuerSchema)).default([]),
    /** HS256 shared-secret issuers (JSON array); none unless configured. */
    hs256Issuers: jsonValue(z.array(hs256IssuerSchema)).default([]),
    /**
     * Dashboard sign-in through one of the OIDC issuers (docs/security.md): the public client the
     * browser signs in as (authorization code with PKCE). Unset: the dashboard only takes pasted tokens.
     */
    oidcDashboardClientId: z.string().trim().min(1).max(200).optional(),
    /** Which OIDC issuer the dashboard signs in with; may be left out when exactly one is configured. */
    oidcDashboardIssuer: z.string().trim().min(1).optional(),
    /** Scopes the dashboard asks for, space-separated; must include openid. */
    oidcDashboardScopes: z
      .string()
      .trim()
      .default('openid profile')
      .refine((s) => s.split(/\s+/).includes('openid'), 'must include "openid"'),
    /** The name on the "Sign in with …" button; defaults to the issuer's host. */
    oidcDashboardName: z.string().trim().min(1).max(100).optional(),
    /** Longest lifetime createApiToken grants. */
    apiTokenMaxTtlSeconds: intFrom(60, 10 * 365 * 24 * 3600).default(365 * 24 * 3600),
    /** Hostile-input limits (see docs/security.md). */
    maxBodyBytes: intFrom(1024, 64 * 1024 * 1024).default(1024 * 1024),
    maxQueryDepth: intFrom(2, 100).default(12),
    maxQueryComplexity: intFrom(10, 10_000_000).default(25_000),
    maxAliases: intFrom(0, 10_000).default(30),
    maxTokens: intFrom(100, 1_000_000).default(5_000),
    introspection: boolFrom.default(true),
    csrfPrevention: boolFrom.default(true),
    /**
     * Live subscriptions execute once per event for every subscriber sharing the operation, its
     * variables and the caller's access (see docs/subscriptions.md); off: each executes alone.
     */
    sharedSubscriptionExecution: boolFrom.default(true),
    /** Operations (live subscriptions included) open at once on one graphql-ws socket. */
    maxSubscriptionsPerSocket: intFrom(1, 100_000).default(100),
    /** graphql-ws sockets one token may hold open at once, per process. */
    maxSocketsPerToken: intFrom(1, 100_000).default(20),
    /** Subscription streams over HTTP (SSE) one token may hold open at once, per process. */
    maxSseStreamsPerToken: intFrom(1, 100_000).default(20),
    /** Operations per token per minute (a token bucket refilled continuously); 0 turns it off. */
    rateLimitPerMinute: intFrom(0, 1_000_000).default(600),
    identityCacheSize: intFrom(0, 1_000_000).default(10_000),
    /** A JSON object {"<sha256 hex>": "<query>"} of persisted operations. */
    persistedOperationsFile: z.string().min(1).optional(),
    /** Refuse any operation that is not in the persisted-operations file. */
    persistedOperationsOnly: boolFrom.default(false),
  })
  .superRefine((config, ctx) => {
    const seen = new Set<string>([config.tokenIssuer]);
    for (const [list, key] of [
      [config.oidcIssuers, 'oidcIssuers'],
      [config.hs256Issuers, 'hs256Issuers'],
    ] as const) {
      for (const [i, issuer] of list.entries()) {
        // Tokens are routed by `iss`: one issuer, one key source, or algorithm confusion creeps back in.
        if (seen.has(issuer.issuer))
          ctx.addIssue({
            code: 'custom',
            path: [key, i, 'issuer'],
            message: `issuer "${issuer.issuer}" is configured twice (or is this server's own issuer)`,
          });
        seen.add(issuer.issuer);
      }
    }
    if (config.oidcDashboardClientId !== undefined) {
      const wanted = config.oidcDashboardIssuer;
      const matching = wanted ? config.oidcIssuers.filter((i) => i.issuer === wanted) : config.oidcIssuers;
      if (matching.length !== 1)
        ctx.addIssue({
          code: 'custom',
          path: [wanted ? 'oidcDashboardIssuer' : 'oidcDashboardClientId'],
          message: wanted
            ? `"${wanted}" is not one of FLOTILLA_OIDC_ISSUERS`
            : config.oidcIssuers.length === 0
              ? 'needs an OIDC issuer in FLOTILLA_OIDC_ISSUERS'
              : 'several OIDC issuers are configured: name the one to sign in with in FLOTILLA_OIDC_DASHBOARD_ISSUER',
        });
    } else if (config.oidcDashboardIssuer !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['oidcDashboardIssuer'],
        message: 'needs FLOTILLA_OIDC_DASHBOARD_CLIENT_ID',
      });
    }
    if (config.persistedOperationsOnly && !config.persistedOperationsFile) {
      ctx.addIssue({
        code: 'custom',
        path: ['persistedOperationsOnly'],
        message: 'needs FLOTILLA_PERSISTED_OPERATIONS_FILE',
      });
    }
  });

export type Config = z.output<typeof configSchema>;
type ConfigKey = keyof z.input<typeof configSchema>;

/** Environment variable for each setting; the config file uses the camelCase key. */
export const ENV_NAMES: Record<ConfigKey, string> = {
  databaseUrl: 'FLOTILLA_DATABASE_URL',
  port: 'FLOTILLA_PORT',
  host: 'FLOTILLA_HOST',
  logLevel: 'FLOTILLA_LOG_LEVEL',
  dataDir: 'FLOTILLA_DATA_DIR',
  eventListenUrl: 'FLOTILLA_EVENT_LISTEN_URL',
  eventRetentionSeconds: 'FLOTILLA_EVENT_RETENTION_SECONDS',
  auditRetentionSeconds: 'FLOTILLA_AUDIT_RETENTION_SECONDS',
  messageRetentionSeconds: 'FLOTILLA_MESSAGE_RETENTION_SECONDS',
  channelRetryBaseMs: 'FLOTILLA_CHANNEL_RETRY_BASE_MS',
  channelMaxAttempts: 'FLOTILLA_CHANNEL_MAX_ATTEMPTS',
  channelTimeoutMs: 'FLOTILLA_CHANNEL_TIMEOUT_MS',
  heartbeatTtlSeconds: 'FLOTILLA_HEARTBEAT_TTL_SECONDS',
  dispatchTimeoutSeconds: 'FLOTILLA_MESSAGE_DISPATCH_TIMEOUT_SECONDS',
  maxPortsPerSandbox: 'FLOTILLA_MAX_PORTS_PER_SANDBOX',
  migrateOnStart: 'FLOTILLA_MIGRATE_ON_START',
  shutdownTimeoutMs: 'FLOTILLA_SHUTDOWN_TIMEOUT_MS',
  shutdownDrainMs: 'FLOTILLA_SHUTDOWN_DRAIN_MS',
  secretsKey: 'FLOTILLA_SECRETS_KEY',
  signingKeyFile: 'FLOTILLA_SIGNING_KEY_FILE',
  tokenIssuer: 'FLOTILLA_TOKEN_ISSUER',
  tokenAudience: 'FLOTILLA_TOKEN_AUDIENCE',
  adminTokenTtlSeconds: 'FLOTILLA_ADMIN_TOKEN_TTL_SECONDS',
  oidcIssuers: 'FLOTILLA_OIDC_ISSUERS',
  hs256Issuers: 'FLOTILLA_HS256_ISSUERS',
  oidcDashboardClientId: 'FLOTILLA_OIDC_DASHBOARD_CLIENT_ID',
  oidcDashboardIssuer: 'FLOTILLA_OIDC_DASHBOARD_ISSUER',
  oidcDashboardScopes: 'FLOTILLA_OIDC_DASHBOARD_SCOPES',
  oidcDashboardName: 'FLOTILLA_OIDC_DASHBOARD_NAME',
  apiTokenMaxTtlSeconds: 'FLOTILLA_API_TOKEN_MAX_TTL_SECONDS',
  maxBodyBytes: 'FLOTILLA_MAX_BODY_BYTES',
  maxQueryDepth: 'FLOTILLA_MAX_QUERY_DEPTH',
  maxQueryComplexity: 'FLOTILLA_MAX_QUERY_COMPLEXITY',
  maxAliases: 'FLOTILLA_MAX_ALIASES',
  maxTokens: 'FLOTILLA_MAX_TOKENS',
  introspection: 'FLOTILLA_INTROSPECTION',
  csrfPrevention: 'FLOTILLA_CSRF_PREVENTION',
  rateLimitPerMinute: 'FLOTILLA_RATE_LIMIT_PER_MINUTE',
  identityCacheSize: 'FLOTILLA_IDENTITY_CACHE_SIZE',
  maxSubscriptionsPerSocket: 'FLOTILLA_MAX_SUBSCRIPTIONS_PER_SOCKET',
  maxSocketsPerToken: 'FLOTILLA_MAX_SOCKETS_PER_TOKEN',
  maxSseStreamsPerToken: 'FLOTILLA_MAX_SSE_STREAMS_PER_TOKEN',
  sharedSubscriptionExecution: 'FLOTILLA_SHARED_SUBSCRIPTION_EXECUTION',
  persistedOperationsFile: 'FLOTILLA_PERSISTED_OPERATIONS_FILE',
  persistedOperationsOnly: 'FLOTILLA_PERSISTED_OPERATIONS_ONLY',
};

/** The generated secrets key file, used when FLOTILLA_SECRETS_KEY is not set. */
export function secretsKeyFile(config: Pick<Config, 'dataDir'>): string {
  return join(config.dataDir, SECRETS_KEY_FILE_NAME);
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Builds the config from an environment (process.env by default) and, when
 * FLOTILLA_CONFIG_FILE is set, a JSON file. `overrides` (from CLI flags) win over both.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  overrides: Partial<Record<ConfigKey, unknown>> = {},
): Config {
  const problems: string[] = [];
  let fileValues: Record<string, unknown> = {};
  const file = env.FLOTILLA_CONFIG_FILE;
  if (file) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        problems.push(`FLOTILLA_CONFIG_FILE (${file}): must hold a JSON object`);
      } else {
        fileValues = parsed as Record<string, unknown>;
        for (const key of Object.keys(fileValues)) {
          if (!(key in ENV_NAMES)) problems.push(`FLOTILLA_CONFIG_FILE (${file}): unknown setting "${key}"`);
        }
      }
    } catch (err) {
      problems.push(`FLOTILLA_CONFIG_FILE (${file}): ${(err as Error).message}`);
    }
  }

  const raw: Record<string, unknown> = {};
  for (const [key, envName] of Object.entries(ENV_NAMES) as [ConfigKey, string][]) {
    const fromEnv = env[envName];
    if (overrides[key] !== undefined) raw[key] = overrides[key];
    else if (fromEnv !== undefined && fromEnv !== '') raw[key] = fromEnv;
    else if (fileValues[key] !== undefined) raw[key] = fileValues[key];
  }

  const result = configSchema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = issue.path[0] as ConfigKey | undefined;
      const name = key ? ENV_NAMES[key] : 'config';
      const where = issue.path.length > 1 ? ` [${issue.path.slice(1).join('.')}]` : '';
      problems.push(`${name}${where}: ${issue.message}`);
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  return result.data;
}
