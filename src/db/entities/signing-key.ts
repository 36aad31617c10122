import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, TIMESTAMP } from './base.js';

/** A key pair the server signs its own tokens with. The id is the JWK `kid`. */
export class SigningKey extends BaseEntity<'retiredAt'> {
  alg!: string;
  publicJwk!: Record<string, unknown>;
  privateJwk!: Record<string, unknown>;
  /** Retired keys no longer sign; they verify until removed. */
  retiredAt: Date | null = null;
}

export const SigningKeySchema = new EntitySchema<SigningKey, BaseEntity<string>>({
  class: SigningKey,
  tableName: 'signing_keys',
  extends: BaseEntitySchema,
  properties: {
    alg: { type: 'string', length: 20 },
    publicJwk: { type: 'json' },
    privateJwk: { type: 'json' },
    retiredAt: { ...TIMESTAMP, nullable: true },
  },
});
