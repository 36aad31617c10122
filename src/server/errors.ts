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
  return new GraphQLError(err.message, {
    nodes: base?.nodes,
    source: base?.source,
    positions: base?.positions,
    path: base?.path,
    extensions: { code: err.code, ...(status ? { http: { status } } : {}) },
  });
}

/**
 * The one place errors leave the server: domain errors keep their message and code,
 * GraphQL's own errors (syntax, validation) pass through, and anything else is logged and
 * masked, so no stack trace or internal detail reaches a client.
 */
export function createErrorMasker(logger: Logger) {
  return (error: unknown, message: string): Error => {
    const original = error instanceof GraphQLError ? (error.originalError ?? null) : error;
    if (original instanceof DomainError)
      return toGraphQLError(original, error instanceof GraphQLError ? error : undefined);
    if (error instanceof GraphQLError && (!original || original instanceof GraphQLError)) {
      return original instanceof GraphQLError && original !== error ? original : error;
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
