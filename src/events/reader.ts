import type { FilterQuery } from '@mikro-orm/core';
import { Event, type EventType } from '../db/entities/event.js';
import type { Em } from '../db/orm.js';
import { databaseKindOf } from '../db/orm.js';
import { InvalidCursorError } from './errors.js';

/** One committed event as subscribers see it. Shared between subscribers, hence read-only. */
export interface LogEvent {
  /** Position in commit order (a decimal 64-bit integer). */
  readonly id: string;
  /** Opaque resume token: `after: cursor` continues right after this event. */
  readonly cursor: string;
  readonly type: EventType;
  readonly tenantId: string | null;
  readonly sandboxId: string | null;
  readonly workerId: string | null;
  readonly messageId: string | null;
  readonly leaseId: string | null;
  readonly data: Readonly<Record<string, unknown>>;
  readonly createdAt: Date;
}

/** Which events a reader wants; every field given must match (types: any of them). */
export interface EventFilter {
  tenantId?: string;
  sandboxId?: string;
  workerId?: string;
  types?: readonly EventType[];
}

/** The position before the first event ever appended. */
export const LOG_START = '0';

const CURSOR_PREFIX = 'evt:';
const MAX_EVENT_ID = 2n ** 63n - 1n;

export function encodeEventCursor(eventId: string): string {
  return Buffer.from(`${CURSOR_PREFIX}${eventId}`, 'utf8').toString('base64url');
}

/** The event id inside a cursor; InvalidCursorError(MALFORMED) when it is not one of ours. */
export function decodeEventCursor(cursor: string): string {
  const text = /^[A-Za-z0-9_-]{1,64}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  const id = text.startsWith(CURSOR_PREFIX) ? text.slice(CURSOR_PREFIX.length) : '';
  if (!/^(0|[1-9][0-9]{0,18})$/.test(id) || BigInt(id) > MAX_EVENT_ID)
    throw new InvalidCursorError(cursor, 'MALFORMED');
  return id;
}

export function compareIds(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function matchesFilter(event: LogEvent, filter: EventFilter): boolean {
  if (filter.tenantId !== undefined && event.tenantId !== filter.tenantId) return false;
  if (filter.sandboxId !== undefined && event.sandboxId !== filter.sandboxId) return false;
  if (filter.workerId !== undefined && event.workerId !== filter.workerId) return false;
  if (filter.types !== undefined && !filter.types.includes(event.type)) return false;
  return true;
}

function toLogEvent(row: Event): LogEvent {
  return Object.freeze({
    id: String(row.id),
    cursor: encodeEventCursor(String(row.id)),
    type: row.type,
    tenantId: row.tenantId,
    sandboxId: row.sandboxId,
    workerId: row.workerId,
    messageId: row.messageId,
    leaseId: row.leaseId,
    data: Object.freeze(row.data),
    createdAt: row.createdAt,
  });
}

/**
 * Up to `limit` committed events after event id `afterId`, in commit order. Because appends are
 * serialised until commit (events/log.ts), an id seen here is never followed by a smaller one
 * committing later, so "after the last id read" never skips an event.
 */
export async function readEventsAfter(
  em: Em,
  afterId: string,
  limit: number,
  filter: EventFilter = {},
): Promise<LogEvent[]> {
  const where: FilterQuery<Event> = { id: { $gt: afterId } };
  if (filter.tenantId !== undefined) where.tenantId = filter.tenantId;
  if (filter.sandboxId !== undefined) where.sandboxId = filter.sandboxId;
  if (filter.workerId !== undefined) where.workerId = filter.workerId;
  if (filter.types !== undefined) where.type = { $in: [...filter.types] };
  const rows = await em.find(Event, where, { orderBy: { id: 'asc' }, limit, disableIdentityMap: true });
  return rows.map(toLogEvent);
}

/** The id of the newest committed event, or LOG_START for an empty log. */
export async function latestEventId(em: Em): Promise<string> {
  const rows = (await em.fork().getConnection().execute('select max(id) as id from events')) as {
    id: string | number | null;
  }[];
  const id = rows[0]?.id;
  return id === null || id === undefined ? LOG_START : String(id);
}

/** The highest id the log has ever handed out (committed or not); a bigger cursor was never ours. */
async function highWaterId(em: Em): Promise<string> {
  const conn = em.fork().getConnection();
  if (databaseKindOf(em) === 'postgres') {
    const rows = (await conn.execute(
      `select case when is_called then last_value else 0 end as id from events_id_seq`,
    )) as { id: string | number }[];
    return String(rows[0]?.id ?? LOG_START);
  }
  const rows = (await conn.execute(`select seq as id from sqlite_sequence where name = 'events'`)) as { id: number }[];
  return String(rows[0]?.id ?? LOG_START);
}

/** The oldest event id still in the log, or null when it is empty. */
async function oldestEventId(em: Em): Promise<string | null> {
  const rows = (await em.fork().getConnection().execute('select min(id) as id from events')) as {
    id: string | number | null;
  }[];
  const id = rows[0]?.id;
  return id === null || id === undefined ? null : String(id);
}

/**
 * Checks that reading after `cursor` can be gap-free and returns its event id. UNKNOWN: the log
 * never reached it. EXPIRED: events right after it were pruned (the sweeper removes a prefix of
 * the log, so that is when the oldest remaining event is further than one past the cursor).
 */
export async function resolveCursor(em: Em, cursor: string): Promise<string> {
  const id = decodeEventCursor(cursor);
  const high = await highWaterId(em);
  if (compareIds(id, high) > 0) throw new InvalidCursorError(cursor, 'UNKNOWN');
  const oldest = await oldestEventId(em);
  // An empty log that has handed out ids was pruned: only the newest cursor still resumes gap-free.
  const expired = oldest === null ? compareIds(id, high) < 0 : BigInt(oldest) > BigInt(id) + 1n;
  if (expired) throw new InvalidCursorError(cursor, 'EXPIRED');
  return id;
}
