import type { GraphQLField, GraphQLObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import { schema } from '../../resolvers/index.js';

type AnyField = GraphQLField<unknown, unknown>;

/** A field's declared scopes: its Pothos `authScopes`, or (federation fields) the same in its extensions. */
function declaredScopes(field: AnyField): unknown {
  const extensions = field.extensions as { pothosOptions?: { authScopes?: unknown }; authScopes?: unknown };
  return extensions.pothosOptions?.authScopes ?? extensions.authScopes;
}

/** A declaration that requires something: a scope map with at least one scope, or a function computing one. */
function isDeclaration(scopes: unknown): boolean {
  if (typeof scopes === 'function') return true;
  return typeof scopes === 'object' && scopes !== null && Object.keys(scopes).length > 0;
}

const roots = [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].filter(
  (type): type is GraphQLObjectType => type !== null && type !== undefined,
);
const rootFields = roots.flatMap((type) =>
  Object.values(type.getFields()).map((field) => ({ name: `${type.name}.${field.name}`, field })),
);

describe('authorization declared on every root field', () => {
  it('walks every Query, Mutation and Subscription field', () => {
    expect(roots.map((type) => type.name)).toEqual(['Query', 'Mutation', 'Subscription']);
    // The walk sees the plugin-made fields too (relay's node/nodes, federation's _entities/_service).
    expect(rootFields.map((f) => f.name)).toEqual(
      expect.arrayContaining(['Query.node', 'Query.nodes', 'Query._entities', 'Query._service', 'Mutation.heartbeat']),
    );
    expect(rootFields.length).toBeGreaterThan(35);
  });

  it('finds no root field without an authScopes declaration', () => {
    const undeclared = rootFields.filter(({ field }) => !isDeclaration(declaredScopes(field))).map((f) => f.name);
    expect(undeclared).toEqual([]);
  });
});
