import { Event, type EventType } from '../db/entities/event.js';
import type { Em } from '../db/orm.js';
import { databaseKindOf } from '../db/orm.js';

/** The Postgres channel the writing transaction notifies; the payload is only a reference. */
export const EVENT_CHANNEL = 'flotilla_events';
/**
 * Advisory lock key that serialises event appends on Postgres from insert to commit, so
 * event ids are handed out in commit order and a reader tailing by id never skips one
 * (the cursor-skip bug of hasura/graphql-engine#8632). SQLite serialises writers anyway.
 */
export const EVENT_APPEND_LOCK = 0x666c6f74; // "flot"

export interface NewEvent {
  type: EventType;
  tenantId?: string | null;
  sandboxId?: string | null;
  workerId?: string | null;
  messageId?: string | null;
  leaseId?: string | null;
  /** Small details only (e.g. {"from":"STARTING","to":"RUNNING"}); readers load entities by id. */
  data?: Record<string, unknown>;
}

/**
 * Appends an event inside the caller's transaction: committed change ⇒ exactly one event,
 * rolled-back change ⇒ none. Call it last in the transaction, after the change's own writes,
 * to keep the serialised window short. The caller must run in a transaction (`em.transactional`).
 */
export async function appendEvent(em: Em, event: NewEvent, now: Date): Promise<Event> {
  const postgres = databaseKindOf(em) === 'postgres';
  if (postgres)
    await em
      .getConnection()
      .execute('select pg_advisory_xact_lock(?)', [EVENT_APPEND_LOCK], 'all', em.getTransactionContext());
  const row = em.create(Event, {
    type: event.type,
    tenantId: event.tenantId ?? null,
    sandboxId: event.sandboxId ?? null,
    workerId: event.workerId ?? null,
    messageId: event.messageId ?? null,
    leaseId: event.leaseId ?? null,
    data: event.data ?? {},
    createdAt: now,
  });
  await em.flush();
  if (postgres) {
    // NOTIFY is transactional: listeners hear it only if this transaction commits.
    await em
      .getConnection()
      .execute(`select pg_notify(?, ?)`, [EVENT_CHANNEL, row.id], 'all', em.getTransactionContext());
  }
  return row;
}
