import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createLocalJWKSet, exportJWK, generateKeyPair, importJWK, type JSONWebKeySet, type JWK } from 'jose';
import { SigningKey } from '../db/entities/signing-key.js';
import { isUuid, newId } from '../db/ids.js';
import type { Orm } from '../db/orm.js';

/** The algorithm of the server's own keys. */
export const SIGNING_ALG = 'ES256';
/** Least time between two reloads triggered by an unknown kid, so forged kids cannot hammer the store. */
export const UNKNOWN_KID_RELOAD_COOLDOWN_MS = 5_000;

interface StoredKey {
  kid: string;
  alg: string;
  publicJwk: JWK;
  privateJwk: JWK;
  createdAt: string;
  retiredAt: string | null;
}

type VerifyKeySet = ReturnType<typeof createLocalJWKSet>;
type PrivateKey = Exclude<Awaited<ReturnType<typeof importJWK>>, Uint8Array>;

/**
 * The key pairs the server signs its own tokens with, kept in the database (shared by all
 * replicas) or in a JSON file named by config. The newest unretired key signs; every kept
 * key verifies, so tokens outlive a rotation.
 */
export class SigningKeys {
  private keys: StoredKey[] = [];
  private keySet: VerifyKeySet = createLocalJWKSet({ keys: [] });
  private signer: { kid: string; key: PrivateKey } | null = null;
  private lastUnknownKidReloadAt = 0;
  private readonly removedListeners: (() => void)[] = [];

  constructor(
    private readonly orm: Orm,
    private readonly file: string | undefined,
  ) {}

  /** Loads the keys, creating the first one when there is none. */
  async init(): Promise<void> {
    await this.reload();
    if (!this.keys.some((k) => !k.retiredAt)) await this.rotate();
  }

  /** Creates a new signing key; the previous one is retired but keeps verifying. */
  async rotate(): Promise<string> {
    const { publicKey, privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
    const kid = newId();
    const now = new Date();
    const key: StoredKey = {
      kid,
      alg: SIGNING_ALG,
      publicJwk: { ...(await exportJWK(publicKey)), kid, alg: SIGNING_ALG, use: 'sig' },
      privateJwk: { ...(await exportJWK(privateKey)), kid, alg: SIGNING_ALG },
      createdAt: now.toISOString(),
      retiredAt: null,
    };
    if (this.file) {
      const all = this.readFile().map((k) => (k.retiredAt ? k : { ...k, retiredAt: now.toISOString() }));
      this.writeFile([...all, key]);
    } else {
      await this.orm.em.fork().transactional(async (em) => {
        await em.nativeUpdate(SigningKey, { retiredAt: null }, { retiredAt: now });
        const row = em.create(SigningKey, {
          id: kid,
          alg: key.alg,
          publicJwk: key.publicJwk as Record<string, unknown>,
          privateJwk: key.privateJwk as Record<string, unknown>,
          createdAt: now,
          retiredAt: null,
        });
        em.persist(row);
      });
    }
    await this.reload();
    return kid;
  }

  /**
   * A token names a kid we have not loaded: reload when the store has it (one primary-key
   * lookup, so forged kids cost no more than any other refused token). A key file has no
   * such lookup, so it is re-read at most once per cooldown.
   */
  async reloadForUnknownKid(kid: string): Promise<void> {
    if (this.file) {
      if (Date.now() - this.lastUnknownKidReloadAt < UNKNOWN_KID_RELOAD_COOLDOWN_MS) return;
      this.lastUnknownKidReloadAt = Date.now();
      await this.reload();
      return;
    }
    if (!isUuid(kid)) return;
    if ((await this.orm.em.fork().count(SigningKey, { id: kid })) > 0) await this.reload();
  }

  /**
   * Removes a retired key: tokens it signed stop verifying. The signing key cannot be
   * removed (rotate first). Returns false when there is no such key.
   */
  async remove(kid: string): Promise<boolean> {
    await this.reload();
    const key = this.keys.find((k) => k.kid === kid);
    if (!key) return false;
    if (!key.retiredAt) throw new Error(`key ${kid} is the active signing key; rotate before removing it`);
    if (this.file) this.writeFile(this.readFile().filter((k) => k.kid !== kid));
    else await this.orm.em.fork().nativeDelete(SigningKey, { id: kid });
    await this.reload();
    return true;
  }

  /** Every kept key, oldest first, without private material. */
  list(): { kid: string; alg: string; createdAt: string; retiredAt: string | null; signing: boolean }[] {
    return this.keys.map((k) => ({
      kid: k.kid,
      alg: k.alg,
      createdAt: k.createdAt,
      retiredAt: k.retiredAt,
      signing: k.kid === this.signer?.kid,
    }));
  }

  /** Called after a re-read found a key gone (`flotilla keys remove`): what it signed must be refused. */
  onRemoved(listener: () => void): void {
    this.removedListeners.push(listener);
  }

  /** Re-reads the keys (another replica may have rotated). */
  async reload(): Promise<void> {
    const before = this.keys.map((k) => k.kid);
    this.keys = this.file ? this.readFile() : await this.readDatabase();
    if (before.some((kid) => !this.hasKid(kid))) for (const listener of this.removedListeners) listener();
    this.keySet = createLocalJWKSet(this.jwks());
    const active = this.keys
      .filter((k) => !k.retiredAt)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .at(-1);
    this.signer = active
      ? { kid: active.kid, key: (await importJWK(active.privateJwk, SIGNING_ALG)) as PrivateKey }
      : null;
  }

  currentSigner(): { kid: string; key: PrivateKey } {
    if (!this.signer) throw new Error('no active signing key (SigningKeys.init was not called)');
    return this.signer;
  }

  /** The public keys, as served at /.well-known/jwks.json. */
  jwks(): JSONWebKeySet {
    return { keys: this.keys.map((k) => k.publicJwk) };
  }

  verificationKeys(): VerifyKeySet {
    return this.keySet;
  }

  hasKid(kid: string): boolean {
    return this.keys.some((k) => k.kid === kid);
  }

  private async readDatabase(): Promise<StoredKey[]> {
    const rows = await this.orm.em.fork().find(SigningKey, {}, { orderBy: { createdAt: 'asc' } });
    return rows.map((r) => ({
      kid: r.id,
      alg: r.alg,
      publicJwk: r.publicJwk as JWK,
      privateJwk: r.privateJwk as JWK,
      createdAt: r.createdAt.toISOString(),
      retiredAt: r.retiredAt?.toISOString() ?? null,
    }));
  }

  private readFile(): StoredKey[] {
    const file = this.file as string;
    if (!existsSync(file)) return [];
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as { keys?: StoredKey[] };
    if (!Array.isArray(parsed.keys)) throw new Error(`${file}: expected {"keys": [...]}`);
    return parsed.keys;
  }

  private writeFile(keys: StoredKey[]): void {
    const file = this.file as string;
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  }
}
