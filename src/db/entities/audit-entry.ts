import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema } from './base.js';

/** Who did what to which target, and how it ended. Kept even when the target is gone. */
export class AuditEntry extends BaseEntity<'tenantId' | 'targetId'> {
  tenantId: string | null = null;
  actor!: string;
  action!: string;
  targetId: string | null = null;
  /** "ok" or the error code. */
  outcome!: string;
}

export const AuditEntrySchema = new EntitySchema<AuditEntry, BaseEntity<string>>({
  class: AuditEntry,
  tableName: 'audit_entries',
  extends: BaseEntitySchema,
  indexes: [
    { name: 'audit_entries_tenant_index', properties: ['tenantId', 'id'] },
    // The retention sweep deletes the oldest first.
    { name: 'audit_entries_created_at_index', properties: ['createdAt'] },
  ],
  properties: {
    tenantId: { type: 'uuid', nullable: true },
    actor: { type: 'string', length: 300 },
    action: { type: 'string', length: 100 },
    targetId: { type: 'string', length: 300, nullable: true },
    outcome: { type: 'string', length: 100 },
  },
});
