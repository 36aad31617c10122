import { type DeliveryState, Message, TO_AGENT_SENDERS } from '../db/entities/message.js';
import type { Sandbox, SandboxStatus } from '../db/entities/sandbox.js';
import { databaseKindOf, type Em, type Orm } from '../db/orm.js';
import { runSql } from './locks.js';
import { inTransaction, recordEvent } from './outbox.js';

/**
 * Delivery state changes made by the server itself (a new message, a new lease, the end of a
 * sandbox, the reaper) and the compare-and-swap every change goes through. Imports nothing of the
 * lease or lifecycle code, so both can call it; the worker's reports are in delivery.ts.
 */

/** Default of FLOTILLA_MESSAGE_DISPATCH_TIMEOUT_SECONDS: a dispatch not confirmed by then goes back to PENDING. */
export const DEFAULT_MESSAGE_DISPATCH_TIMEOUT_SECONDS = 60;
/** Messages the reaper puts back per pass; the rest waits for the next one. */
export const REAP_BATCH = 200;
/** What the worker still has to deliver: never taken, or taken by a holder that has not confirmed it. */
export const UNDELIVERED_STATES: readonly DeliveryState[] = ['PENDING', 'DISPATCHED'];
/** A message sent to a sandbox in one of these fails at once: no process will ever read it. */
export const FINISHED_FOR_DELIVERY: readonly SandboxStatus[] = ['STOPPED', 'FAILED', 'DELETED'];
/** The delivery state a new message starts in, from who sends it and where it goes. */
export function initialDelivery(
  senderKind: Message['senderKind'],
  sandbox: Pick<Sandbox, 'status'>,
): Pick<Message, 'deliveryState' | 'deliveryError'> {
  if (!TO_AGENT_SENDERS.includes(senderKind)) return { deliveryState: null, deliveryError: null };
  if (FINISHED_FOR_DELIVERY.includes(sandbox.status))
    return { deliveryState: 'FAILED', deliveryError: `the sandbox is ${sandbox.status}: no process reads it` };
  return { deliveryState: 'PENDING', deliveryError: null };
}

/** A time as raw SQL binds it: a Date on Postgres, epoch milliseconds on SQLite (how the ORM stores it there). */
function sqlTime(em: Em, at: Date): Date | number {
  return databaseKindOf(em) === 'postgres' ? at : at.getTime();
}

/**
 * Moves the given messages of one sandbox from one of `from` to `to` in one statement
 * (UPDATE … WHERE delivery_state IN (from) RETURNING id): a message another writer moved first is
 * simply not returned. Records one event per moved message.
 */
export async function swap(
  em: Em,
  target: { sandboxId: string; tenantId: string; messageIds?: readonly string[]; dispatchedBefore?: Date },
  from: readonly DeliveryState[],
  to: DeliveryState,
  now: Date,
  extra: { stamp?: string | null; error?: string | null; reason?: string } = {},
): Promise<string[]> {
  const sets = ['delivery_state = ?', 'updated_at = ?'];
  const params: unknown[] = [to, sqlTime(em, now)];
  if (extra.stamp) {
    sets.push(`${extra.stamp} = ?`);
    params.push(sqlTime(em, now));
  }
  // Back to PENDING forgets the dispatch; FAILED keeps its reason.
  if (to === 'PENDING') sets.push('dispatched_at = null');
  sets.push('delivery_error = ?');
  params.push(extra.error ?? null);
  const where = ['sandbox_id = ?', `delivery_state in (${from.map(() => '?').join(', ')})`];
  params.push(target.sandboxId, ...from);
  if (target.messageIds) {
    where.push(`id in (${target.messageIds.map(() => '?').join(', ')})`);
    params.push(...target.messageIds);
  }
  if (target.dispatchedBefore) {
    where.push('dispatched_at <= ?');
    params.push(sqlTime(em, target.dispatchedBefore));
  }
  const rows = await runSql<{ id: string }[]>(
    em,
    `update messages set ${sets.join(', ')} where ${where.join(' and ')} returning id`,
    params,
  );
  const ids = rows.map((r) => String(r.id));
  for (const messageId of ids) {
    recordEvent(
      em,
      {
        type: to === 'DELIVERED' ? 'MESSAGE_DELIVERED' : 'MESSAGE_DELIVERY_CHANGED',
        tenantId: target.tenantId,
        sandboxId: target.sandboxId,
        messageId,
        data: { to, ...(extra.error ? { error: extra.error } : {}), ...(extra.reason ? { reason: extra.reason } : {}) },
      },
      now,
    );
  }
  return ids;
}

/**
 * In an acquire of an existing lease (a takeover, or a holder starting over): what earlier holders
 * dispatched but never confirmed goes back to PENDING, so the new holder delivers it to its process.
 */
export async function voidDispatches(em: Em, sandbox: Sandbox, now: Date): Promise<number> {
  const ids = await swap(em, { sandboxId: sandbox.id, tenantId: sandbox.tenant.id }, ['DISPATCHED'], 'PENDING', now, {
    reason: 'new lease',
  });
  return ids.length;
}

/**
 * The reaper (run by the elected domain sweeper): messages DISPATCHED longer than the timeout go
 * back to PENDING, at most REAP_BATCH per pass, one transaction per sandbox.
 */
export async function reapStuckDispatches(orm: Orm, now: Date, timeoutSeconds: number): Promise<number> {
  const cutoff = new Date(now.getTime() - timeoutSeconds * 1000);
  const stuck = await orm.em
    .fork()
    .find(
      Message,
      { deliveryState: 'DISPATCHED', dispatchedAt: { $lte: cutoff } },
      { fields: ['id', 'sandbox', 'tenant'], limit: REAP_BATCH },
    );
  const bySandbox = new Map<string, { tenantId: string; ids: string[] }>();
  for (const m of stuck) {
    const entry = bySandbox.get(m.sandbox.id) ?? { tenantId: m.tenant.id, ids: [] };
    entry.ids.push(m.id);
    bySandbox.set(m.sandbox.id, entry);
  }
  let reaped = 0;
  for (const [sandboxId, { tenantId, ids }] of bySandbox) {
    const moved = await inTransaction(orm.em.fork(), (em) =>
      swap(em, { sandboxId, tenantId, messageIds: ids, dispatchedBefore: cutoff }, ['DISPATCHED'], 'PENDING', now, {
        reason: 'dispatch timed out',
      }),
    );
    reaped += moved.length;
  }
  return reaped;
}

/** The SQL (one scalar subquery) of when the oldest dispatch was made, for the sweeper's due times. */
export const OLDEST_DISPATCH_SQL = `(select min(m.dispatched_at) from messages m where m.delivery_state = 'DISPATCHED')`;

/** In the transition that ends a sandbox: what it never received is FAILED, since no process will read it. */
export async function failUndelivered(em: Em, sandbox: Sandbox, now: Date): Promise<number> {
  const error = `the sandbox is ${sandbox.status}: no process reads it`;
  const ids = await swap(
    em,
    { sandboxId: sandbox.id, tenantId: sandbox.tenant.id },
    UNDELIVERED_STATES,
    'FAILED',
    now,
    { error },
  );
  return ids.length;
}
