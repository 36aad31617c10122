import { ApiToken } from '../db/entities/api-token.js';
import type { Em } from '../db/orm.js';
import { recordEvent } from './outbox.js';

/**
 * The one way a token is revoked, inside the caller's transaction: marks it revoked (if it was
 * not) and appends TOKEN_REVOKED, from which every replica's hub ends the token's streams. The
 * caller ends this process's sockets after the commit (`TokenAuthority.endSessions`).
 * Returns whether the token was live until now.
 */
export async function revokeToken(em: Em, tokenId: string, tenantId: string | null, now: Date): Promise<boolean> {
  const changed = await em.nativeUpdate(ApiToken, { id: tokenId, revokedAt: null }, { revokedAt: now });
  if (changed === 0) return false;
  recordEvent(em, { type: 'TOKEN_REVOKED', tenantId, data: { tokenId } }, now);
  return true;
}
