import { hasTenantRole } from '../auth/identity.js';
import type { SecretKeyring } from '../auth/secret-keys.js';
import { EnvEntry } from '../db/entities/env-entry.js';
import { Sandbox } from '../db/entities/sandbox.js';
import { isUuid } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { findRows } from '../db/rows.js';
import { audited } from './audit.js';
import type { ServiceContext } from './context.js';
import { AlreadyExistsError, ForbiddenError, NotFoundError, UnavailableError, ValidationError } from './errors.js';
import {
  ENV_NAME_MAX_LENGTH,
  ENV_RESERVED_PREFIX,
  ENV_VALUE_MAX_BYTES,
  MAX_ENV_ENTRIES_PER_SCOPE,
  SECRET_REENCRYPT_BATCH,
} from './input-limits.js';
import { requireFencingToken } from './leases.js';
import { lockRow, runSql } from './locks.js';

/**
 * Environment variables and secrets (docs/domain-api.md, "Environment and secrets"). A tenant's
 * entries apply to each of its sandboxes; a sandbox's own entry of the same name wins. Secret
 * values are encrypted at rest and write-only: no view below carries them, and the one way out
 * is `runtimeEnvironment`, for the worker holding the sandbox's lease with its current token.
 */

export type EnvScope = 'TENANT' | 'SANDBOX';

/** What callers may read of an entry. A secret's view has no value, by construction. */
export interface EnvEntryView {
  name: string;
  scope: EnvScope;
  secret: boolean;
  /** A variable's value; always null for a secret. */
  value: string | null;
  updatedAt: Date;
}

export interface SetEnvInput {
  tenantId: string;
  /** Absent: tenant-wide. */
  sandboxId?: string | null;
  name: string;
  value: string;
}

export type DeleteEnvInput = Omit<SetEnvInput, 'value'>;

