import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import {
  type ASTVisitor,
  type DocumentNode,
  type FragmentDefinitionNode,
  GraphQLError,
  type GraphQLNamedType,
  type GraphQLSchema,
  getNamedType,
  isInterfaceType,
  isObjectType,
  Kind,
  NoSchemaIntrospectionCustomRule,
  parse,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
  valueFromASTUntyped,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Config } from '../config/index.js';
import { DEFAULT_PAGE_SIZE } from '../domain/pagination.js';
import type { Clock } from '../kernel/clock.js';

/**
 * Limits on hostile input: what reaches the server (size, CSRF), what it parses (tokens),
 * validates (depth, aliases, introspection), executes (complexity) and how often (rate).
 * Each rejection carries a stable code; docs/security.md lists them.
 */

export interface Limits {
  maxBodyBytes: number;
  maxQueryDepth: number;
  maxQueryComplexity: number;
  maxAliases: number;
  maxTokens: number;
  introspection: boolean;
  csrfPrevention: boolean;
  rateLimitPerMinute: number;
  persistedOperations: PersistedOperations | null;
  persistedOperationsOnly: boolean;
}

export function limitsFromConfig(config: Config): Limits {
  return {
    maxBodyBytes: config.maxBodyBytes,
    maxQueryDepth: config.maxQueryDepth,
    maxQueryComplexity: config.maxQueryComplexity,
    maxAliases: config.maxAliases,
    maxTokens: config.maxTokens,
    introspection: config.introspection,
    csrfPrevention: config.csrfPrevention,
    rateLimitPerMinute: config.rateLimitPerMinute,
    persistedOperations: config.persistedOperationsFile
      ? PersistedOperations.fromFile(config.persistedOperationsFile)
      : null,
    persistedOperationsOnly: config.persistedOperationsOnly,
  };
}

function limitError(code: string, message: string, status?: number, headers?: Record<string, string>): GraphQLError {
  return new GraphQLError(message, {
    extensions: { code, ...(status ? { http: { status, ...(headers ? { headers } : {}) } } : {}) },
  });
}

// ---------------------------------------------------------------- HTTP: size and CSRF

export interface HttpRejection {
  status: number;
  code: string;
  message: string;
}

/** A refused request body up to this size is read and discarded before answering; larger ones are cut off. */
export const REJECTED_BODY_DRAIN_BYTES = 16 * 1024 * 1024;

/** Content types a browser sends cross-site without a CORS preflight. */
const SIMPLE_CONTENT_TYPES = new Set(['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain']);
/** Any of these headers forces a preflight, so a request carrying one cannot be a blind cross-site form post. */
export const PREFLIGHT_HEADERS = [
  'authorization',
  'x-flotilla-csrf',
  'graphql-require-preflight',
  'apollo-require-preflight',
];

/** Checks a GraphQL HTTP request before its body is read; null when it may proceed. */
export function checkHttpRequest(req: IncomingMessage, limits: Limits): HttpRejection | null {
  const method = (req.method ?? 'GET').toUpperCase();
  if (method === 'POST') {
    const length = req.headers['content-length'];
    if (length === undefined) {
      // Without a length the body could be endless; every ordinary client sends one.
      return { status: 411, code: 'LENGTH_REQUIRED', message: 'a Content-Length header is required' };
    }
    const bytes = Number(length);
    if (!Number.isFinite(bytes) || bytes > limits.maxBodyBytes) {
      return {
        status: 413,
        code: 'PAYLOAD_TOO_LARGE',
        message: `the request body exceeds ${limits.maxBodyBytes} bytes`,
      };
    }
  }
  if (!limits.csrfPrevention) return null;
  const preflighted = PREFLIGHT_HEADERS.some((h) => req.headers[h] !== undefined);
  if (preflighted) return null;
  if (method === 'POST') {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type === '' || SIMPLE_CONTENT_TYPES.has(type)) return csrfRejection();
  } else if (method === 'GET') {
    // A browser navigation gets the GraphiQL page, which executes nothing by itself.
    if ((req.headers.accept ?? '').includes('text/html')) return null;
    const search = new URL(req.url ?? '/', 'http://localhost').searchParams;
    if (search.has('query') || search.has('extensions')) return csrfRejection();
  }
  return null;
}

