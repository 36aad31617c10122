import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, TIMESTAMP } from './base.js';
import type { TenantRole } from './member.js';
import { Tenant } from './tenant.js';

export const TOKEN_KINDS = ['ADMIN', 'API', 'WORKER'] as const;
export type TokenKind = (typeof TOKEN_KINDS)[number];

/**
 * A token this server minted. The id is the JWT's `jti`; the secret itself is never
 * stored, only what is needed to check and revoke it.
 */
export class ApiToken extends BaseEntity<
  'tenant' | 'role' | 'workerId' | 'scopes' | 'expiresAt' | 'lastUsedAt' | 'revokedAt'
> {
  kind!: TokenKind;
  subject!: string;
  tenant: Tenant | null = null;
  role: TenantRole | null = null;
  workerId: string | null = null;
  scopes: string[] = [];
  expiresAt: Date | null = null;
  lastUsedAt: Date | null = null;
  revokedAt: Date | null = null;
}

export const ApiTokenSchema = new EntitySchema<ApiToken, BaseEntity<string>>({
  class: ApiToken,
  tableName: 'api_tokens',
  extends: BaseEntitySchema,
  indexes: [{ name: 'api_tokens_kind_index', properties: ['kind'] }],
  properties: {
    kind: { type: 'string', length: 20 },
    subject: { type: 'string', length: 300 },
    tenant: { kind: 'm:1', entity: () => Tenant, nullable: true, deleteRule: 'cascade' },
    role: { type: 'string', length: 20, nullable: true },
    workerId: { type: 'uuid', nullable: true },
    scopes: { type: 'json' },
    expiresAt: { ...TIMESTAMP, nullable: true },
    lastUsedAt: { ...TIMESTAMP, nullable: true },
    revokedAt: { ...TIMESTAMP, nullable: true },
  },
});
