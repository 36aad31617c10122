import type { Identity } from './identity.js';

/** Verified tokens kept per process by default; the least recently used goes first past this. */
export const IDENTITY_CACHE_SIZE = 10_000;
/**
 * The longest a verified identity is reused without reading the store again. Access changes
 * invalidate it at once (see `drop*`); this bound only limits what a change that travels outside
 * the event log (e.g. a signing key removed from the key file) can leave behind.
 */
export const IDENTITY_CACHE_MAX_AGE_MS = 5 * 60_000;

interface Entry {
  identity: Identity;
  cachedAt: number;
  /** When this process last wrote the token's `lastUsedAt` (or read it from the store). */
  lastUsedAt: number;
}

/**
 * Verified bearer tokens and the identities they stand for, so a repeated request costs neither a
 * signature check nor a database round trip. Keyed by the exact token text: only a token that
 * was verified before is found. An entry lives until the token expires, until an access change
 * drops it (`dropToken`, `dropSubject`: fed by TOKEN_REVOKED, MEMBER_REMOVED and MEMBER_CHANGED
 * from the event log, which every replica reads), or at most `maxAgeMs`.
 *
 * A read that began before an access change must not be cached after it: `generation` counts the
 * changes, and `set` refuses an identity read under an older generation.
 */
export class IdentityCache {
  private readonly entries = new Map<string, Entry>();
  private changes = 0;
  hits = 0;
  misses = 0;

  constructor(
    private readonly maxEntries: number = IDENTITY_CACHE_SIZE,
    private readonly maxAgeMs: number = IDENTITY_CACHE_MAX_AGE_MS,
  ) {}

  /** Take it before reading the store; hand it to `set` with what was read. */
  get generation(): number {
    return this.changes;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The cached identity of a token, or undefined (never one past its expiry or the age bound). */
  get(token: string, now: number): Identity | undefined {
    const entry = this.entries.get(token);
    if (!entry) {
      this.misses++;
      return undefined;
    }
    const expiresAt = entry.identity.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
    if (expiresAt <= now || now - entry.cachedAt >= this.maxAgeMs) {
      this.entries.delete(token);
      this.misses++;
      return undefined;
    }
    // Most recently used last, so the first key is the one to evict.
    this.entries.delete(token);
    this.entries.set(token, entry);
    this.hits++;
    return entry.identity;
  }

  set(token: string, identity: Identity, readAtGeneration: number, now: number, lastUsedAt: number | null): void {
    if (readAtGeneration !== this.changes || this.maxEntries <= 0) return;
    this.entries.delete(token);
    this.entries.set(token, { identity, cachedAt: now, lastUsedAt: lastUsedAt ?? now });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /**
   * True (once per `resolutionMs`) when the token's `lastUsedAt` should be written again; the
   * caller writes it. Keeps last-use tracking as coarse as without the cache.
   */
  claimLastUsedWrite(token: string, now: number, resolutionMs: number): boolean {
    const entry = this.entries.get(token);
    if (!entry || now - entry.lastUsedAt <= resolutionMs) return false;
    entry.lastUsedAt = now;
    return true;
  }

  /** Forgets every token with this id (its revocation was committed). */
  dropToken(tokenId: string): void {
    this.dropWhere((identity) => identity.tokenId === tokenId);
  }

  /** Forgets every token of this subject (its memberships changed). */
  dropSubject(subject: string): void {
    this.dropWhere((identity) => identity.subject === subject);
  }

  /** Forgets everything (e.g. the event log could not be followed, so changes may have been missed). */
  clear(): void {
    this.changes++;
    this.entries.clear();
  }

  private dropWhere(predicate: (identity: Identity) => boolean): void {
    this.changes++;
    for (const [token, entry] of this.entries) if (predicate(entry.identity)) this.entries.delete(token);
  }
}
