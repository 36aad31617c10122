import type { Sandbox } from '../src/db/entities/sandbox.js';
import type { EnvEntryView, RuntimeEnvEntry } from '../src/domain/env.js';
import {
  AlreadyExistsError,
  ForbiddenError,
  LeaseConflictError,
  NotFoundError,
  StaleFencingTokenError,
  ValidationError,
} from '../src/domain/errors.js';
import { ENV_NAME_MAX_LENGTH, ENV_RESERVED_PREFIX, ENV_VALUE_MAX_BYTES } from '../src/domain/input-limits.js';
import { builder, type Context, mutationResult } from './builder.js';
import { localIdOf, optionalLocalIdOf } from './ids.js';
import { SandboxRef } from './sandbox.js';
import { TenantRef } from './tenant.js';

// Environment variables and secrets (docs/domain-api.md, "Environment and secrets"). No type
// here has a field that can hold a secret's value except EnvEntry, which only
// Sandbox.runtimeEnvironment returns, and only to the worker holding the sandbox's lease.

const EnvScopeEnum = builder.enumType('EnvScope', {
  description: 'Where an entry is set: for every sandbox of the tenant, or for one sandbox (which wins).',
  values: ['TENANT', 'SANDBOX'] as const,
});

const EnvVarType = builder.objectRef<EnvEntryView>('EnvVar').implement({
  description: 'An environment variable. Its value is readable (use a secret for credentials).',
  fields: (t) => ({
    name: t.exposeString('name'),
    scope: t.field({ type: EnvScopeEnum, resolve: (e) => e.scope }),
    value: t.string({ resolve: (e) => e.value ?? '' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

const SecretType = builder.objectRef<EnvEntryView>('Secret').implement({
  description: 'A secret: encrypted at rest and write-only. Its value is never returned by the API.',
  fields: (t) => ({
    name: t.exposeString('name'),
    scope: t.field({ type: EnvScopeEnum, resolve: (e) => e.scope }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

const EnvEntryType = builder.objectRef<RuntimeEnvEntry>('EnvEntry').implement({
  description: "One variable of a sandbox process's environment, secrets decrypted (Sandbox.runtimeEnvironment only).",
  fields: (t) => ({
    name: t.exposeString('name'),
    value: t.exposeString('value'),
    secret: t.exposeBoolean('secret'),
  }),
});

const RuntimeEnvironmentType = builder.objectRef<{ entries: RuntimeEnvEntry[] }>('RuntimeEnvironment').implement({
  description: "The sandbox process's environment: the tenant's entries overlaid with the sandbox's own, by name.",
  fields: (t) => ({
    entries: t.field({ type: [EnvEntryType], resolve: (r) => r.entries }),
  }),
});

builder.objectFields(TenantRef, (t) => ({
  envVars: t.field({
    type: [EnvVarType],
    description: "Tenant VIEWER. The tenant-wide variables (each sandbox's own are on Sandbox.envVars), by name.",
    authScopes: (tenant) => ({ tenantRole: { tenantId: tenant.id, role: 'VIEWER' } }),
    resolve: (tenant, _args, ctx) => ctx.services.env.listForTenant(tenant.id, false),
  }),
  secrets: t.field({
    type: [SecretType],
    description: 'Tenant VIEWER. The tenant-wide secrets, by name: names, scopes and times, never values.',
    authScopes: (tenant) => ({ tenantRole: { tenantId: tenant.id, role: 'VIEWER' } }),
    resolve: (tenant, _args, ctx) => ctx.services.env.listForTenant(tenant.id, true),
  }),
}));

/** A sandbox's key for the per-request loaders: its tenant and its id. */
const sandboxKey = (s: Sandbox) => `${s.tenant.id}/${s.id}`;
const splitKeys = (keys: readonly string[]) =>
  keys.map((key) => {
    const [tenantId, sandboxId] = key.split('/');
    return { tenantId, sandboxId };
  });

const effective = (secret: boolean) => (keys: string[], ctx: Context) =>
  ctx.services.env.effectiveFor(splitKeys(keys), secret);

builder.objectFields(SandboxRef, (t) => ({
  envVars: t.loadableList({
    type: EnvVarType,
    description:
      "Tenant VIEWER. The variables its process gets: the tenant's overlaid with the sandbox's own (scope SANDBOX wins), by name.",
    authScopes: (sandbox) => ({ tenantRole: { tenantId: sandbox.tenant.id, role: 'VIEWER' } }),
    load: effective(false),
    resolve: sandboxKey,
  }),
  secrets: t.loadableList({
    type: SecretType,
    description:
      "Tenant VIEWER. The secrets its process gets (the tenant's overlaid with the sandbox's own), by name: never values.",
    authScopes: (sandbox) => ({ tenantRole: { tenantId: sandbox.tenant.id, role: 'VIEWER' } }),
    load: effective(true),
    resolve: sandboxKey,
  }),
  runtimeEnvironment: t.field({
    type: RuntimeEnvironmentType,
    errors: mutationResult('RuntimeEnvironment', [
      ForbiddenError,
      NotFoundError,
      StaleFencingTokenError,
      LeaseConflictError,
      ValidationError,
    ]),
    description:
      "Worker token (scope worker:lease) holding the sandbox's live lease, with its current fencing token: the variables and decrypted secrets to start its process with. Anyone else gets a typed error and no value (a person or another worker: ForbiddenError or NotFoundError; a stale or expired token: StaleFencingTokenError). Every read is audited. Not available in subscriptions (ForbiddenError).",
    args: { fencingToken: t.arg.string({ required: true }) },
    authScopes: { workerScope: 'worker:lease' },
    resolve: async (sandbox, args, ctx, info) => {
      // Values are read with a query, once per start: a stream would hold and resend them with every event.
      if (info.operation.operation === 'subscription')
        throw new ForbiddenError('runtimeEnvironment is read with a query, never in a subscription');
      return { entries: await ctx.services.env.runtimeEnvironment(sandbox.id, args.fencingToken) };
    },
  }),
}));

const nameDescription = `A POSIX name ([A-Za-z_][A-Za-z0-9_]*, at most ${ENV_NAME_MAX_LENGTH} characters); names starting with ${ENV_RESERVED_PREFIX} are reserved.`;

const SetEnvVarInput = builder.inputType('SetEnvVarInput', {
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    sandboxId: t.id({ required: false, description: 'Only this sandbox; absent: every sandbox of the tenant.' }),
    name: t.string({ required: true, description: nameDescription }),
    value: t.string({ required: true, description: `At most ${ENV_VALUE_MAX_BYTES} bytes of UTF-8.` }),
  }),
});

const SetSecretInput = builder.inputType('SetSecretInput', {
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    sandboxId: t.id({ required: false, description: 'Only this sandbox; absent: every sandbox of the tenant.' }),
    name: t.string({ required: true, description: nameDescription }),
    value: t.string({
      required: true,
      description: `At most ${ENV_VALUE_MAX_BYTES} bytes of UTF-8. Encrypted at rest; never returned by the API.`,
    }),
  }),
});

const DeleteEnvInput = builder.inputType('DeleteEnvInput', {
  description: 'Names a variable or a secret: its tenant, its sandbox (absent: tenant-wide) and its name.',
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    sandboxId: t.id({ required: false }),
    name: t.string({ required: true }),
  }),
});

const ENV_ERRORS = [NotFoundError, ForbiddenError, ValidationError, AlreadyExistsError] as const;

function scopeInput<T extends { tenantId: string; sandboxId?: string | null; name: string }>(input: T) {
  return {
    ...input,
    tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'),
    sandboxId: optionalLocalIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
  };
}

builder.mutationFields((t) => ({
  setEnvVar: t.field({
    type: EnvVarType,
    errors: mutationResult('EnvVar', ENV_ERRORS, { field: 'envVar' }),
    description:
      "Tenant OPERATOR. Creates or replaces a variable of the tenant (every sandbox) or of one sandbox. A name holds a variable or a secret, not both (AlreadyExistsError). Takes effect at the sandbox's next start.",
    args: { input: t.arg({ type: SetEnvVarInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'OPERATOR' },
    }),
    resolve: (_root, { input }, ctx) => ctx.services.env.setVar(scopeInput(input)),
  }),
  deleteEnvVar: t.field({
    type: EnvVarType,
    errors: mutationResult('EnvVar', ENV_ERRORS, { field: 'envVar' }),
    description: 'Tenant OPERATOR. Removes a variable; answers what it was.',
    args: { input: t.arg({ type: DeleteEnvInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'OPERATOR' },
    }),
    resolve: (_root, { input }, ctx) => ctx.services.env.deleteVar(scopeInput(input)),
  }),
  setSecret: t.field({
    type: SecretType,
    errors: mutationResult('Secret', ENV_ERRORS, { field: 'secret' }),
    description:
      "Tenant ADMIN. Creates or replaces a secret of the tenant (every sandbox) or of one sandbox. The value is encrypted at rest (FLOTILLA_SECRETS_KEY) and write-only: only the worker holding a sandbox's lease receives it (Sandbox.runtimeEnvironment). Takes effect at the sandbox's next start.",
    args: { input: t.arg({ type: SetSecretInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'ADMIN' },
    }),
    resolve: (_root, { input }, ctx) => ctx.services.env.setSecret(scopeInput(input)),
  }),
  deleteSecret: t.field({
    type: SecretType,
    errors: mutationResult('Secret', ENV_ERRORS, { field: 'secret' }),
    description: 'Tenant ADMIN. Removes a secret; answers its name and scope.',
    args: { input: t.arg({ type: DeleteEnvInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'ADMIN' },
    }),
    resolve: (_root, { input }, ctx) => ctx.services.env.deleteSecret(scopeInput(input)),
  }),
}));
