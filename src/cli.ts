#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { mintAdminToken } from './auth/bootstrap.js';
import { SigningKeys } from './auth/keys.js';
import { TokenService } from './auth/tokens.js';
import { type Config, ConfigError, describeDatabase, loadConfig } from './config/index.js';
import { PendingMigrationsError } from './db/database.js';
import { migrate, openOrm } from './db/orm.js';
import { acquireWriterLock, WriterLockError } from './db/writer-lock.js';
import { backupCommand, migrateStoreCommand, restoreCommand } from './ops/store-commands.js';
import { startFlotilla } from './server/app.js';

const HELP = `flotilla — control plane for fleets of AI-agent sandboxes

Usage:
  flotilla serve [--no-migrate] [--port N] [--host H]
                               run the GraphQL server (GraphiQL at /graphql)
  flotilla migrate             apply pending database migrations and exit
  flotilla doctor [--production] [--json]
                               check the configuration, database, migrations, LISTEN, clock skew, signing
                               keys, disk space, event-log lag and the SQLite writer lock; one line per check
                               with a fix, exit 1 on a failure (--production: also lint for production;
                               flotilla doctor --help for its thresholds)
  flotilla token admin         mint a platform-admin token (printed, and written to <dataDir>/admin.token)
  flotilla keys list           list the server's signing keys (kid, created, retired, which one signs)
  flotilla keys rotate         make a new signing key; older keys stop signing but still verify
  flotilla keys remove KID     remove a retired key: tokens it signed stop verifying
  flotilla keys rotate-secrets re-encrypt every stored secret, channel secrets too, under the first
                               secrets key (with the generated key file: a new key first); older
                               keys still decrypt
  flotilla keys list-secrets   list the secrets keys and how many secrets and channel secrets each one encrypts
  flotilla keys remove-secrets KID
                               remove a secrets key from the generated key file (none may still use it)
  flotilla backup --out FILE    back up the database while it serves (SQLite: online backup API;
                               Postgres: a logical export in one snapshot); see docs/operations.md
  flotilla restore --from FILE [--force]
                               restore a backup after verifying it; refuses a database holding data
                               unless --force, and keeps a safety copy of what it replaces
  flotilla migrate-store --from sqlite:PATH --to postgres://… [--force]
                               copy a SQLite store into Postgres (one machine to a cluster); cursors keep working
  flotilla demo                a server on SQLite with a demo tenant, two worker agents and live sandboxes
  flotilla worker --url URL --token TOKEN [--state-dir DIR] [--heartbeat-ms MS] [--lease-ttl S] [--stop-grace-ms MS]
                               run the reference worker agent (sandboxes run as local processes;
                               see docs/worker.md)
  flotilla --help              this text

Configuration comes from FLOTILLA_* environment variables (see README), optionally over a
JSON file named by FLOTILLA_CONFIG_FILE. The database is FLOTILLA_DATABASE_URL
(default sqlite:./data/flotilla.db; postgres://… for clusters).
`;

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'doctor') {
    const { runDoctor } = await import('./ops/doctor.js');
    return runDoctor(argv.slice(1), process.env);
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      'no-migrate': { type: 'boolean' },
      port: { type: 'string' },
      host: { type: 'string' },
      url: { type: 'string' },
      token: { type: 'string' },
      'state-dir': { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'lease-ttl': { type: 'string' },
      'stop-grace-ms': { type: 'string' },
      out: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      force: { type: 'boolean' },
    },
  });
  const [command, sub] = positionals;
  if (values.help || !command) {
    process.stdout.write(HELP);
    return command || values.help ? 0 : 2;
  }

  if (command === 'demo') return runDemo();
  if (command === 'worker') {
    return runWorker(values.url, values.token ?? process.env.FLOTILLA_WORKER_TOKEN, values['state-dir'], {
      heartbeatIntervalMs: values['heartbeat-ms'],
      leaseTtlSeconds: values['lease-ttl'],
      stopGraceMs: values['stop-grace-ms'],
    });
  }

  if (command === 'migrate-store') return migrateStoreCommand(values.from, values.to, values.force ?? false);

  const overrides: Parameters<typeof loadConfig>[1] = {};
  if (values['no-migrate']) overrides.migrateOnStart = false;
  if (values.port !== undefined) overrides.port = values.port;
  if (values.host !== undefined) overrides.host = values.host;
  const config = loadConfig(process.env, overrides);

  switch (command) {
    case 'serve':
      return serve(config);
    case 'migrate':
      return runMigrate(config);
    case 'backup':
      return backupCommand(config, values.out);
    case 'restore':
      return restoreCommand(config, values.from, values.force ?? false);
    case 'keys':
      if (sub === 'rotate-secrets' || sub === 'list-secrets' || sub === 'remove-secrets')
        return secretKeysCommand(config, sub, positionals[2]);
      return keysCommand(config, sub, positionals[2]);
    case 'token':
      if (sub === 'admin') return tokenAdmin(config);
      process.stderr.write(`unknown token kind "${sub ?? ''}" (expected: flotilla token admin)\n`);
      return 2;
    default:
      process.stderr.write(`unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

async function serve(config: Config): Promise<number> {
  const app = await startFlotilla(config);
  const running = runUntilSignal(
    (signal) => {
      app.logger.info({ signal }, 'shutting down');
      return app.close();
    },
    (err) => app.logger.error({ err: err.message }, 'shutdown failed'),
  );
  void app.ready.then(() => {
    const admin = app.adminToken;
    const lines = [`Flotilla is serving GraphiQL at ${app.graphqlUrl}`];
    if (admin) {
      lines.push(
        '',
        'First start: a platform-admin token was minted. It is shown only this once',
        `(also written to ${admin.file}, mode 0600). In GraphiQL, open "Headers" and set:`,
        `  {"Authorization": "Bearer ${admin.token}"}`,
      );
    } else {
      lines.push('Authenticate with a token (e.g. `flotilla token admin` mints a platform-admin token).');
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  });
  return running;
}

/**
 * Keeps a long-running command alive until SIGTERM or SIGINT, then runs its graceful stop once
 * and exits 0 (1 when the stop fails).
 */
function runUntilSignal(
  stop: (signal: string) => Promise<void>,
  onError: (err: Error) => void = () => undefined,
): Promise<number> {
  let stopping = false;
  const handle = (signal: string) => {
    if (stopping) return;
    stopping = true;
    stop(signal).then(
      () => process.exit(0),
      (err: Error) => {
        onError(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => handle('SIGTERM'));
  process.on('SIGINT', () => handle('SIGINT'));
  return new Promise<number>(() => undefined);
}

async function runDemo(): Promise<number> {
  const { startDemo } = await import('./demo.js');
  const demo = await startDemo();
  return runUntilSignal(() => demo.stop());
}

async function runWorker(
  url: string | undefined,
  token: string | undefined,
  stateDir: string | undefined,
  timing: Record<'heartbeatIntervalMs' | 'leaseTtlSeconds' | 'stopGraceMs', string | undefined>,
): Promise<number> {
  if (!url || !token) {
    process.stderr.write(
      'flotilla worker needs --url (the GraphQL endpoint) and --token (a worker token from registerWorker, or FLOTILLA_WORKER_TOKEN)\n',
    );
    return 2;
  }
  const numbers: { heartbeatIntervalMs?: number; leaseTtlSeconds?: number; stopGraceMs?: number } = {};
  for (const [key, raw] of Object.entries(timing) as [keyof typeof timing, string | undefined][]) {
    if (raw === undefined) continue;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 1) {
      process.stderr.write(`flotilla worker: ${key} must be a positive integer, got "${raw}"\n`);
      return 2;
    }
    numbers[key] = value;
  }
  const { WorkerAgent } = await import('./worker/agent.js');
  const { default: WebSocket } = await import('ws');
  const log = (level: string) => (msg: string, data?: Record<string, unknown>) =>
    process.stdout.write(`${JSON.stringify({ level, time: new Date().toISOString(), msg, ...data })}\n`);
  const agent = new WorkerAgent({
    url,
    token,
    stateDir,
    ...numbers,
    webSocketImpl: WebSocket,
    logger: { info: log('info'), warn: log('warn') },
  });
  await agent.start();
  log('info')('worker agent started', { workerId: agent.workerId });
  return runUntilSignal(() => agent.stop());
}

async function runMigrate(config: Config): Promise<number> {
  const lock = await acquireWriterLock(config.databaseUrl);
  const orm = await openOrm(config.databaseUrl).catch(async (err: unknown) => {
    await lock?.release();
    throw err;
  });
  try {
    const applied = await migrate(orm);
    process.stdout.write(
      applied.length
        ? `applied ${applied.length} migration(s): ${applied.join(', ')}\n`
        : 'the database is up to date\n',
    );
    return 0;
  } finally {
    await orm.close(true);
    await lock?.release();
  }
}

async function tokenAdmin(config: Config): Promise<number> {
  const orm = await openOrm(config.databaseUrl);
  try {
    const applied = await migrate(orm);
    if (applied.length) process.stderr.write(`applied ${applied.length} migration(s) first\n`);
    const keys = new SigningKeys(orm, config.signingKeyFile);
    await keys.init();
    const tokens = new TokenService(orm, keys, { issuer: config.tokenIssuer, audience: config.tokenAudience });
    const { token, file } = await mintAdminToken(orm, tokens, {
      dataDir: config.dataDir,
      ttlSeconds: config.adminTokenTtlSeconds,
    });
    process.stderr.write(
      `platform-admin token for ${describeDatabase(config.databaseUrl)} (also written to ${file}):\n`,
    );
    process.stdout.write(`${token}\n`);
    return 0;
  } finally {
    await orm.close(true);
  }
}

async function keysCommand(config: Config, sub: string | undefined, kid: string | undefined): Promise<number> {
  if (sub !== 'list' && sub !== 'rotate' && sub !== 'remove') {
    process.stderr.write(
      `unknown keys command "${sub ?? ''}" (expected: list, rotate, remove KID, rotate-secrets, list-secrets, remove-secrets KID)\n`,
    );
    return 2;
  }
  if (sub === 'remove' && !kid) {
    process.stderr.write('flotilla keys remove needs the kid of a retired key (see flotilla keys list)\n');
    return 2;
  }
  const orm = await openOrm(config.databaseUrl);
  try {
    const applied = await migrate(orm);
    if (applied.length) process.stderr.write(`applied ${applied.length} migration(s) first\n`);
    const keys = new SigningKeys(orm, config.signingKeyFile);
    await keys.init();
    if (sub === 'rotate') {
      const created = await keys.rotate();
      process.stdout.write(`${created}\n`);
      process.stderr.write(
        'new signing key created; running servers pick it up within a minute, older keys keep verifying until removed\n',
      );
    } else if (sub === 'remove') {
      if (!(await keys.remove(kid as string))) {
        process.stderr.write(`no key ${kid}\n`);
        return 1;
      }
      process.stderr.write(`removed key ${kid}; tokens it signed no longer verify\n`);
    }
    if (sub === 'list') {
      for (const k of keys.list()) {
        process.stdout.write(
          `${k.kid}  ${k.alg}  created ${k.createdAt}  ${k.signing ? 'SIGNING' : k.retiredAt ? `retired ${k.retiredAt}` : ''}\n`,
        );
      }
    }
    return 0;
  } finally {
    await orm.close(true);
  }
}

async function secretKeysCommand(
  config: Config,
  sub: 'rotate-secrets' | 'list-secrets' | 'remove-secrets',
  kid: string | undefined,
): Promise<number> {
  const ops = await import('./ops/secrets-keys.js');
  const output = {
    out: (line: string) => process.stdout.write(`${line}\n`),
    err: (line: string) => process.stderr.write(`${line}\n`),
  };
  if (sub === 'rotate-secrets') return ops.rotateSecrets(config, output);
  if (sub === 'list-secrets') return ops.listSecretKeys(config, output);
  if (!kid) {
    process.stderr.write('flotilla keys remove-secrets needs a key id (see flotilla keys list-secrets)\n');
    return 2;
  }
  return ops.removeSecretKey(config, kid, output);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else if (err instanceof PendingMigrationsError) process.stderr.write(`${err.message}\n`);
    else if (err instanceof WriterLockError) process.stderr.write(`flotilla: ${err.message}\n`);
    else if (err instanceof Error && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))
      process.stderr.write(`${err.message}\n\n${HELP}`);
    else process.stderr.write(`flotilla: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
