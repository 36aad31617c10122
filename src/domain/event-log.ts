import type { FilterQuery } from '@mikro-orm/core';
import { hasTenantRole } from '../auth/identity.js';
import { Event, type EventType } from '../db/entities/event.js';
import { isUuid } from '../db/ids.js';
import type { ServiceContext } from './context.js';
import { NotFoundError, ValidationError } from './errors.js';
import { type Page, pageSize } from './pagination.js';

export interface EventPageArgs {
  /** The id of the last event already seen (decoded from the cursor). */
  after?: string | null;
  first?: number | null;
  types?: readonly EventType[] | null;
}

/** Reads a tenant's part of the event log, in commit order (the event id). */
export class EventLogService {
  constructor(private readonly ctx: ServiceContext) {}

  async listForTenant(tenantId: string, args: EventPageArgs): Promise<Page<Event>> {
    if (!isUuid(tenantId) || !hasTenantRole(this.ctx.identity, tenantId, 'VIEWER'))
      throw new NotFoundError('Tenant', tenantId);
    const size = pageSize(args.first);
    if (args.after !== null && args.after !== undefined && !/^\d{1,20}$/.test(args.after))
      throw new ValidationError('after is not a valid cursor', 'after');
    const where: FilterQuery<Event> = { tenantId, ...(args.types?.length ? { type: { $in: [...args.types] } } : {}) };
    const filter: FilterQuery<Event> = args.after ? { $and: [where, { id: { $gt: args.after } }] } : where;
    const rows = size === 0 ? [] : await this.ctx.em.find(Event, filter, { orderBy: { id: 'asc' }, limit: size + 1 });
    return {
      items: rows.slice(0, size),
      hasNextPage: rows.length > size,
      totalCount: () => this.ctx.em.count(Event, where),
    };
  }
}