function csrfRejection(): HttpRejection {
  return {
    status: 403,
    code: 'CSRF_REJECTED',
    message: `this request could have been sent by a cross-site form: use Content-Type: application/json or send one of the headers ${PREFLIGHT_HEADERS.join(', ')}`,
  };
}

// ---------------------------------------------------------------- persisted operations

export interface OperationParams {
  query?: string | null;
  extensions?: Record<string, unknown> | null;
}

/** Operations known by the sha256 of their text (Apollo's `extensions.persistedQuery.sha256Hash`). */
export class PersistedOperations {
  constructor(private readonly byHash: ReadonlyMap<string, string>) {}

  static fromFile(file: string): PersistedOperations {
    const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new Error(`${file}: expected {"<sha256>": "<query>"}`);
    const map = new Map<string, string>();
    for (const [hash, query] of Object.entries(parsed)) {
      if (typeof query !== 'string') throw new Error(`${file}: the operation ${hash} is not a string`);
      if (sha256(query) !== hash.toLowerCase()) throw new Error(`${file}: ${hash} is not the sha256 of its operation`);
      map.set(hash.toLowerCase(), query);
    }
    return new PersistedOperations(map);
  }

  get(hash: string): string | undefined {
    return this.byHash.get(hash.toLowerCase());
  }
}

export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Replaces a persisted operation's hash with its text; refuses free-form text in persisted-only mode. */
export function resolvePersisted<P extends OperationParams>(params: P, limits: Limits): P {
  const persisted = params.extensions?.persistedQuery as { sha256Hash?: unknown } | undefined;
  const hash = typeof persisted?.sha256Hash === 'string' ? persisted.sha256Hash : null;
  if (hash !== null) {
    const query = limits.persistedOperations?.get(hash);
    if (!query)
      throw limitError('PERSISTED_QUERY_NOT_FOUND', `no persisted operation has the hash ${hash.slice(0, 64)}`, 400);
    return { ...params, query };
  }
  if (limits.persistedOperationsOnly && params.query) {
    throw limitError(
      'PERSISTED_QUERY_ONLY',
      'this server runs only persisted operations: send extensions.persistedQuery.sha256Hash',
      400,
    );
  }
  return params;
}

// ---------------------------------------------------------------- validation rules

/** Refuses documents whose selections nest deeper than `max` (introspection fields are not descended). */
export function depthLimitRule(max: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => ({
    Document(node) {
      const fragments = fragmentsOf(node);
      for (const def of node.definitions) {
        if (def.kind !== Kind.OPERATION_DEFINITION) continue;
        const depth = depthOf(def.selectionSet, fragments, new Set());
        if (depth > max) {
          context.reportError(
            new GraphQLError(`the operation nests ${depth} levels deep; at most ${max} are allowed`, {
              nodes: [def],
              extensions: { code: 'QUERY_TOO_DEEP' },
            }),
          );
        }
      }
      return false;
    },
  });
}

function depthOf(set: SelectionSetNode, fragments: Map<string, FragmentDefinitionNode>, path: Set<string>): number {
  let deepest = 0;
  for (const sel of set.selections) {
    if (sel.kind === Kind.FIELD) {
      const below =
        sel.selectionSet && !sel.name.value.startsWith('__') ? depthOf(sel.selectionSet, fragments, path) : 0;
      deepest = Math.max(deepest, 1 + below);
    } else if (sel.kind === Kind.INLINE_FRAGMENT) {
      deepest = Math.max(deepest, depthOf(sel.selectionSet, fragments, path));
    } else {
      const name = sel.name.value;
      const fragment = fragments.get(name);
      if (!fragment || path.has(name)) continue; // unknown or cyclic: other rules report it
      path.add(name);
      deepest = Math.max(deepest, depthOf(fragment.selectionSet, fragments, path));
      path.delete(name);
    }
  }
  return deepest;
}

