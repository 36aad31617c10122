import { EntitySchema, OptionalProps } from '@mikro-orm/core';
import { newId } from '../ids.js';

/** Every entity carries an id and millisecond-precision creation and update times. */
/** Properties every entity fills in itself, so `em.create` does not require them. */
export type BaseOptional = 'id' | 'createdAt' | 'updatedAt';

export abstract class BaseEntity<Optional extends string = never> {
  [OptionalProps]?: BaseOptional | Optional;
  id: string = newId();
  createdAt: Date = new Date();
  updatedAt: Date = new Date();
}

/** Timestamps are stored with millisecond precision on both drivers. */
export const TIMESTAMP = { type: 'datetime', length: 3 } as const;

export const BaseEntitySchema = new EntitySchema<BaseEntity<string>>({
  name: 'BaseEntity',
  abstract: true,
  properties: {
    id: { type: 'uuid', primary: true },
    createdAt: { ...TIMESTAMP, onCreate: () => new Date() },
    // Maintained by TimestampSubscriber (src/db/timestamps.ts).
    updatedAt: { ...TIMESTAMP },
  },
});
