import type { EventArgs, EventSubscriber } from '@mikro-orm/core';

interface Stamped {
  createdAt: Date;
  updatedAt: Date;
}

function isStamped(entity: object): entity is Stamped {
  return 'createdAt' in entity && 'updatedAt' in entity;
}

/**
 * Keeps every entity's `updatedAt`, so no write sets it by hand: on insert it equals `createdAt`,
 * on each update it is the server's clock (an injected one in tests). Bulk statements
 * (`nativeUpdate`, raw SQL) bypass the unit of work and stamp their own rows.
 */
export class TimestampSubscriber implements EventSubscriber {
  constructor(private readonly now: () => Date) {}

  beforeCreate({ entity }: EventArgs<object>): void {
    if (isStamped(entity)) entity.updatedAt = entity.createdAt;
  }

  beforeUpdate({ entity }: EventArgs<object>): void {
    if (isStamped(entity)) entity.updatedAt = this.now();
  }
}
