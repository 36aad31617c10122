import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { SECRET_KEY_BYTES, SECRET_KID_PATTERN, type SecretKey } from '../config/secrets-key.js';
import { DomainError } from '../kernel/errors.js';

export type { SecretKey };

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const CIPHER = 'aes-256-gcm';

/** A ciphertext as stored: the key id beside base64(nonce | tag | encrypted bytes). */
export interface SealedSecret {
  keyId: string;
  ciphertext: string;
}

/**
 * A secret cannot be decrypted: its key is not configured (removed from FLOTILLA_SECRETS_KEY or
 * the key file) or the ciphertext does not match it. Names the key id, never the value.
 */
export class SecretKeyUnavailableError extends DomainError {
  readonly code = 'UNAVAILABLE';
  constructor(
    readonly keyId: string,
    what: string,
    /** `missing`: the key is not configured; `unverified`: the ciphertext does not decrypt with it. */
    readonly problem: 'missing' | 'unverified' = 'missing',
  ) {
    super(
      problem === 'missing'
        ? `${what} is encrypted with secrets key "${keyId}", which this server does not have (FLOTILLA_SECRETS_KEY or the secrets key file)`
        : `${what} does not decrypt with secrets key "${keyId}": the key's material differs from the one that encrypted it, or the row was altered`,
    );
  }
}

interface KeyFile {
  keys: { kid: string; key: string; createdAt: string }[];
}

/**
 * The keys secrets are encrypted with at rest. From configuration (FLOTILLA_SECRETS_KEY) or,
 * when that is not set, from a key file in the data directory that is created on first use (as
 * the signing keys are), so a fresh install works out of the box. The first key encrypts; every
 * key decrypts, so a rotation never makes stored secrets unreadable until their key is removed.
 */
export class SecretKeyring {
  private keys: SecretKey[];
  private lastFileReloadAt = 0;

  private constructor(
    keys: SecretKey[],
    /** Set when the keys come from the generated file (they may be rotated by `flotilla keys`). */
    readonly file: string | null,
  ) {
    this.keys = keys;
  }

  /** Keys from configuration, or else from (a newly created) `file`. */
  static open(configured: readonly SecretKey[] | undefined, file: string): SecretKeyring {
    if (configured && configured.length > 0) return new SecretKeyring([...configured], null);
    const ring = new SecretKeyring(readKeyFile(file), file);
    if (ring.keys.length === 0) ring.rotate();
    return ring;
  }

  /** The key id new encryptions use. */
  get encryptingKid(): string {
    const first = this.keys[0];
    if (!first) throw new Error('no secrets key');
    return first.kid;
  }

  /** Every key id, the encrypting one first. */
  kids(): string[] {
    return this.keys.map((k) => k.kid);
  }

  has(kid: string): boolean {
    return this.keys.some((k) => k.kid === kid);
  }

  /**
   * Encrypts `plain`, bound to `context` (what the secret is: its tenant, scope and name), so a
   * ciphertext copied onto another row does not decrypt there.
   */
  seal(plain: string, context: string): SealedSecret {
    const { kid, key } = this.keys[0] ?? { kid: '', key: Buffer.alloc(0) };
    if (!kid) throw new Error('no secrets key');
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv(CIPHER, key, nonce);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const encrypted = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return { keyId: kid, ciphertext: Buffer.concat([nonce, cipher.getAuthTag(), encrypted]).toString('base64') };
  }

  /** Decrypts what `seal` made; `what` names the secret in the error when its key is missing. */
  open(sealed: SealedSecret, context: string, what: string): string {
    let entry = this.keys.find((k) => k.kid === sealed.keyId);
    if (!entry && this.file) {
      // Another process may have rotated the file (flotilla keys rotate-secrets): re-read it, at most once a second.
      if (Date.now() - this.lastFileReloadAt > 1000) this.reload();
      entry = this.keys.find((k) => k.kid === sealed.keyId);
    }
    if (!entry) throw new SecretKeyUnavailableError(sealed.keyId, what);
    const raw = Buffer.from(sealed.ciphertext, 'base64');
    try {
      const decipher = createDecipheriv(CIPHER, entry.key, raw.subarray(0, NONCE_BYTES));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(raw.subarray(NONCE_BYTES, NONCE_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(NONCE_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretKeyUnavailableError(sealed.keyId, what, 'unverified');
    }
  }

  /** Re-reads the key file (no-op for configured keys). */
  reload(): void {
    if (!this.file) return;
    this.lastFileReloadAt = Date.now();
    const keys = readKeyFile(this.file);
    if (keys.length > 0) this.keys = keys;
  }

  /**
   * Key file only: a new key becomes the encrypting one; the others keep decrypting. Returns
   * its kid. Configured keys are rotated by changing FLOTILLA_SECRETS_KEY (new key first).
   */
  rotate(): string {
    if (!this.file) throw new Error('the secrets keys come from FLOTILLA_SECRETS_KEY: put the new key first there');
    const kid = `k${new Date().toISOString().replace(/[-:.TZ]/g, '')}${randomBytes(2).toString('hex')}`;
    const fresh: SecretKey = { kid, key: randomBytes(SECRET_KEY_BYTES) };
    this.keys = [fresh, ...readKeyFile(this.file)];
    this.writeFile();
    return kid;
  }

  /** Key file only: removes a key that no longer encrypts. */
  remove(kid: string): boolean {
    if (!this.file) throw new Error('the secrets keys come from FLOTILLA_SECRETS_KEY: remove the key there');
    this.reload();
    if (!this.has(kid)) return false;
    if (kid === this.encryptingKid) throw new Error(`key ${kid} is the encrypting key; rotate before removing it`);
    this.keys = this.keys.filter((k) => k.kid !== kid);
    this.writeFile();
    return true;
  }

  private writeFile(): void {
    const file = this.file as string;
    const now = new Date().toISOString();
    const previous = new Map(readKeyFileRaw(file).keys.map((k) => [k.kid, k.createdAt]));
    const body: KeyFile = {
      keys: this.keys.map((k) => ({
        kid: k.kid,
        key: k.key.toString('base64'),
        createdAt: previous.get(k.kid) ?? now,
      })),
    };
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  }
}

function readKeyFileRaw(file: string): KeyFile {
  if (!existsSync(file)) return { keys: [] };
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<KeyFile>;
  if (!Array.isArray(parsed.keys)) throw new Error(`${file}: expected {"keys": [...]}`);
  return { keys: parsed.keys };
}

function readKeyFile(file: string): SecretKey[] {
  return readKeyFileRaw(file).keys.map((k, i) => {
    const key = Buffer.from(String(k.key), 'base64');
    if (!SECRET_KID_PATTERN.test(String(k.kid)) || key.length !== SECRET_KEY_BYTES)
      throw new Error(`${file}: key ${i + 1} is not a kid with a ${SECRET_KEY_BYTES}-byte base64 key`);
    return { kid: k.kid, key };
  });
}
