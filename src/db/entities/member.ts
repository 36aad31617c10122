import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema } from './base.js';
import { Tenant } from './tenant.js';

export const TENANT_ROLES = ['VIEWER', 'OPERATOR', 'ADMIN'] as const;
export type TenantRole = (typeof TENANT_ROLES)[number];

/** A subject (a token's `sub`, e.g. an OIDC user) with a role in one tenant. */
export class Member extends BaseEntity {
  tenant!: Tenant;
  subject!: string;
  role!: TenantRole;
}

export const MemberSchema = new EntitySchema<Member, BaseEntity<string>>({
  class: Member,
  tableName: 'members',
  extends: BaseEntitySchema,
  uniques: [{ name: 'members_tenant_subject_unique', properties: ['tenant', 'subject'] }],
  indexes: [{ name: 'members_subject_index', properties: ['subject'] }],
  properties: {
    tenant: { kind: 'm:1', entity: () => Tenant, deleteRule: 'cascade' },
    subject: { type: 'string', length: 300 },
    role: { type: 'string', length: 20 },
  },
});