/** Refuses documents with more than `max` aliased fields (alias bombs repeat one costly field). */
export function aliasLimitRule(max: number): ValidationRule {
  return (context: ValidationContext): ASTVisitor => {
    let aliases = 0;
    return {
      Field(node) {
        if (node.alias) aliases += 1;
      },
      Document: {
        leave(node) {
          if (aliases > max) {
            context.reportError(
              new GraphQLError(`the document uses ${aliases} aliases; at most ${max} are allowed`, {
                nodes: [node],
                extensions: { code: 'TOO_MANY_ALIASES' },
              }),
            );
          }
        },
      },
    };
  };
}

function fragmentsOf(doc: DocumentNode): Map<string, FragmentDefinitionNode> {
  const map = new Map<string, FragmentDefinitionNode>();
  for (const def of doc.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) map.set(def.name.value, def);
  return map;
}

// ---------------------------------------------------------------- complexity

/**
 * Cost of an operation: one per field, and a list field with `first` multiplies the cost of
 * its selection by that page size (DEFAULT_PAGE_SIZE when absent), a list argument by its
 * length. Needs the variables, so it runs just before execution.
 */
export function operationComplexity(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown> | null | undefined,
): number {
  const fragments = fragmentsOf(document);
  const operations = document.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
  const op = operationName ? operations.find((o) => o.name?.value === operationName) : operations[0];
  if (!op) return 0;
  const root =
    op.operation === 'query'
      ? schema.getQueryType()
      : op.operation === 'mutation'
        ? schema.getMutationType()
        : schema.getSubscriptionType();
  if (!root) return 0;
  return costOf(schema, op.selectionSet, root, fragments, variables ?? {}, new Set());
}

function costOf(
  schema: GraphQLSchema,
  set: SelectionSetNode,
  parent: GraphQLNamedType,
  fragments: Map<string, FragmentDefinitionNode>,
  variables: Record<string, unknown>,
  path: Set<string>,
): number {
  let total = 0;
  for (const sel of set.selections) {
    if (sel.kind === Kind.FIELD) {
      const field = isObjectType(parent) || isInterfaceType(parent) ? parent.getFields()[sel.name.value] : undefined;
      if (!field || !sel.selectionSet || sel.name.value.startsWith('__')) {
        total += 1;
        continue;
      }
      let multiplier = 1;
      if (field.args.some((a) => a.name === 'first')) {
        const arg = sel.arguments?.find((a) => a.name.value === 'first');
        const value = arg ? valueFromASTUntyped(arg.value, variables) : undefined;
        multiplier = typeof value === 'number' && Number.isFinite(value) ? Math.max(1, value) : DEFAULT_PAGE_SIZE;
      }
      // A list argument (e.g. `nodes(ids: [...])`) fetches one object per element.
      for (const arg of sel.arguments ?? []) {
        const value = valueFromASTUntyped(arg.value, variables);
        if (Array.isArray(value)) multiplier = Math.max(multiplier, value.length);
      }
      total += 1 + multiplier * costOf(schema, sel.selectionSet, getNamedType(field.type), fragments, variables, path);
    } else if (sel.kind === Kind.INLINE_FRAGMENT) {
      const type = sel.typeCondition ? (schema.getType(sel.typeCondition.name.value) ?? parent) : parent;
      total += costOf(schema, sel.selectionSet, type, fragments, variables, path);
    } else {
      const name = sel.name.value;
      const fragment = fragments.get(name);
      if (!fragment || path.has(name)) continue;
      path.add(name);
      const type = schema.getType(fragment.typeCondition.name.value) ?? parent;
      total += costOf(schema, fragment.selectionSet, type, fragments, variables, path);
      path.delete(name);
    }
  }
  return total;
}

