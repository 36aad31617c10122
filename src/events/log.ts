import { Event, type EventType } from '../db/entities/event.js';
import type { Em } from '../db/orm.js';
import { databaseKindOf } from '../db/orm.js';

/** The Postgres channel the writing transaction notifies; the payload is only a reference. */
export const EVENT_CHANNEL = 'flotilla_events';

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

/** Where an appended event lies in the log (see LogPosition in reader.ts). */
export interface AppendedEvent {
  id: string;
  /** The writing transaction's id on Postgres; 0 on SQLite. */
  txId: string;
}

/**
 * Appends an event inside the caller's transaction: committed change ⇒ exactly one event,
 * rolled-back change ⇒ none. The caller must run in a transaction (`em.transactional`).
 *
 * Nothing is locked: on Postgres the row records its transaction's id (the column default) and
 * readers order by (transaction id, id) below the oldest running transaction, so concurrent
 * writers never make a reader skip an event. One statement inserts the row and issues the
 * NOTIFY, which is transactional (heard only on commit) and carries only the transaction id, so
 * a transaction's notifications collapse into one.
 */
export async function appendEvent(em: Em, event: NewEvent, now: Date): Promise<AppendedEvent> {
  const fields = {
    type: event.type,
    tenantId: event.tenantId ?? null,
    sandboxId: event.sandboxId ?? null,
    workerId: event.workerId ?? null,
    messageId: event.messageId ?? null,
    leaseId: event.leaseId ?? null,
    data: event.data ?? {},
  };
  if (databaseKindOf(em) === 'postgres') {
    const rows = (await em.getConnection().execute(
      `with "appended" as (
         insert into "events" ("created_at", "updated_at", "type", "tenant_id", "sandbox_id", "worker_id", "message_id", "lease_id", "data")
         values (?, ?, ?, ?, ?, ?, ?, ?, ?) returning "id", "tx_id")
       select "id", "tx_id", pg_notify(?, "tx_id"::text) from "appended"`,
      [
        now,
        now,
        fields.type,
        fields.tenantId,
        fields.sandboxId,
        fields.workerId,
        fields.messageId,
        fields.leaseId,
        JSON.stringify(fields.data),
        EVENT_CHANNEL,
      ],
      'all',
      em.getTransactionContext(),
    )) as { id: string; tx_id: string }[];
    return { id: String(rows[0].id), txId: String(rows[0].tx_id) };
  }
  // SQLite: one writer at a time, so ids are handed out in commit order; the transaction id stays 0.
  const row = em.create(Event, { ...fields, txId: '0', createdAt: now, updatedAt: now });
  await em.flush();
  return { id: String(row.id), txId: '0' };
}
