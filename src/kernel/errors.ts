/**
 * The base of every error a caller can act on, and the stable codes they carry. It lives in the
 * kernel so every layer (db, events, domain, auth, server) can throw and classify errors by
 * `code` without importing the domain. The domain's own errors are in src/domain/errors.ts,
 * the event stream's in src/events/errors.ts.
 */
export type ErrorCode =
  | 'NOT_FOUND'
  | 'FORBIDDEN'
  | 'VALIDATION_FAILED'
  | 'ALREADY_EXISTS'
  | 'QUOTA_EXCEEDED'
  | 'POLICY_VIOLATION'
  | 'LEASE_CONFLICT'
  | 'STALE_FENCING_TOKEN'
  | 'INVALID_TRANSITION'
  | 'NO_CAPACITY'
  | 'QUESTION_CLOSED'
  | 'UNAUTHENTICATED'
  | 'UNAVAILABLE'
  | 'INVALID_CURSOR'
  | 'SUBSCRIBER_TOO_SLOW'
  | 'SUBSCRIPTION_ENDED'
  | 'LIMIT_EXCEEDED';

export abstract class DomainError extends Error {
  abstract readonly code: ErrorCode;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Why a token was refused: the server closes a socket with a reason matching this. */
export type AuthenticationFailure = 'EXPIRED' | 'REVOKED' | 'REFUSED';

/** Not a typed result: the request as a whole is refused (HTTP 401). */
export class AuthenticationError extends DomainError {
  readonly code = 'UNAUTHENTICATED';
  constructor(
    message: string,
    readonly failure: AuthenticationFailure = 'REFUSED',
  ) {
    super(message);
  }
}

/** The store cannot be reached or is not migrated; the request is refused, never half-done. */
export class UnavailableError extends DomainError {
  readonly code = 'UNAVAILABLE';
}

/** A per-caller cap on live resources (sockets, subscriptions, streams) is reached; one must end first. */
export class LimitExceededError extends DomainError {
  readonly code = 'LIMIT_EXCEEDED';
  constructor(
    /** Which cap, as its setting is named, e.g. "maxSocketsPerToken". */
    readonly limit: string,
    readonly max: number,
    message: string,
  ) {
    super(message);
  }
}
