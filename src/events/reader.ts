import { Event, type EventType } from '../db/entities/event.js';
import type { Em } from '../db/orm.js';
import { databaseKindOf } from '../db/orm.js';
import { InvalidCursorError } from './errors.js';

/**
 * A place in the event log: (writing transaction id, event id) packed into one number,
 * `txId << 64 | id`, so positions compare with `<`. Readers deliver events in this order and
 * only those of transactions older than every transaction still running (the horizon), so an
 * event that becomes readable later always lies after every position already handed out.
 */
export type LogPosition = bigint;

/** The position before the first event ever appended. */
export const LOG_START: LogPosition = 0n;

const ID_BITS = 64n;
const ID_MASK = (1n << ID_BITS) - 1n;
const MAX_PART = 2n ** 63n - 1n;

export function logPosition(txId: string | number | bigint, id: string | number | bigint): LogPosition {
  return (BigInt(txId) << ID_BITS) | BigInt(id);
}

export function txIdOf(position: LogPosition): bigint {
  return position >> ID_BITS;
}

export function eventIdOf(position: LogPosition): bigint {
  return position & ID_MASK;
}

/** One committed event as subscribers see it. Shared between subscribers, hence read-only. */
export interface LogEvent {
  /** The event's id (a decimal 64-bit integer); unique, but not the order: see `position`. */
  readonly id: string;
  /** Where it lies in the log's delivery order. */
  readonly position: LogPosition;
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

const CURSOR_PREFIX = 'evt:';
const NUMBER = '(0|[1-9][0-9]{0,18})';
const CURSOR_TEXT = new RegExp(`^${CURSOR_PREFIX}(?:${NUMBER}:)?${NUMBER}$`);

/**
 * `evt:<id>` for transaction id 0 (SQLite, and every event written before positions had a
 * transaction id, so cursors of that time still resume), `evt:<txId>:<id>` otherwise; base64url.
 */
export function encodeEventCursor(position: LogPosition): string {
  const txId = txIdOf(position);
  const id = eventIdOf(position);
  const text = txId === 0n ? `${CURSOR_PREFIX}${id}` : `${CURSOR_PREFIX}${txId}:${id}`;
  return Buffer.from(text, 'utf8').toString('base64url');
}

/** The position inside a cursor; InvalidCursorError(MALFORMED) when it is not one of ours. */
export function decodeEventCursor(cursor: string): LogPosition {
  const text = /^[A-Za-z0-9_-]{1,64}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  const match = CURSOR_TEXT.exec(text);
  const txId = BigInt(match?.[1] ?? '0');
  const id = BigInt(match?.[2] ?? '0');
  if (!match || txId > MAX_PART || id > MAX_PART) throw new InvalidCursorError(cursor, 'MALFORMED');
  return logPosition(txId, id);
}

/** The cursor of a stored event (or anything carrying its position). */
export function cursorOfEvent(event: { txId: string; id: string }): string {
  return encodeEventCursor(logPosition(event.txId, event.id));
}

export function matchesFilter(event: LogEvent, filter: EventFilter): boolean {
  if (filter.tenantId !== undefined && event.tenantId !== filter.tenantId) return false;
  if (filter.sandboxId !== undefined && event.sandboxId !== filter.sandboxId) return false;
  if (filter.workerId !== undefined && event.workerId !== filter.workerId) return false;
  if (filter.types !== undefined && !filter.types.includes(event.type)) return false;
  return true;
}

function toLogEvent(row: Event): LogEvent {
  const position = logPosition(row.txId, row.id);
  return Object.freeze({
    id: String(row.id),
    position,
    cursor: encodeEventCursor(position),
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
 * SQL for the horizon: the oldest transaction id that may still commit events of this database,
 * as of the statement's own snapshot. It is the smallest id the snapshot lists as running, except
 * those seen running in another database (pg_stat_activity; they never write here), or the next
 * id when none is left. Every transaction below it has ended, so the set of committed events
 * below it is final. A running transaction whose database cannot be told (it ended meanwhile, or
 * its row is not visible to us) counts: that can only hold delivery back, never skip an event.
 * Postgres only; SQLite's single writer needs no horizon.
 */
export const POSTGRES_HORIZON_SQL = `(select coalesce(
  (select min(x::text::bigint) from pg_snapshot_xip(pg_current_snapshot()) as x
   where x::text::bigint % 4294967296 not in (
     select a.backend_xid::text::bigint from pg_stat_activity a
     where a.backend_xid is not null and a.datname <> current_database())),
  pg_snapshot_xmax(pg_current_snapshot())::text::bigint))`;

/** A bigint as a statement parameter: a string for Postgres, a number for SQLite (ids stay below 2^53 there). */
export function sqlInteger(em: Em, value: bigint): string | number {
  return databaseKindOf(em) === 'postgres' ? value.toString() : Number(value);
}

/** `(tx, id) > (?, ?)` for a column pair, with its parameters. */
export function afterPositionSql(em: Em, columns: string, after: LogPosition): { sql: string; params: unknown[] } {
  return {
    sql: `(${columns}) > (?, ?)`,
    params: [sqlInteger(em, txIdOf(after)), sqlInteger(em, eventIdOf(after))],
  };
}

export interface LogRead {
  /** Events after the position, in order, all below the horizon. */
  events: LogEvent[];
  /**
   * Committed events after these exist that an older transaction still running holds back;
   * read again once it ends (its own commit may not notify anyone).
   */
  heldBack: boolean;
}

/**
 * Up to `limit` events after `after` that are committed and below the horizon, in log order, in
 * one statement. Its rows past the horizon (committed, but an older transaction may still commit
 * before them) are not returned but reported as `heldBack`.
 */
export async function readLog(em: Em, after: LogPosition, limit: number, filter: EventFilter = {}): Promise<LogRead> {
  const postgres = databaseKindOf(em) === 'postgres';
  const start = afterPositionSql(em, '"tx_id", "id"', after);
  const where = [start.sql];
  const params: unknown[] = [...start.params];
  for (const [column, value] of [
    ['tenant_id', filter.tenantId],
    ['sandbox_id', filter.sandboxId],
    ['worker_id', filter.workerId],
  ] as const) {
    if (value === undefined) continue;
    where.push(`"${column}" = ?`);
    params.push(value);
  }
  if (filter.types !== undefined) {
    if (filter.types.length === 0) return { events: [], heldBack: false };
    where.push(`"type" in (${filter.types.map(() => '?').join(', ')})`);
    params.push(...filter.types);
  }
  params.push(limit);
  const horizon = postgres ? `, ${POSTGRES_HORIZON_SQL} as "horizon"` : '';
  const rows = (await em
    .getConnection()
    .execute(
      `select "events".*${horizon} from "events" where ${where.join(' and ')} order by "tx_id", "id" limit ?`,
      params,
    )) as (Record<string, unknown> & { horizon?: string })[];
  const events: LogEvent[] = [];
  for (const { horizon: below, ...row } of rows) {
    // Rows are in (tx_id, id) order, so everything past the first one at or above the horizon is too.
    if (below !== undefined && BigInt(row.tx_id as string) >= BigInt(below)) return { events, heldBack: true };
    events.push(toLogEvent(em.map(Event, row)));
  }
  return { events, heldBack: false };
}

/** Up to `limit` deliverable events after `after`, in log order (see readLog). */
export async function readEventsAfter(
  em: Em,
  after: LogPosition,
  limit: number,
  filter: EventFilter = {},
): Promise<LogEvent[]> {
  return (await readLog(em, after, limit, filter)).events;
}

/** Where the sweeper has pruned through: a reader after this position has lost nothing. */
export async function prunedThrough(em: Em): Promise<LogPosition> {
  const rows = (await em.getConnection().execute('select "pruned_tx_id", "pruned_id" from "event_log_state"')) as {
    pruned_tx_id: string | number;
    pruned_id: string | number;
  }[];
  return rows[0] ? logPosition(rows[0].pruned_tx_id, rows[0].pruned_id) : LOG_START;
}

/**
 * The position a stream that starts now continues from: the newest deliverable event, or the
 * pruned-through mark when that is newer (the log was emptied by the sweeper). Every event not
 * yet deliverable lies after it.
 */
export async function latestPosition(em: Em): Promise<LogPosition> {
  const postgres = databaseKindOf(em) === 'postgres';
  const rows = (await em
    .getConnection()
    .execute(
      `select "tx_id", "id" from "events"${postgres ? ` where "tx_id" < ${POSTGRES_HORIZON_SQL}` : ''} order by "tx_id" desc, "id" desc limit 1`,
    )) as { tx_id: string | number; id: string | number }[];
  const newest = rows[0] ? logPosition(rows[0].tx_id, rows[0].id) : LOG_START;
  const pruned = await prunedThrough(em);
  return newest > pruned ? newest : pruned;
}

/**
 * What the log has handed out so far: the highest event id (committed or not) and, on Postgres,
 * the next transaction id; a cursor beyond them was never ours.
 */
async function highWater(em: Em): Promise<{ id: bigint; nextTxId: bigint }> {
  const conn = em.getConnection();
  if (databaseKindOf(em) === 'postgres') {
    const rows = (await conn.execute(
      `select (select case when is_called then last_value else 0 end from events_id_seq) as id, pg_snapshot_xmax(pg_current_snapshot())::text::bigint as next_tx_id`,
    )) as { id: string | number; next_tx_id: string | number }[];
    return { id: BigInt(rows[0]?.id ?? 0), nextTxId: BigInt(rows[0]?.next_tx_id ?? 0) };
  }
  const rows = (await conn.execute(`select seq as id from sqlite_sequence where name = 'events'`)) as { id: number }[];
  return { id: BigInt(rows[0]?.id ?? 0), nextTxId: 1n };
}

/**
 * Checks that reading after `cursor` is gap-free and returns its position. UNKNOWN: the log never
 * reached it. EXPIRED: exactly when the sweeper has pruned past it (its pruned-through mark,
 * written with each delete), never because ids were burned by rolled-back transactions.
 */
export async function resolveCursor(em: Em, cursor: string): Promise<LogPosition> {
  const position = decodeEventCursor(cursor);
  const high = await highWater(em);
  if (eventIdOf(position) > high.id || txIdOf(position) >= high.nextTxId)
    throw new InvalidCursorError(cursor, 'UNKNOWN');
  await ensureNotPruned(em, position, cursor);
  return position;
}

/** InvalidCursorError(EXPIRED) when the sweeper has pruned events after `position`. */
export async function ensureNotPruned(em: Em, position: LogPosition, cursor: string): Promise<void> {
  if ((await prunedThrough(em)) > position) throw new InvalidCursorError(cursor, 'EXPIRED');
}
