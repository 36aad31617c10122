import { BigIntType, EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, TIMESTAMP } from './base.js';
import { Sandbox } from './sandbox.js';
import { Worker } from './worker.js';

/** One lease per sandbox; the fencing token only ever grows. */
export class Lease extends BaseEntity<'transitions'> {
  sandbox!: Sandbox;
  holder!: Worker;
  /**
   * Decimal string of a 64-bit counter. SQLite's driver reads integers as doubles, so there the
   * token is exact up to 2^53 - 1 acquisitions; Postgres keeps all 64 bits.
   */
  fencingToken!: string;
  acquiredAt!: Date;
  renewedAt!: Date;
  expiresAt!: Date;
  transitions = 0;
}

export const LeaseSchema = new EntitySchema<Lease, BaseEntity<string>>({
  class: Lease,
  tableName: 'leases',
  extends: BaseEntitySchema,
  properties: {
    sandbox: {
      kind: '1:1',
      entity: () => Sandbox,
      owner: true,
      unique: 'leases_sandbox_unique',
      deleteRule: 'cascade',
    },
    holder: { kind: 'm:1', entity: () => Worker, deleteRule: 'cascade' },
    fencingToken: { type: new BigIntType('string') },
    acquiredAt: { ...TIMESTAMP },
    renewedAt: { ...TIMESTAMP },
    expiresAt: { ...TIMESTAMP },
    transitions: { type: 'integer', default: 0 },
  },
});