// ---------------------------------------------------------------- rate limiting

/** Forget idle buckets beyond this many, so memory stays bounded under many tokens. */
const MAX_TRACKED_BUCKETS = 50_000;

/** A token bucket per key: `perMinute` operations, refilled continuously, bursting up to `perMinute`. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly clock: Clock,
  ) {}

  /** Takes one operation from the key's bucket; returns the seconds to wait when it is empty. */
  take(key: string): { allowed: true } | { allowed: false; retryAfterSeconds: number } {
    if (this.perMinute <= 0) return { allowed: true };
    const now = this.clock.now().getTime();
    const ratePerMs = this.perMinute / 60_000;
    const bucket = this.buckets.get(key) ?? { tokens: this.perMinute, at: now };
    bucket.tokens = Math.min(this.perMinute, bucket.tokens + Math.max(0, now - bucket.at) * ratePerMs);
    bucket.at = now;
    if (this.buckets.size >= MAX_TRACKED_BUCKETS && !this.buckets.has(key)) this.prune(now, ratePerMs);
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1)
      return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / ratePerMs / 1000)) };
    bucket.tokens -= 1;
    return { allowed: true };
  }

  /** Throws the RATE_LIMITED error (HTTP 429) when the key's bucket is empty. */
  enforce(key: string): void {
    const result = this.take(key);
    if (!result.allowed) {
      throw limitError(
        'RATE_LIMITED',
        `rate limit of ${this.perMinute} operations per minute exceeded; retry in ${result.retryAfterSeconds}s`,
        429,
        {
          'retry-after': String(result.retryAfterSeconds),
        },
      );
    }
  }

  private prune(now: number, ratePerMs: number): void {
    for (const [key, b] of this.buckets)
      if (b.tokens + (now - b.at) * ratePerMs >= this.perMinute) this.buckets.delete(key);
  }
}

// ---------------------------------------------------------------- the Yoga plugin

/** Parsing (token cap), persisted operations, validation rules and the complexity check. */
export function limitsPlugin(limits: Limits): Plugin {
  const rules: ValidationRule[] = [depthLimitRule(limits.maxQueryDepth), aliasLimitRule(limits.maxAliases)];
  if (!limits.introspection) rules.push(NoSchemaIntrospectionCustomRule);
  const checkComplexity = (args: {
    schema: GraphQLSchema;
    document: DocumentNode;
    operationName?: string | null;
    variableValues?: Record<string, unknown> | null;
  }) => {
    const cost = operationComplexity(args.schema, args.document, args.operationName, args.variableValues);
    if (cost <= limits.maxQueryComplexity) return null;
    return limitError(
      'QUERY_TOO_COMPLEX',
      `the operation costs ${cost}; at most ${limits.maxQueryComplexity} is allowed (ask for smaller pages)`,
    );
  };
  return {
    onParams({ params, setParams }) {
      setParams(resolvePersisted(params, limits));
    },
    onParse({ setParseFn }) {
      setParseFn((source, options) => {
        try {
          return parse(source, { ...options, maxTokens: limits.maxTokens });
        } catch (err) {
          if (err instanceof GraphQLError && /more th(?:at|an) \d+ tokens/.test(err.message)) {
            throw limitError('TOO_MANY_TOKENS', `the document has more than ${limits.maxTokens} tokens`, 400);
          }
          throw err;
        }
      });
    },
    onValidate({ addValidationRule }) {
      for (const rule of rules) addValidationRule(rule);
    },
    onExecute({ args, setResultAndStopExecution }) {
      const error = checkComplexity(args);
      if (error) setResultAndStopExecution({ errors: [error] });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const error = checkComplexity(args);
      if (error) setResultAndStopExecution({ errors: [error] });
    },
  };
}
