import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { SecretKeyring } from '../auth/secret-keys.js';
import { UnavailableError } from './errors.js';

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

/** What a channel's sealed secret is bound to (AES-GCM additional data): a copy onto another channel does not open. */
export function channelSecretContext(channelId: string): string {
  return `channel:${channelId}`;
}

/** A channel's secret as the store keeps it: the ciphertext and the key that sealed it. */
export interface StoredChannelSecret {
  secret: string;
  secretKeyId: string | null;
}

function requireKeyring(keyring: SecretKeyring | undefined): SecretKeyring {
  if (!keyring) throw new UnavailableError('channel secrets are not available on this server (no secrets key)');
  return keyring;
}

/** Seals a channel's secret with the keyring's encrypting key, bound to the channel. */
export function sealChannelSecret(
  keyring: SecretKeyring | undefined,
  channelId: string,
  secret: string,
): StoredChannelSecret {
  const sealed = requireKeyring(keyring).seal(secret, channelSecretContext(channelId));
  return { secret: sealed.ciphertext, secretKeyId: sealed.keyId };
}

/**
 * The secret to sign or verify with. A row without a key id is from before secrets were sealed and
 * holds it in clear (until `flotilla keys rotate-secrets` seals it). Throws
 * SecretKeyUnavailableError, naming the key id and never the secret, when the key is missing
 * (`problem: 'missing'`) or the ciphertext does not open for this channel (`'unverified'`).
 */
export function openChannelSecret(
  keyring: SecretKeyring | undefined,
  channel: StoredChannelSecret & { id: string },
): string {
  if (channel.secretKeyId === null) return channel.secret;
  return requireKeyring(keyring).open(
    { keyId: channel.secretKeyId, ciphertext: channel.secret },
    channelSecretContext(channel.id),
    `the secret of channel ${channel.id}`,
  );
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
