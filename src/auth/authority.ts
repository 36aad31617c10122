import type { Em } from '../db/orm.js';
import type { MintedToken, MintOptions } from './tokens.js';

/** What services may do with the server's own tokens, without knowing about keys or sockets. */
export interface TokenAuthority {
  /** Records and signs a token inside the caller's transaction. */
  mint(em: Em, options: MintOptions, now: Date): Promise<MintedToken>;
  /**
   * After a revocation has committed: ends the live sockets of those tokens or that subject
   * in this process. Other replicas find out on their sockets' next check (see docs/security.md).
   */
  endSessions(target: { tokenIds?: readonly string[]; subject?: string }): void;
  /**
   * After a membership change has committed: this process forgets the subject's verified tokens
   * at once, so its next request is judged on the new roles (other replicas hear it from the log).
   */
  membershipChanged(subject: string): void;
  /** The longest lifetime an API token may be given. */
  readonly maxApiTokenTtlSeconds: number;
}
