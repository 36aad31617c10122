import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Headers of a signed channel call, outbound and inbound. */
export const TIMESTAMP_HEADER = 'x-flotilla-timestamp';
export const SIGNATURE_HEADER = 'x-flotilla-signature';
export const DELIVERY_HEADER = 'x-flotilla-delivery';
export const NONCE_HEADER = 'x-flotilla-nonce';
/** The signature scheme's version, the prefix of the signature header's value ("v1=<hex>"). */
export const SIGNATURE_VERSION = 'v1';
/** How far an inbound call's timestamp may be from the server's clock, either way. */
export const SIGNATURE_TOLERANCE_SECONDS = 5 * 60;

/** A new channel secret: 32 random bytes, shown to the caller once. */
export function newChannelSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

/**
 * How a secret is kept in the store, and read back to sign. The only two places the stored form
 * is made or read: sealing with the server's secrets key can go here without touching callers.
 */
export function sealChannelSecret(secret: string): string {
  return secret;
}
export function openChannelSecret(stored: string): string {
  return stored;
}

/**
 * The signature of a call: HMAC-SHA256 with the channel's secret over the signed parts joined by
 * "." (outbound: timestamp and body; inbound: timestamp, nonce and body), as "v1=<hex>".
 */
export function signParts(secret: string, parts: readonly string[]): string {
  const mac = createHmac('sha256', secret).update(parts.join('.'), 'utf8').digest('hex');
  return `${SIGNATURE_VERSION}=${mac}`;
}

/** Compares a presented signature with the expected one in constant time. */
export function signatureMatches(secret: string, parts: readonly string[], presented: string): boolean {
  const expected = Buffer.from(signParts(secret, parts), 'utf8');
  const given = Buffer.from(presented, 'utf8');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
