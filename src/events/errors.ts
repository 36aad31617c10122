import { DomainError } from '../kernel/errors.js';

/**
 * Errors of the event stream. They live beside the event code (not in domain/errors.ts) because
 * only subscriptions raise them; each has a stable `code` the GraphQL layer passes on to clients.
 */

/** Why a cursor was refused: it does not parse, points past the log, or its successors were pruned. */
export type InvalidCursorReason = 'MALFORMED' | 'UNKNOWN' | 'EXPIRED';

export class InvalidCursorError extends DomainError {
  readonly code = 'INVALID_CURSOR';
  constructor(
    readonly cursor: string,
    readonly reason: InvalidCursorReason,
  ) {
    super(
      reason === 'MALFORMED'
        ? `"${cursor}" is not an event cursor`
        : reason === 'UNKNOWN'
          ? `event cursor "${cursor}" is not known to this server`
          : `event cursor "${cursor}" is older than the retention horizon; events after it were pruned`,
    );
  }
}

/**
 * The subscriber did not keep up: its queue filled. Nothing after `lastCursor` was handed to it,
 * so subscribing again with `after: lastCursor` resumes without a gap.
 */
export class SubscriberTooSlowError extends DomainError {
  readonly code = 'SUBSCRIBER_TOO_SLOW';
  constructor(
    /** The cursor of the last event delivered, or of the starting point when none was. */
    readonly lastCursor: string,
    readonly queueLimit: number,
  ) {
    super(`subscriber fell more than ${queueLimit} events behind and was closed; resume after cursor ${lastCursor}`);
  }
}

/** The server ended the stream on purpose (token revoked, member removed, shutdown). */
export class SubscriptionEndedError extends DomainError {
  readonly code = 'SUBSCRIPTION_ENDED';
  constructor(
    readonly reason: string,
    /** Resume point, as for SubscriberTooSlowError. */
    readonly lastCursor: string,
  ) {
    super(`subscription ended: ${reason}`);
  }
}
