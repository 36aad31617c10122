import { type DeliveryState, Message } from '../db/entities/message.js';
import type { Sandbox } from '../db/entities/sandbox.js';
import { isUuid } from '../db/ids.js';
import { audited } from './audit.js';
import type { ServiceContext } from './context.js';
import { DEFAULT_MESSAGE_DISPATCH_TIMEOUT_SECONDS, swap } from './delivery-state.js';
import { ValidationError } from './errors.js';
import { requireFencingToken } from './leases.js';
import { dueBy } from './sweep-signals.js';
import { transactionNow } from './time.js';

/** The most message ids one delivery report may carry. */
export const MAX_DELIVERY_BATCH = 100;
/** The longest FAILED reason kept, in characters. */
export const DELIVERY_ERROR_MAX_LENGTH = 500;
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
