import { ApiToken } from '../db/entities/api-token.js';
import type { Em } from '../db/orm.js';
import { recordEvent } from './outbox.js';

/**
 * The one way a token is revoked, inside the caller's transaction: marks it revoked (if it was
 * not) and appends TOKEN_REVOKED, from which every replica's hub ends the token's streams. The
 * caller ends this process's sockets after the commit (`TokenAuthority.endSessions`).
 * Give the loaded row when the caller has it (its answer shows the change; one UPDATE either way).
 * Returns whether the token was live until now.
 */
export async function revokeToken(
  em: Em,
  token: string | ApiToken,
  tenantId: string | null,
  now: Date,
): Promise<boolean> {
  let tokenId: string;
  if (typeof token === 'string') {
    tokenId = token;
    const changed = await em.nativeUpdate(ApiToken, { id: tokenId, revokedAt: null }, { revokedAt: now });
    if (changed === 0) return false;
  } else {
    tokenId = token.id;
    if (token.revokedAt) return false;
    token.revokedAt = now;
    await em.flush();
  }
  recordEvent(em, { type: 'TOKEN_REVOKED', tenantId, data: { tokenId } }, now);
  return true;
}
