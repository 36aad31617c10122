import {
  type ASTVisitor,
  type DocumentNode,
  type FragmentDefinitionNode,
  GraphQLError,
  Kind,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
} from 'graphql';

/** Validation rules against hostile documents; each rejection carries a stable code (docs/security.md). */

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

export function fragmentsOf(doc: DocumentNode): Map<string, FragmentDefinitionNode> {
  const map = new Map<string, FragmentDefinitionNode>();
  for (const def of doc.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) map.set(def.name.value, def);
  return map;
}
