/** The format of FLOTILLA_SECRETS_KEY (the keys themselves are used in src/auth/secret-keys.ts). */

/** AES-256-GCM: a 32-byte key, a fresh 12-byte nonce per encryption, a 16-byte tag. */
export const SECRET_KEY_BYTES = 32;
/** A key id: what is stored beside each ciphertext, so the right key decrypts it. */
export const SECRET_KID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
/** The generated key file's name in the data directory when FLOTILLA_SECRETS_KEY is not set. */
export const SECRETS_KEY_FILE_NAME = 'secrets.keys.json';

export interface SecretKey {
  kid: string;
  key: Buffer;
}

/**
 * Parses FLOTILLA_SECRETS_KEY: comma-separated `kid:base64` entries, each key 32 bytes once
 * decoded; the first encrypts, every one decrypts. Problems name the entry's position or kid,
 * never key material.
 */
export function parseSecretKeys(value: string): { keys: SecretKey[]; problems: string[] } {
  const keys: SecretKey[] = [];
  const problems: string[] = [];
  const entries = value
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (entries.length === 0) problems.push('expected kid:base64-key[,kid:base64-key…]');
  entries.forEach((entry, i) => {
    const colon = entry.indexOf(':');
    const kid = colon > 0 ? entry.slice(0, colon) : '';
    if (!SECRET_KID_PATTERN.test(kid)) {
      problems.push(`entry ${i + 1}: expected kid:base64-key with a kid of 1-64 characters [A-Za-z0-9_.-]`);
      return;
    }
    const key = Buffer.from(entry.slice(colon + 1), 'base64');
    if (key.length !== SECRET_KEY_BYTES) {
      problems.push(`key "${kid}": must be ${SECRET_KEY_BYTES} bytes, base64-encoded (e.g. openssl rand -base64 32)`);
      return;
    }
    if (keys.some((k) => k.kid === kid)) problems.push(`key "${kid}" is given twice`);
    else keys.push({ kid, key });
  });
  return { keys, problems };
}
