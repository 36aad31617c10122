import type { FilterQuery } from '@mikro-orm/core';
import { hasTenantRole } from '../auth/identity.js';
import { Event, type EventType } from '../db/entities/event.js';
import { isUuid } from '../db/ids.js';
import { InvalidCursorError } from '../events/errors.js';
import { encodeEventCursor, type LogPosition, prunedThrough } from '../events/reader.js';
import type { ServiceContext } from './context.js';
import { NotFoundError } from './errors.js';
import { type Page, positionPage } from './pagination.js';

/** The columns of an event's own log position. */
export const EVENT_POSITION = { txColumn: 'tx_id', idColumn: 'id', txProperty: 'txId', idProperty: 'id' };

export interface EventPageArgs {
  /** The log position of the last event already seen (decoded from the cursor). */
  after?: LogPosition | null;
  first?: number | null;
  types?: readonly EventType[] | null;
}

/** Reads a tenant's part of the event log, in commit order (the log position). */
export class EventLogService {
  constructor(private readonly ctx: ServiceContext) {}

  async listForTenant(tenantId: string, args: EventPageArgs): Promise<Page<Event>> {
    if (!isUuid(tenantId) || !hasTenantRole(this.ctx.identity, tenantId, 'VIEWER'))
      throw new NotFoundError('Tenant', tenantId);
    const where: FilterQuery<Event> = { tenantId, ...(args.types?.length ? { type: { $in: [...args.types] } } : {}) };
    const page = await positionPage(this.ctx.em, Event, where, EVENT_POSITION, args);
    // After the read: a prune that removed events after `after` before it has moved the mark.
    const after = args.after ?? null;
    if (after !== null && (await prunedThrough(this.ctx.em)) > after)
      throw new InvalidCursorError(encodeEventCursor(after), 'EXPIRED');
    return page;
  }
}
