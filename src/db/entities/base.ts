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

/**
 * Soft-deleted rows (`deletedAt` set) are hidden from every query on an entity that declares this
 * filter, and from relations a query's conditions join. A read that must see them says so with
 * `WITH_DELETED`.
 */
export const SOFT_DELETE_FILTER = 'notDeleted';
export const softDeleteFilter = {
  [SOFT_DELETE_FILTER]: { name: SOFT_DELETE_FILTER, cond: { deletedAt: null }, default: true },
};
export const WITH_DELETED = { filters: { [SOFT_DELETE_FILTER]: false } };

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
