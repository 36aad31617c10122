import { type DocumentNode, type GraphQLSchema, NoSchemaIntrospectionCustomRule, type ValidationRule } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Config } from '../config/index.js';
import { operationComplexity } from './complexity.js';
import { limitError } from './errors.js';
import { PersistedOperations, resolvePersisted } from './persisted-operations.js';
import { parseWithTokenLimit } from './token-limit.js';
import { aliasLimitRule, depthLimitRule } from './validation-rules.js';

/**
 * Limits on hostile input: what reaches the server (size, CSRF), what it parses (tokens),
 * validates (depth, aliases, introspection), executes (complexity) and how often (rate).
 * Each rejection carries a stable code; docs/security.md lists them. Each check has its own file
 * (http-admission, csrf, persisted-operations, token-limit, validation-rules, complexity,
 * rate-limit); this one holds the settings and the Yoga plugin that applies them.
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
      setParseFn((source, options) => parseWithTokenLimit(source, options, limits.maxTokens));
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
