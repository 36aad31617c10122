import SchemaBuilder from '@pothos/core';
import DataloaderPlugin from '@pothos/plugin-dataloader';
import DirectivePlugin from '@pothos/plugin-directives';
import ErrorsPlugin from '@pothos/plugin-errors';
import FederationPlugin from '@pothos/plugin-federation';
import RelayPlugin from '@pothos/plugin-relay';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { GraphQLError, Kind, type ValueNode } from 'graphql';
import { hasTenantRole, type Identity } from '../src/auth/identity.js';
import type { TenantRole } from '../src/db/entities/member.js';
import {
  AlreadyExistsError,
  type DomainError,
  ForbiddenError,
  InvalidTransitionError,
  LeaseConflictError,
  NoCapacityError,
  NotFoundError,
  PolicyViolationError,
  QuestionClosedError,
  QuotaExceededError,
  StaleFencingTokenError,
  ValidationError,
} from '../src/domain/errors.js';
import { JSON_INPUT_MAX_DEPTH, JSON_INPUT_MAX_LENGTH } from '../src/domain/input-limits.js';
import { jsonInput, parseInput } from '../src/domain/inputs.js';
import type { Services } from '../src/domain/services.js';
import { decodeGlobalId, encodeGlobalId } from './ids.js';

/** What every resolver receives: who is calling and the services bound to this request. */
export interface Context {
  identity: Identity;
  services: Services;
  requestId: string;
  /**
   * Aborted when the caller goes away (HTTP: the connection closed; WebSocket: the socket closed).
   * A function, read only by what waits: an HTTP request's signal costs listeners on its socket.
   */
  abortSignal: () => AbortSignal | null;
  /**
   * Starts afresh for the next event of a subscription: a new EntityManager fork, new services
   * and empty DataLoader caches, so each event reads current rows and memory does not grow. With
   * `identity` (the stream's access was narrowed since), the context acts as that one from now on.
   */
  renew(identity?: Identity): void;
}

export const builder = new SchemaBuilder<{
  Context: Context;
  DefaultFieldNullability: false;
  Scalars: {
    ID: { Input: string; Output: string };
    DateTime: { Input: Date; Output: Date };
    JSON: { Input: unknown; Output: unknown };
  };
  /**
   * Every Query, Mutation and Subscription field declares one of these (test/unit/auth-scopes.test.ts).
   * Where the field names no tenant, the gate is coarse and the service decides (and audits) the
   * tenant-specific refusal.
   */
  AuthScopes: {
    platformAdmin: boolean;
    /** At least this role in the tenant (platform admins pass). */
    tenantRole: { tenantId: string; role: TenantRole };
    /** A person (not a worker token) with a role in some tenant, or a platform admin. */
    tenantMember: boolean;
    /** A worker token carrying this scope. */
    workerScope: string;
    /** Any worker token (it acts for its own worker only). */
    worker: boolean;
    /** Any verified caller: what it may see is decided object by object (others read as missing). */
    authenticated: boolean;
  };
}>({
  // Errors wrap scope-auth so that a refused mutation becomes a typed ForbiddenError result.
  plugins: [RelayPlugin, ErrorsPlugin, ScopeAuthPlugin, DataloaderPlugin, DirectivePlugin, FederationPlugin],
  defaultFieldNullability: false,
  relay: {
    clientMutationId: 'omit',
    cursorType: 'String',
    decodeGlobalID: (globalID) => decodeGlobalId(globalID),
    encodeGlobalID: (typename, id) => encodeGlobalId(typename, String(id)),
    // Each node's loader returns only what the caller may see; the rest reads as null.
    nodeQueryOptions: { authScopes: { authenticated: true } },
    nodesQueryOptions: { authScopes: { authenticated: true } },
  },
  scopeAuth: {
    authorizeOnSubscribe: true,
    unauthorizedError: () => new ForbiddenError('not allowed'),
    authScopes: (ctx) => ({
      platformAdmin: ctx.identity.platformAdmin,
      tenantRole: ({ tenantId, role }) => hasTenantRole(ctx.identity, tenantId, role),
      tenantMember: ctx.identity.platformAdmin || (ctx.identity.workerId === null && ctx.identity.tenantRoles.size > 0),
      workerScope: (scope) => ctx.identity.workerId !== null && ctx.identity.scopes.has(scope),
      worker: ctx.identity.workerId !== null,
      // Operations only run for a verified token: the server refuses anything else before execution.
      authenticated: true,
    }),
  },
  errors: {
    defaultTypes: [],
  },
});

builder.queryType({});
builder.mutationType({});

// ---------------------------------------------------------------- scalars

