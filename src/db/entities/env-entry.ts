import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema } from './base.js';
import { Sandbox } from './sandbox.js';
import { Tenant } from './tenant.js';

/**
 * An environment variable or a secret of a tenant (every sandbox of it) or of one sandbox. A
 * variable keeps its value in `value`; a secret only as AES-256-GCM `ciphertext` with the id of
 * the key that encrypted it (src/auth/secret-keys.ts). One name per scope: `scopeId` is the
 * sandbox's id, or the tenant's for a tenant-wide entry, so the unique index needs no null.
 */
export class EnvEntry extends BaseEntity<'sandbox' | 'value' | 'ciphertext' | 'keyId'> {
  tenant!: Tenant;
  sandbox: Sandbox | null = null;
  scopeId!: string;
  name!: string;
  secret!: boolean;
  value: string | null = null;
  ciphertext: string | null = null;
  keyId: string | null = null;
}

export const EnvEntrySchema = new EntitySchema<EnvEntry, BaseEntity<string>>({
  class: EnvEntry,
  tableName: 'env_entries',
  extends: BaseEntitySchema,
  uniques: [{ name: 'env_entries_scope_name_unique', properties: ['scopeId', 'name'] }],
  indexes: [
    { name: 'env_entries_tenant_index', properties: ['tenant'] },
    { name: 'env_entries_key_index', properties: ['keyId'] },
  ],
  properties: {
    tenant: { kind: 'm:1', entity: () => Tenant, deleteRule: 'cascade' },
    sandbox: { kind: 'm:1', entity: () => Sandbox, nullable: true, deleteRule: 'cascade' },
    scopeId: { type: 'uuid' },
    name: { type: 'string', length: 128 },
    secret: { type: 'boolean' },
    value: { type: 'text', nullable: true },
    ciphertext: { type: 'text', nullable: true },
    keyId: { type: 'string', length: 64, nullable: true },
  },
});