/** One entry of a process's environment, as the worker receives it. */
export interface RuntimeEnvEntry {
  name: string;
  value: string;
  secret: boolean;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** What a secret's ciphertext is bound to (AES-GCM additional data): a copy onto another row does not decrypt. */
function secretContext(entry: Pick<EnvEntry, 'scopeId' | 'name'> & { tenantId: string }): string {
  return `flotilla-secret/${entry.tenantId}/${entry.scopeId}/${entry.name}`;
}

function validName(name: string): string {
  if (name.length === 0 || name.length > ENV_NAME_MAX_LENGTH || !ENV_NAME.test(name))
    throw new ValidationError(
      `name must be 1 to ${ENV_NAME_MAX_LENGTH} characters of A-Z, a-z, 0-9 and _, not starting with a digit`,
      'input.name',
    );
  if (name.toUpperCase().startsWith(ENV_RESERVED_PREFIX))
    throw new ValidationError(`names starting with ${ENV_RESERVED_PREFIX} are reserved for the worker`, 'input.name');
  return name;
}

/** Checks a value without ever quoting it in the error. */
function validValue(value: string): string {
  if (Buffer.byteLength(value, 'utf8') > ENV_VALUE_MAX_BYTES)
    throw new ValidationError(`value must be at most ${ENV_VALUE_MAX_BYTES} bytes`, 'input.value');
  if (value.includes('\0')) throw new ValidationError('value must not contain a NUL character', 'input.value');
  return value;
}

function viewOf(entry: EnvEntry): EnvEntryView {
  return {
    name: entry.name,
    scope: entry.sandbox ? 'SANDBOX' : 'TENANT',
    secret: entry.secret,
    value: entry.secret ? null : entry.value,
    updatedAt: entry.updatedAt,
  };
}

/** Tenant-wide entries overlaid with the sandbox's own: one per name, by name. */
function merged<T extends { name: string; scope: EnvScope }>(entries: readonly T[]): T[] {
  const byName = new Map<string, T>();
  for (const entry of entries) {
    const held = byName.get(entry.name);
    if (!held || (held.scope === 'TENANT' && entry.scope === 'SANDBOX')) byName.set(entry.name, entry);
  }
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export class EnvService {
  constructor(private readonly ctx: ServiceContext) {}

  /** Tenant OPERATOR. Creates or replaces a variable. */
  setVar(input: SetEnvInput): Promise<EnvEntryView> {
    return this.set('setEnvVar', input, false);
  }

  /** Tenant ADMIN. Creates or replaces a secret; its value is encrypted before it reaches the store. */
  setSecret(input: SetEnvInput): Promise<EnvEntryView> {
    return this.set('setSecret', input, true);
  }

  /** Tenant OPERATOR. */
  deleteVar(input: DeleteEnvInput): Promise<EnvEntryView> {
    return this.remove('deleteEnvVar', input, false);
  }

  /** Tenant ADMIN. */
  deleteSecret(input: DeleteEnvInput): Promise<EnvEntryView> {
    return this.remove('deleteSecret', input, true);
  }

  /** A tenant's own (tenant-wide) variables or secrets, by name. Tenant VIEWER. */
  async listForTenant(tenantId: string, secret: boolean): Promise<EnvEntryView[]> {
    if (!isUuid(tenantId) || !hasTenantRole(this.ctx.identity, tenantId, 'VIEWER'))
      throw new NotFoundError('Tenant', tenantId);
    const rows = await findRows(this.ctx.em, EnvEntry, { scopeId: tenantId, secret }, { orderBy: { name: 'asc' } });
    return rows.map(viewOf);
  }

  /**
   * What applies to each sandbox (its tenant's entries overlaid with its own), for the
   * per-request loader: one statement for every sandbox asked. Only for a tenant VIEWER.
   */
  async effectiveFor(
    sandboxes: readonly { sandboxId: string; tenantId: string }[],
    secret: boolean,
  ): Promise<EnvEntryView[][]> {
    const visible = sandboxes.filter((s) => hasTenantRole(this.ctx.identity, s.tenantId, 'VIEWER'));
    const scopes = [...new Set(visible.flatMap((s) => [s.sandboxId, s.tenantId]))];
    const rows = scopes.length === 0 ? [] : await findRows(this.ctx.em, EnvEntry, { scopeId: { $in: scopes }, secret });
    return sandboxes.map((s) =>
      visible.includes(s)
        ? merged(rows.filter((r) => r.scopeId === s.sandboxId || r.scopeId === s.tenantId).map(viewOf))
        : [],
    );
  }

  /**
   * The process environment of a sandbox: its tenant's variables and secrets overlaid with its
   * own, secrets decrypted. Only for the worker holding the sandbox's live lease with exactly
   * the current fencing token (anyone else gets the fence's typed error, never a value). Each
   * read is audited (without values).
   */
  async runtimeEnvironment(sandboxId: string, fencingToken: string): Promise<RuntimeEnvEntry[]> {
    return audited(
      this.ctx,
      'readRuntimeEnvironment',
      { targetId: sandboxId },
      async (em) => {
        const sandbox = await requireFencingToken(
          em,
          this.ctx.identity,
          'worker:lease',
          sandboxId,
          fencingToken,
          this.ctx.clock,
        );
        const tenantId = sandbox.tenant.id;
        const rows = await findRows(em, EnvEntry, { scopeId: { $in: [sandbox.id, tenantId] } });
        const chosen = merged(rows.map((row) => ({ row, name: row.name, scope: viewOf(row).scope })));
        const keyring = chosen.some((c) => c.row.secret) ? this.keyring() : null;
        const entries = chosen.map(({ row }) => ({
          name: row.name,
          secret: row.secret,
          value: row.secret ? openSecret(keyring as SecretKeyring, row, tenantId) : (row.value ?? ''),
        }));
        return { tenantId, entries };
      },
      (result) => ({ tenantId: result.tenantId }),
    ).then((r) => r.entries);
  }

  private keyring(): SecretKeyring {
    if (!this.ctx.secrets) throw new UnavailableError('secrets are not available on this server (no secrets key)');
    return this.ctx.secrets;
  }

  private async set(action: string, input: SetEnvInput, secret: boolean): Promise<EnvEntryView> {
    return audited(
      this.ctx,
      action,
      { tenantId: input.tenantId, targetId: input.sandboxId ?? input.tenantId },
      async (em) => {
        const scope = await this.scopeOf(em, input, secret);
        const name = validName(input.name);
        const value = validValue(input.value);
        const keyring = secret ? this.keyring() : null;
        let entry = await em.findOne(EnvEntry, { scopeId: scope.scopeId, name }, { refresh: true });
        if (entry && entry.secret !== secret)
          throw new AlreadyExistsError(entry.secret ? 'Secret' : 'Variable', 'name', name);
        if (!entry) {
          const held = await em.count(EnvEntry, { scopeId: scope.scopeId });
          if (held >= MAX_ENV_ENTRIES_PER_SCOPE)
            throw new ValidationError(
              `at most ${MAX_ENV_ENTRIES_PER_SCOPE} variables and secrets per ${scope.sandboxId ? 'sandbox' : 'tenant'}`,
              'input.name',
            );
          entry = em.create(EnvEntry, {
            tenant: input.tenantId,
            sandbox: scope.sandboxId,
            scopeId: scope.scopeId,
            name,
            secret,
          });
        }
        if (keyring) {
          const sealed = keyring.seal(value, secretContext({ tenantId: input.tenantId, scopeId: scope.scopeId, name }));
          entry.ciphertext = sealed.ciphertext;
          entry.keyId = sealed.keyId;
          entry.value = null;
        } else {
          entry.value = value;
        }
        entry.updatedAt = this.ctx.clock.now();
        await em.flush();
        return viewOf(entry);
      },
    );
  }

  private async remove(action: string, input: DeleteEnvInput, secret: boolean): Promise<EnvEntryView> {
    return audited(
      this.ctx,
      action,
      { tenantId: input.tenantId, targetId: input.sandboxId ?? input.tenantId },
      async (em) => {
        const scope = await this.scopeOf(em, input, secret);
        const entry = await em.findOne(EnvEntry, { scopeId: scope.scopeId, name: input.name, secret });
        if (!entry) throw new NotFoundError(secret ? 'Secret' : 'Variable', input.name);
        const view = viewOf(entry);
        em.remove(entry);
        await em.flush();
        return view;
      },
    );
  }

  /**
   * The scope an input names, after the role check (secrets: ADMIN, variables: OPERATOR). The
   * tenant row is locked (Postgres) so that concurrent writes of one tenant queue up: the count
   * limit and the one-name-per-scope rule see each other's commits.
   */
  private async scopeOf(
    em: Em,
    input: DeleteEnvInput,
    secret: boolean,
  ): Promise<{ scopeId: string; sandboxId: string | null }> {
    const role = secret ? 'ADMIN' : 'OPERATOR';
    if (!isUuid(input.tenantId) || !hasTenantRole(this.ctx.identity, input.tenantId, role))
      throw new ForbiddenError(`${secret ? 'secrets need' : 'variables need'} the ${role} role in the tenant`);
    if (!(await lockRow(em, 'tenants', input.tenantId))) throw new NotFoundError('Tenant', input.tenantId);
    if (!input.sandboxId) return { scopeId: input.tenantId, sandboxId: null };
    const sandbox = isUuid(input.sandboxId) ? await em.findOne(Sandbox, input.sandboxId) : null;
    if (!sandbox || sandbox.tenant.id !== input.tenantId) throw new NotFoundError('Sandbox', input.sandboxId);
    return { scopeId: sandbox.id, sandboxId: sandbox.id };
  }
}

function openSecret(keyring: SecretKeyring, row: EnvEntry, tenantId: string): string {
  return keyring.open(
    { keyId: row.keyId ?? '', ciphertext: row.ciphertext ?? '' },
    secretContext({ tenantId, scopeId: row.scopeId, name: row.name }),
    `secret ${row.name}`,
  );
}

/** A deleted sandbox's own variables and secrets are removed with it (its tenant's stay). */
export async function forgetSandboxEnv(em: Em, sandboxId: string): Promise<void> {
  await em.nativeDelete(EnvEntry, { scopeId: sandboxId });
}

/**
 * Re-encrypts, in transactions of `batchSize`, every secret not under the keyring's encrypting
 * key (after a rotation). Returns how many moved. A secret whose key is missing stops it with
 * the error naming that key; what moved before stays moved.
 */
export async function reencryptSecrets(
  em: Em,
  keyring: SecretKeyring,
  batchSize: number = SECRET_REENCRYPT_BATCH,
): Promise<number> {
  const target = keyring.encryptingKid;
  let moved = 0;
  for (;;) {
    const batch = await em.fork().transactional(async (tx) => {
      const rows = await tx.find(
        EnvEntry,
        { secret: true, keyId: { $ne: target } },
        { orderBy: { id: 'asc' }, limit: batchSize },
      );
      for (const row of rows) {
        const context = secretContext({ tenantId: row.tenant.id, scopeId: row.scopeId, name: row.name });
        const plain = keyring.open(
          { keyId: row.keyId ?? '', ciphertext: row.ciphertext ?? '' },
          context,
          `secret ${row.name}`,
        );
        const sealed = keyring.seal(plain, context);
        row.ciphertext = sealed.ciphertext;
        row.keyId = sealed.keyId;
      }
      await tx.flush();
      return rows.length;
    });
    moved += batch;
    if (batch < batchSize) return moved;
  }
}

/** How many secrets each key id encrypts (`flotilla keys list-secrets`: a key with none may be removed). */
export async function secretsPerKey(em: Em): Promise<Map<string, number>> {
  const rows = await runSql<{ key_id: string; n: number | string }[]>(
    em.fork(),
    'select key_id, count(*) as n from env_entries where ciphertext is not null group by key_id',
    [],
  );
  return new Map(rows.map((r) => [r.key_id, Number(r.n)]));
}
