import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acceptedAudiences, dashboardSignIn } from '../../src/auth/dashboard-sign-in.js';
import { ConfigError, describeDatabase, loadConfig, parseDatabaseUrl } from '../../src/config/index.js';

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('defaults to an embedded SQLite file on port 4000', () => {
    const config = loadConfig({});
    expect(config.databaseUrl).toEqual({
      kind: 'sqlite',
      url: 'sqlite:./data/flotilla.db',
      location: './data/flotilla.db',
    });
    expect(config.port).toBe(4000);
    expect(config.host).toBe('127.0.0.1');
    expect(config.logLevel).toBe('info');
    expect(config.heartbeatTtlSeconds).toBe(30);
    expect(config.eventRetentionSeconds).toBe(7 * 24 * 3600);
    expect(config.migrateOnStart).toBe(true);
  });

  it('reads every setting from its FLOTILLA_* variable', () => {
    const config = loadConfig({
      FLOTILLA_DATABASE_URL: 'postgres://u:p@db.internal:5433/fleet',
      FLOTILLA_PORT: '8080',
      FLOTILLA_HOST: '0.0.0.0',
      FLOTILLA_LOG_LEVEL: 'debug',
      FLOTILLA_EVENT_RETENTION_SECONDS: '3600',
      FLOTILLA_HEARTBEAT_TTL_SECONDS: '15',
      FLOTILLA_MIGRATE_ON_START: 'false',
    });
    expect(config.databaseUrl.kind).toBe('postgres');
    expect(config).toMatchObject({
      port: 8080,
      host: '0.0.0.0',
      logLevel: 'debug',
      eventRetentionSeconds: 3600,
      heartbeatTtlSeconds: 15,
      migrateOnStart: false,
    });
  });

  it('reports every problem at once, naming each variable', () => {
    const problems = problemsOf({
      FLOTILLA_DATABASE_URL: 'mysql://localhost/x',
      FLOTILLA_PORT: 'eighty',
      FLOTILLA_LOG_LEVEL: 'loud',
      FLOTILLA_HEARTBEAT_TTL_SECONDS: '0',
      FLOTILLA_MIGRATE_ON_START: 'maybe',
    });
    expect(problems).toHaveLength(5);
    expect(problems.find((p) => p.startsWith('FLOTILLA_DATABASE_URL'))).toContain('unknown database scheme "mysql:"');
    for (const name of [
      'FLOTILLA_PORT',
      'FLOTILLA_LOG_LEVEL',
      'FLOTILLA_HEARTBEAT_TTL_SECONDS',
      'FLOTILLA_MIGRATE_ON_START',
    ]) {
      expect(problems.some((p) => p.startsWith(`${name}:`))).toBe(true);
    }
  });

  it('refuses unusable database URLs instead of falling back', () => {
    expect(() => parseDatabaseUrl('sqlite:')).toThrow(/file path/);
    expect(() => parseDatabaseUrl('postgres://localhost')).toThrow(/database name/);
    expect(() => parseDatabaseUrl('just-a-path.db')).toThrow(/not a database URL/);
    expect(parseDatabaseUrl('sqlite::memory:').location).toBe(':memory:');
    expect(parseDatabaseUrl('sqlite:///var/lib/flotilla.db').location).toBe('/var/lib/flotilla.db');
  });

  it('masks the password when describing a Postgres URL', () => {
    expect(describeDatabase(parseDatabaseUrl('postgres://fleet:s3cret@db:5432/flotilla'))).toBe(
      'postgres://fleet:***@db:5432/flotilla',
    );
  });

  it('layers the environment over an optional JSON file and rejects unknown keys in it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-config-'));
    const file = join(dir, 'flotilla.json');
    writeFileSync(file, JSON.stringify({ port: 5000, logLevel: 'warn' }));
    expect(loadConfig({ FLOTILLA_CONFIG_FILE: file })).toMatchObject({ port: 5000, logLevel: 'warn' });
    expect(loadConfig({ FLOTILLA_CONFIG_FILE: file, FLOTILLA_PORT: '6000' }).port).toBe(6000);

    writeFileSync(file, JSON.stringify({ prot: 5000 }));
    expect(problemsOf({ FLOTILLA_CONFIG_FILE: file })).toEqual([
      `FLOTILLA_CONFIG_FILE (${file}): unknown setting "prot"`,
    ]);
    writeFileSync(file, '{ not json');
    expect(problemsOf({ FLOTILLA_CONFIG_FILE: file })[0]).toMatch(/^FLOTILLA_CONFIG_FILE/);
  });

  it('keeps messages forever unless FLOTILLA_MESSAGE_RETENTION_SECONDS is set, to 60 or more', () => {
    expect(loadConfig({}).messageRetentionSeconds).toBe(0);
    expect(loadConfig({ FLOTILLA_MESSAGE_RETENTION_SECONDS: '86400' }).messageRetentionSeconds).toBe(86400);
    expect(problemsOf({ FLOTILLA_MESSAGE_RETENTION_SECONDS: '30' })).toEqual([
      'FLOTILLA_MESSAGE_RETENTION_SECONDS: must be 0 (off) or at least 60',
    ]);
  });

  describe('dashboard sign-in through OIDC', () => {
    const issuer = (name: string, audience = 'flotilla-api') => ({
      issuer: `https://${name}.example`,
      audience,
      jwksUrl: `https://${name}.example/jwks`,
    });
    const env = (issuers: object[], extra: Record<string, string> = {}) => ({
      FLOTILLA_OIDC_ISSUERS: JSON.stringify(issuers),
      ...extra,
    });

    it('is off unless a client id is set; with one issuer it signs in there, named by its host', () => {
      expect(dashboardSignIn(loadConfig(env([issuer('sso')])))).toBeNull();
      const config = loadConfig(env([issuer('sso')], { FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: 'dash' }));
      expect(dashboardSignIn(config)).toEqual({
        issuer: 'https://sso.example',
        clientId: 'dash',
        scopes: 'openid profile',
        name: 'sso.example',
      });
      // The ID tokens the dashboard sends are addressed to its client id: accepted from that issuer only.
      expect(acceptedAudiences(config, 'https://sso.example', 'flotilla-api')).toEqual(['flotilla-api', 'dash']);
      expect(acceptedAudiences(config, 'https://other.example', 'flotilla-api')).toEqual(['flotilla-api']);
    });

    it('names the issuer among several, and refuses settings that cannot work, naming the variable', () => {
      const two = [issuer('a'), issuer('b')];
      const picked = loadConfig(
        env(two, { FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: 'dash', FLOTILLA_OIDC_DASHBOARD_ISSUER: 'https://b.example' }),
      );
      expect(dashboardSignIn(picked)?.issuer).toBe('https://b.example');
      expect(problemsOf(env(two, { FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: 'dash' }))).toEqual([
        expect.stringMatching(/^FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: several OIDC issuers/),
      ]);
      expect(problemsOf({ FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: 'dash' })).toEqual([
        expect.stringMatching(/^FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: needs an OIDC issuer/),
      ]);
      expect(
        problemsOf(
          env(two, { FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: 'dash', FLOTILLA_OIDC_DASHBOARD_ISSUER: 'https://c.example' }),
        ),
      ).toEqual([expect.stringMatching(/^FLOTILLA_OIDC_DASHBOARD_ISSUER: "https:\/\/c.example" is not one of/)]);
      expect(problemsOf(env(two, { FLOTILLA_OIDC_DASHBOARD_ISSUER: 'https://a.example' }))).toEqual([
        expect.stringMatching(/^FLOTILLA_OIDC_DASHBOARD_ISSUER: needs FLOTILLA_OIDC_DASHBOARD_CLIENT_ID/),
      ]);
      expect(
        problemsOf(
          env([issuer('sso')], {
            FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: 'dash',
            FLOTILLA_OIDC_DASHBOARD_SCOPES: 'profile',
          }),
        ),
      ).toEqual([expect.stringMatching(/^FLOTILLA_OIDC_DASHBOARD_SCOPES: must include "openid"/)]);
    });
  });

  it('reads FLOTILLA_SECRETS_KEY as kid:base64 entries, the first encrypting, and never echoes key material', () => {
    const k1 = Buffer.alloc(32, 1).toString('base64');
    const k2 = Buffer.alloc(32, 2).toString('base64');
    const config = loadConfig({ FLOTILLA_SECRETS_KEY: `k2:${k2}, k1:${k1}` });
    expect(config.secretsKey?.map((k) => k.kid)).toEqual(['k2', 'k1']);
    expect(config.secretsKey?.[0].key.equals(Buffer.alloc(32, 2))).toBe(true);
    expect(loadConfig({}).secretsKey).toBeUndefined();

    const short = Buffer.alloc(16, 7).toString('base64');
    const problems = problemsOf({ FLOTILLA_SECRETS_KEY: `k1:${short},nokid${k1},k1:${k1},k1:${k1},bad kid:${k1}` });
    expect(problems).toEqual([
      expect.stringMatching(/^FLOTILLA_SECRETS_KEY: key "k1": must be 32 bytes/),
      expect.stringMatching(/^FLOTILLA_SECRETS_KEY: entry 2: expected kid:base64-key/),
      expect.stringMatching(/^FLOTILLA_SECRETS_KEY: key "k1" is given twice/),
      expect.stringMatching(/^FLOTILLA_SECRETS_KEY: entry 5: expected kid:base64-key/),
    ]);
    for (const material of [short, k1]) expect(problems.join('\n')).not.toContain(material);
  });
});