builder.scalarType('DateTime', {
  description: 'An ISO-8601 timestamp in UTC with millisecond precision.',
  serialize: (value) => {
    const date = value instanceof Date ? value : new Date(value as string);
    if (Number.isNaN(date.getTime())) throw new GraphQLError('DateTime cannot represent an invalid date');
    return date.toISOString();
  },
  parseValue: (value) => parseDate(value),
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.STRING) throw new GraphQLError('DateTime must be an ISO-8601 string');
    return parseDate(ast.value);
  },
});

function parseDate(value: unknown): Date {
  if (typeof value !== 'string') throw new GraphQLError('DateTime must be an ISO-8601 string');
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new GraphQLError(`"${value}" is not an ISO-8601 DateTime`);
  return date;
}

builder.scalarType('JSON', {
  description: `Any JSON value (as an input: nested at most ${JSON_INPUT_MAX_DEPTH} deep, at most ${JSON_INPUT_MAX_LENGTH} characters).`,
  serialize: (value) => value,
  parseValue: (value) => parseInput(jsonInput, value, 'JSON'),
  parseLiteral: (ast) => parseInput(jsonInput, jsonLiteral(ast), 'JSON'),
});

function jsonLiteral(ast: ValueNode): unknown {
  switch (ast.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return ast.value;
    case Kind.INT:
    case Kind.FLOAT:
      return Number(ast.value);
    case Kind.NULL:
      return null;
    case Kind.LIST:
      return ast.values.map((v) => jsonLiteral(v));
    case Kind.OBJECT:
      return Object.fromEntries(ast.fields.map((f) => [f.name.value, jsonLiteral(f.value)]));
    default:
      throw new GraphQLError('JSON literals cannot contain variables');
  }
}

// ---------------------------------------------------------------- typed errors

/** `interface Error { message: String! }` of the contract, with the stable `code`. */
export const ErrorInterface = builder.interfaceRef<DomainError>('Error').implement({
  description: 'An expected failure the caller can act on.',
  fields: (t) => ({
    message: t.exposeString('message'),
    code: t.exposeString('code', { description: 'Stable machine-readable code, e.g. QUOTA_EXCEEDED.' }),
  }),
});

builder.objectType(NotFoundError, {
  name: 'NotFoundError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ entity: t.exposeString('entity') }),
});
builder.objectType(ForbiddenError, { name: 'ForbiddenError', interfaces: [ErrorInterface] });
builder.objectType(ValidationError, {
  name: 'ValidationError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ field: t.exposeString('field', { nullable: true }) }),
});
builder.objectType(AlreadyExistsError, {
  name: 'AlreadyExistsError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ field: t.exposeString('field'), value: t.exposeString('value') }),
});
builder.objectType(QuotaExceededError, {
  name: 'QuotaExceededError',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    resource: t.exposeString('resource'),
    limit: t.exposeInt('limit'),
    requested: t.exposeInt('requested'),
  }),
});
builder.objectType(PolicyViolationError, {
  name: 'PolicyViolationError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ rule: t.exposeString('rule') }),
});
builder.objectType(LeaseConflictError, { name: 'LeaseConflictError', interfaces: [ErrorInterface] });
builder.objectType(StaleFencingTokenError, {
  name: 'StaleFencingTokenError',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    presented: t.exposeString('presented'),
    current: t.exposeString('current', { nullable: true }),
  }),
});
builder.objectType(InvalidTransitionError, {
  name: 'InvalidTransitionError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ from: t.exposeString('from'), to: t.exposeString('to') }),
});
builder.objectType(NoCapacityError, { name: 'NoCapacityError', interfaces: [ErrorInterface] });
builder.objectType(QuestionClosedError, {
  name: 'QuestionClosedError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ status: t.exposeString('status', { description: 'ANSWERED or CANCELLED.' }) }),
});

/** A class of typed error a mutation result can hold. */
export type ErrorClass = new (...args: never[]) => DomainError;

/**
 * The errors-plugin options of a mutation result, so a mutation is its field and nothing else:
 * the union `<name>Result` of `<name>Payload` and `errors`. With `data`, the plugin builds the
 * payload with one field, named `data.field`, holding what the resolver returns; without it, the
 * field's own type is the payload (for payloads of several fields). Fields that give the same
 * name share both types, so they must give the same errors.
 */
export function mutationResult(
  name: string,
  errors: readonly ErrorClass[],
  data?: { field: string; description?: string },
) {
  return {
    types: [...errors],
    directResult: !data,
    result: { name: `${name}Payload`, ...(data?.description ? { description: data.description } : {}) },
    union: { name: `${name}Result` },
    dataField: { name: data?.field ?? 'data' },
  };
}
