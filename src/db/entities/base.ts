import { EntitySchema } from '@mikro-orm/core';
import { newId } from '../ids.js';

/** Every entity carries an id and millisecond-precision creation and update times. */
export abstract class BaseEntity {
  id: string = newId();
  createdAt: Date = new Date();
  updatedAt: Date = new Date();
}

/** Timestamps are stored with millisecond precision on both drivers. */
export const TIMESTAMP = { type: 'datetime', length: 3 } as const;

export const BaseEntitySchema = new EntitySchema<BaseEntity>({
  name: 'BaseEntity',
  abstract: true,
  properties: {
    id: { type: 'uuid', primary: true },
    createdAt: { ...TIMESTAMP, onCreate: () => new Date() },
    updatedAt: { ...TIMESTAMP, onCreate: () => new Date(), onUpdate: () => new Date() },
  },
});
