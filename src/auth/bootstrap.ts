import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiToken } from '../db/entities/api-token.js';
import type { Orm } from '../db/orm.js';
import type { TokenService } from './tokens.js';

export const ADMIN_TOKEN_FILE = 'admin.token';
export const ADMIN_SUBJECT = 'platform-admin';

/** Mints a platform-admin token and writes it to `<dataDir>/admin.token` (mode 0600). */
export async function mintAdminToken(
  orm: Orm,
  tokens: TokenService,
  options: { dataDir: string; ttlSeconds: number },
): Promise<{ token: string; file: string }> {
  const em = orm.em.fork();
  const minted = await em.transactional((tx) =>
    tokens.mint(tx, { kind: 'ADMIN', subject: ADMIN_SUBJECT, ttlSeconds: options.ttlSeconds }),
  );
  mkdirSync(options.dataDir, { recursive: true });
  const file = join(options.dataDir, ADMIN_TOKEN_FILE);
  writeFileSync(file, `${minted.token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { token: minted.token, file };
}

/** On first start (no usable admin token anywhere), mints one; returns it, or null if one exists. */
export async function ensureAdminToken(
  orm: Orm,
  tokens: TokenService,
  options: { dataDir: string; ttlSeconds: number },
): Promise<{ token: string; file: string } | null> {
  const existing = await orm.em.fork().count(ApiToken, {
    kind: 'ADMIN',
    revokedAt: null,
    $or: [{ expiresAt: null }, { expiresAt: { $gt: new Date() } }],
  });
  if (existing > 0) return null;
  return mintAdminToken(orm, tokens, options);
}
