import { DomainError } from '../kernel/errors.js';

/**
 * Domain errors: what a caller can act on, each with a stable `code`. Services throw these;
 * the GraphQL layer maps them to the contract's typed errors in one place
 * (resolvers/builder.ts) and to coded GraphQL errors elsewhere (src/server/errors.ts).
 * The base class and the errors every layer raises live in the kernel; re-exported so domain
 * code and resolvers import all their errors from here.
 */
export { AuthenticationError, DomainError, UnavailableError } from '../kernel/errors.js';

/** Also what a caller gets for another tenant's object: existence is never revealed. */
export class NotFoundError extends DomainError {
  readonly code = 'NOT_FOUND';
  constructor(
    readonly entity: string,
    readonly entityId?: string,
  ) {
    super(entityId ? `${entity} ${entityId} not found` : `${entity} not found`);
  }
}

export class ForbiddenError extends DomainError {
  readonly code = 'FORBIDDEN';
}

export class ValidationError extends DomainError {
  readonly code = 'VALIDATION_FAILED';
  constructor(
    message: string,
    /** The input field at fault, as a dotted path (e.g. "input.slug"). */
    readonly field: string | null = null,
  ) {
    super(message);
  }
}

export class AlreadyExistsError extends DomainError {
  readonly code = 'ALREADY_EXISTS';
  constructor(
    readonly entity: string,
    readonly field: string,
    readonly value: string,
  ) {
    super(`a ${entity.toLowerCase()} with ${field} "${value}" already exists`);
  }
}

export class QuotaExceededError extends DomainError {
  readonly code = 'QUOTA_EXCEEDED';
  constructor(
    /** Which limit: "sandboxes", "cpuMillis" or "memoryMb". */
    readonly resource: string,
    readonly limit: number,
    readonly requested: number,
  ) {
    super(`quota exceeded for ${resource}: limit ${limit}, would use ${requested}`);
  }
}

export class PolicyViolationError extends DomainError {
  readonly code = 'POLICY_VIOLATION';
  constructor(
    message: string,
    /** Which rule: "allowedImages" or "maxSandboxTtlSeconds". */
    readonly rule: string,
  ) {
    super(message);
  }
}

export class LeaseConflictError extends DomainError {
  readonly code = 'LEASE_CONFLICT';
}

export class StaleFencingTokenError extends DomainError {
  readonly code = 'STALE_FENCING_TOKEN';
  constructor(
    readonly presented: string,
    readonly current: string | null,
  ) {
    super(`fencing token ${presented} is stale${current ? ` (current is ${current})` : ''}`);
  }
}

export class InvalidTransitionError extends DomainError {
  readonly code = 'INVALID_TRANSITION';
  constructor(
    readonly from: string,
    readonly to: string,
    message = `a sandbox cannot go from ${from} to ${to}`,
  ) {
    super(message);
  }
}

export class NoCapacityError extends DomainError {
  readonly code = 'NO_CAPACITY';
}

/** The question was answered (or cancelled) already: of concurrent answers, exactly one wins. */
export class QuestionClosedError extends DomainError {
  readonly code = 'QUESTION_CLOSED';
  constructor(
    readonly questionId: string,
    /** ANSWERED or CANCELLED. */
    readonly status: string,
  ) {
    super(`question ${questionId} is ${status.toLowerCase()} already`);
  }
}
