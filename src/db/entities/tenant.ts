import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema } from './base.js';

export interface TenantQuota {
  maxSandboxes: number;
  maxCpuMillis: number;
  maxMemoryMb: number;
}

export interface TenantPolicy {
  /** Glob patterns an image must match, e.g. "ghcr.io/acme/*". Empty = any image. */
  allowedImages: string[];
  /** null = no limit. */
  maxSandboxTtlSeconds: number | null;
}

export class Tenant extends BaseEntity {
  slug!: string;
  name!: string;
  quota!: TenantQuota;
  policy!: TenantPolicy;
}

export const TenantSchema = new EntitySchema<Tenant, BaseEntity<string>>({
  class: Tenant,
  tableName: 'tenants',
  extends: BaseEntitySchema,
  properties: {
    slug: { type: 'string', length: 40, unique: 'tenants_slug_unique' },
    name: { type: 'string', length: 200 },
    quota: { type: 'json' },
    policy: { type: 'json' },
  },
});
