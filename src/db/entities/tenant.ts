import { BigIntType, EntitySchema } from '@mikro-orm/core';
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

export class Tenant extends BaseEntity<'messageRetentionDays' | 'messagesPrunedTxId' | 'messagesPrunedId'> {
  slug!: string;
  name!: string;
  quota!: TenantQuota;
  policy!: TenantPolicy;
  /**
   * Messages older than this many days are pruned by the domain sweeper; null: the platform's
   * FLOTILLA_MESSAGE_RETENTION_SECONDS (0 by default: kept forever).
   */
  messageRetentionDays: number | null = null;
  /**
   * The log position of the newest message pruned so far (0, 0: none): a message cursor older than
   * this is refused as expired, since messages after it may be gone. Written with each prune.
   */
  messagesPrunedTxId = '0';
  messagesPrunedId = '0';
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
    messageRetentionDays: { type: 'integer', nullable: true },
    messagesPrunedTxId: { type: new BigIntType('string'), default: 0 },
    messagesPrunedId: { type: new BigIntType('string'), default: 0 },
  },
});
