import { GraphQLError } from 'graphql';
import { AuthenticationError, DomainError, UnavailableError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';

/** HTTP status for domain errors that end a whole request rather than one field. */
function statusFor(err: DomainError): number | undefined {
  if (err instanceof AuthenticationError) return 401;
  if (err instanceof UnavailableError) return 503;
  return undefined;
}

/** A domain error as a GraphQL error with its stable code (and HTTP status where it has one). */
export function toGraphQLError(err: DomainError, base?: GraphQLError): GraphQLError {
  const status = statusFor(err);
  // A variable graphql-js could not coerce says which variable and where in its own message.
  return new GraphQLError(base?.message ?? err.message, {
    nodes: base?.nodes,
    source: base?.source,
    positions: base?.positions,
    path: base?.path,
    extensions: { code: err.code, ...(status ? { http: { status } } : {}) },
  });
}

/**
 * Code of a GraphQL error of graphql-js's own that carries none: one about the request as a whole
 * (no path: a variable of the wrong type, a missing or unknown operation) is the caller's to fix.
 */
export const BAD_REQUEST_CODE = 'BAD_USER_INPUT';

/**
 * The one place errors leave the server: domain errors keep their message and code,
 * GraphQL's own errors (syntax, validation, variables) pass through with a code, and anything
 * else is logged and masked, so no stack trace or internal detail reaches a client.
 */
export function createErrorMasker(logger: Logger) {
  return (error: unknown, message: string): Error => {
    const original = error instanceof GraphQLError ? (error.originalError ?? null) : error;
    // graphql-js wraps a failed variable in two GraphQLErrors; the cause may be a domain error.
    const cause = original instanceof GraphQLError ? (original.originalError ?? original) : original;
    if (cause instanceof DomainError) return toGraphQLError(cause, error instanceof GraphQLError ? error : undefined);
    if (error instanceof GraphQLError && (!original || original instanceof GraphQLError)) {
      const inner = original instanceof GraphQLError && original !== error ? original : error;
      return inner.extensions.code !== undefined ? inner : withRequestCode(error);
    }
    logger.error(
      { err: original instanceof Error ? { message: original.message, stack: original.stack } : String(original) },
      'unexpected error',
    );
    return new GraphQLError(message, {
      nodes: error instanceof GraphQLError ? error.nodes : undefined,
      path: error instanceof GraphQLError ? error.path : undefined,
      extensions: { code: 'INTERNAL_SERVER_ERROR' },
    });
  };
}

/** A request-level GraphQL error without a code gets BAD_REQUEST_CODE; field errors keep theirs. */
function withRequestCode(error: GraphQLError): GraphQLError {
  if (error.extensions.code !== undefined || error.path !== undefined) return error;
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    extensions: { ...error.extensions, code: BAD_REQUEST_CODE },
  });
}

/** A refusal by one of the limits, with its code and, for whole-request refusals, the HTTP status. */
export function limitError(
  code: string,
  message: string,
  status?: number,
  headers?: Record<string, string>,
): GraphQLError {
  return new GraphQLError(message, {
    extensions: { code, ...(status ? { http: { status, ...(headers ? { headers } : {}) } } : {}) },
  });
}
