import { SecretKeyring } from '../auth/secret-keys.js';
import { type Config, secretsKeyFile } from '../config/index.js';
import { migrate, openOrm } from '../db/orm.js';
import { reencryptSecrets, secretsPerKey } from '../domain/env.js';

/** What an operator command writes: lines for stdout (results) and stderr (what happened). */
export interface OpsOutput {
  out(line: string): void;
  err(line: string): void;
}

/**
 * `flotilla keys rotate-secrets`: with the generated key file, makes a new key the encrypting one;
 * with FLOTILLA_SECRETS_KEY, the first key given there is the new one (nothing is generated).
 * Then re-encrypts every stored secret under it, in batches. Older keys keep decrypting until
 * removed; running servers re-read the key file within a minute (configured keys: restart them
 * with the new FLOTILLA_SECRETS_KEY before rotating).
 */
export async function rotateSecrets(config: Config, output: OpsOutput): Promise<number> {
  const keyring = SecretKeyring.open(config.secretsKey, secretsKeyFile(config));
  if (keyring.file) {
    const kid = keyring.rotate();
    output.err(`new secrets key ${kid} in ${keyring.file}; it encrypts from now on, older keys still decrypt`);
  }
  const orm = await openOrm(config.databaseUrl);
  try {
    const applied = await migrate(orm);
    if (applied.length) output.err(`applied ${applied.length} migration(s) first`);
    const moved = await reencryptSecrets(orm.em.fork(), keyring);
    output.out(`re-encrypted ${moved} secret(s) under key ${keyring.encryptingKid}`);
    return 0;
  } finally {
    await orm.close(true);
  }
}

/** `flotilla keys list-secrets`: each secrets key, which one encrypts, and how many secrets use it. */
export async function listSecretKeys(config: Config, output: OpsOutput): Promise<number> {
  const keyring = SecretKeyring.open(config.secretsKey, secretsKeyFile(config));
  const orm = await openOrm(config.databaseUrl);
  try {
    await migrate(orm);
    const counts = await secretsPerKey(orm.em);
    for (const kid of keyring.kids()) {
      output.out(`${kid}  ${counts.get(kid) ?? 0} secret(s)${kid === keyring.encryptingKid ? '  ENCRYPTING' : ''}`);
      counts.delete(kid);
    }
    // Secrets under a key this configuration lacks cannot be decrypted here: say which.
    for (const [kid, n] of counts) output.out(`${kid}  ${n} secret(s)  MISSING (not configured: cannot decrypt)`);
    return 0;
  } finally {
    await orm.close(true);
  }
}

/** `flotilla keys remove-secrets KID`: key file only; refused while a stored secret still uses the key. */
export async function removeSecretKey(config: Config, kid: string, output: OpsOutput): Promise<number> {
  const keyring = SecretKeyring.open(config.secretsKey, secretsKeyFile(config));
  if (!keyring.file) {
    output.err('the secrets keys come from FLOTILLA_SECRETS_KEY: remove the key there (and restart the servers)');
    return 2;
  }
  const orm = await openOrm(config.databaseUrl);
  try {
    await migrate(orm);
    const using = (await secretsPerKey(orm.em)).get(kid) ?? 0;
    if (using > 0) {
      output.err(`key ${kid} still encrypts ${using} secret(s): run flotilla keys rotate-secrets first`);
      return 1;
    }
    if (!keyring.remove(kid)) {
      output.err(`no secrets key ${kid}`);
      return 1;
    }
    output.err(`removed secrets key ${kid}`);
    return 0;
  } finally {
    await orm.close(true);
  }
}
