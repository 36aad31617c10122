import { SecretKeyring } from '../auth/secret-keys.js';
import { type Config, secretsKeyFile } from '../config/index.js';
import { migrate, openOrm } from '../db/orm.js';
import { channelSecretsPerKey, resealChannelSecrets } from '../domain/channels.js';
import { reencryptSecrets, secretsPerKey } from '../domain/env.js';

/** What an operator command writes: lines for stdout (results) and stderr (what happened). */
export interface OpsOutput {
  out(line: string): void;
  err(line: string): void;
}

/**
 * `flotilla keys rotate-secrets`: with the generated key file, makes a new key the encrypting one;
 * with FLOTILLA_SECRETS_KEY, the first key given there is the new one (nothing is generated).
 * Then re-encrypts every stored secret under it, in batches: environment secrets and channel
 * secrets (sealing those still stored in clear from before channel secrets were sealed). Older
 * keys keep decrypting until removed; running servers re-read the key file within a minute (configured keys: restart them
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
    const channels = await resealChannelSecrets(orm.em.fork(), keyring);
    output.out(
      `re-encrypted ${moved} secret(s)${channels > 0 ? ` and ${channels} channel secret(s)` : ''} under key ${keyring.encryptingKid}`,
    );
    return 0;
  } finally {
    await orm.close(true);
  }
}

/** What a key seals: "N secret(s)", and ", M channel secret(s)" when it seals channel secrets too. */
function sealedCount(secrets: number, channels: number): string {
  return `${secrets} secret(s)${channels > 0 ? `, ${channels} channel secret(s)` : ''}`;
}

/**
 * `flotilla keys list-secrets`: each secrets key, which one encrypts, and how many secrets
 * (environment and channel secrets) use it; then channel secrets still stored in clear, if any.
 */
export async function listSecretKeys(config: Config, output: OpsOutput): Promise<number> {
  const keyring = SecretKeyring.open(config.secretsKey, secretsKeyFile(config));
  const orm = await openOrm(config.databaseUrl);
  try {
    await migrate(orm);
    const counts = await secretsPerKey(orm.em);
    const channels = await channelSecretsPerKey(orm.em);
    const clear = channels.get(null) ?? 0;
    channels.delete(null);
    for (const kid of keyring.kids()) {
      const sealed = sealedCount(counts.get(kid) ?? 0, channels.get(kid) ?? 0);
      output.out(`${kid}  ${sealed}${kid === keyring.encryptingKid ? '  ENCRYPTING' : ''}`);
      counts.delete(kid);
      channels.delete(kid);
    }
    // Secrets under a key this configuration lacks cannot be decrypted here: say which.
    for (const kid of new Set([...counts.keys(), ...(channels.keys() as Iterable<string>)]))
      output.out(
        `${kid}  ${sealedCount(counts.get(kid) ?? 0, channels.get(kid) ?? 0)}  MISSING (not configured: cannot decrypt)`,
      );
    if (clear > 0)
      output.out(`(none)  ${clear} channel secret(s)  IN CLEAR (run flotilla keys rotate-secrets to seal them)`);
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
    const channels = (await channelSecretsPerKey(orm.em)).get(kid) ?? 0;
    if (using > 0 || channels > 0) {
      output.err(`key ${kid} still encrypts ${sealedCount(using, channels)}: run flotilla keys rotate-secrets first`);
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
