import {
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLNamedType,
  type GraphQLSchema,
  getNamedType,
  isInterfaceType,
  isObjectType,
  Kind,
  type SelectionSetNode,
  valueFromASTUntyped,
} from 'graphql';
import { DEFAULT_PAGE_SIZE } from '../domain/pagination.js';
import { fragmentsOf } from './validation-rules.js';

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
