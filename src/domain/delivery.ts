import { type DeliveryState, Message, TO_AGENT_SENDERS } from '../db/entities/message.js';
import type { Sandbox, SandboxStatus } from '../db/entities/sandbox.js';
import { isUuid } from '../db/ids.js';
import { databaseKindOf, type Em, type Orm } from '../db/orm.js';
import { audited } from './audit.js';
import type { ServiceContext } from './context.js';
import { ValidationError } from './errors.js';
import { requireFencingToken } from './leases.js';
import { runSql } from './locks.js';
import { inTransaction, recordEvent } from './outbox.js';
import { dueBy } from './sweep-signals.js';
import { transactionNow } from './time.js';

/** Default of FLOTILLA_MESSAGE_DISPATCH_TIMEOUT_SECONDS: a dispatch not confirmed by then goes back to PENDING. */
export const DEFAULT_MESSAGE_DISPATCH_TIMEOUT_SECONDS = 60;
/** The most message ids one delivery report may carry. */
export const MAX_DELIVERY_BATCH = 100;
/** The longest FAILED reason kept, in characters. */
export const DELIVERY_ERROR_MAX_LENGTH = 500;
/** Messages the reaper puts back per pass; the rest waits for the next one. */
export const REAP_BATCH = 200;
/** What the worker still has to deliver: never taken, or taken by a holder that has not confirmed it. */
export const UNDELIVERED_STATES: readonly DeliveryState[] = ['PENDING', 'DISPATCHED'];
/** A message sent to a sandbox in one of these fails at once: no process will ever read it. */
const FINISHED: readonly SandboxStatus[] = ['STOPPED', 'FAILED', 'DELETED'];

/** The transitions a worker reports, each a compare-and-swap from the states it may come from. */
const REPORTED: Record<Exclude<DeliveryState, 'PENDING'>, { from: readonly DeliveryState[]; stamp: string | null }> = {
  DISPATCHED: { from: ['PENDING'], stamp: 'dispatched_at' },
  DELIVERED: { from: ['DISPATCHED'], stamp: 'delivered_at' },
  FAILED: { from: ['PENDING', 'DISPATCHED'], stamp: null },
};

export interface ReportMessageDeliveryInput {
  sandboxId: string;
  fencingToken: string;
  messageIds: readonly string[];
  state: DeliveryState;
  /** Why, for FAILED (required there, refused elsewhere). */
  reason?: string | null;
}

export interface DeliveryReport {
  sandbox: Sandbox;
  /** The messages this report moved, in commit order. */
  changed: Message[];
  /** Ids it did not move: not in the expected state any more (a lost compare-and-swap) or not this sandbox's. */
  unchanged: string[];
}

/** The delivery state a new message starts in, from who sends it and where it goes. */
export function initialDelivery(
  senderKind: Message['senderKind'],
  sandbox: Pick<Sandbox, 'status'>,
): Pick<Message, 'deliveryState' | 'deliveryError'> {
  if (!TO_AGENT_SENDERS.includes(senderKind)) return { deliveryState: null, deliveryError: null };
  if (FINISHED.includes(sandbox.status))
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
async function swap(
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

/** Delivery of people's messages to the agent's process, reported by the worker holding the lease. */
export class DeliveryService {
  constructor(private readonly ctx: ServiceContext) {}

  /**
   * One compare-and-swap over a batch: DISPATCHED from PENDING, DELIVERED from DISPATCHED, FAILED
   * from either. Fenced by the lease like every worker write; ids whose swap was lost are reported
   * back, not refused.
   */
  async report(input: ReportMessageDeliveryInput): Promise<DeliveryReport> {
    return audited(
      this.ctx,
      'reportMessageDelivery',
      { targetId: input.sandboxId },
      async (em) => {
        if (input.state === 'PENDING')
          throw new ValidationError('a worker reports DISPATCHED, DELIVERED or FAILED', 'input.state');
        if (input.messageIds.length === 0 || input.messageIds.length > MAX_DELIVERY_BATCH)
          throw new ValidationError(`messageIds must hold 1 to ${MAX_DELIVERY_BATCH} ids`, 'input.messageIds');
        const reason = input.reason?.trim() || null;
        if (input.state === 'FAILED' && !reason) throw new ValidationError('FAILED needs a reason', 'input.reason');
        if (input.state !== 'FAILED' && reason) throw new ValidationError('only FAILED takes a reason', 'input.reason');
        if (reason && reason.length > DELIVERY_ERROR_MAX_LENGTH)
          throw new ValidationError(`reason must be at most ${DELIVERY_ERROR_MAX_LENGTH} characters`, 'input.reason');
        const sandbox = await requireFencingToken(
          em,
          this.ctx.identity,
          'message:post',
          input.sandboxId,
          input.fencingToken,
          this.ctx.clock,
        );
        const wanted = [...new Set(input.messageIds.filter(isUuid))];
        const now = await transactionNow(em, this.ctx.clock);
        const rule = REPORTED[input.state];
        const moved =
          wanted.length === 0
            ? []
            : await swap(
                em,
                { sandboxId: sandbox.id, tenantId: sandbox.tenant.id, messageIds: wanted },
                rule.from,
                input.state,
                now,
                { stamp: rule.stamp, error: reason },
              );
        const timeout = this.ctx.settings.messageDispatchTimeoutSeconds ?? DEFAULT_MESSAGE_DISPATCH_TIMEOUT_SECONDS;
        // The reaper wakes when these dispatches could time out, not before.
        if (input.state === 'DISPATCHED' && moved.length > 0) dueBy(em, new Date(now.getTime() + timeout * 1000 + 1));
        const changed =
          moved.length === 0
            ? []
            : await em.find(
                Message,
                { id: { $in: moved } },
                { refresh: true, orderBy: { eventTxId: 'asc', eventId: 'asc' } },
              );
        const movedSet = new Set(moved);
        return { sandbox, changed, unchanged: input.messageIds.filter((id) => !movedSet.has(id)) };
      },
      (r) => ({ tenantId: r.sandbox.tenant.id }),
    );
  }
}
