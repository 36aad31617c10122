// Apollo Federation: the one place where entity keys are declared. Every entity is a Relay
// node keyed by its global id and resolved through its per-request DataLoader, so a gateway
// sending N representations costs the same few SQL statements as a single one.
// To add a type later: `nodeEntity(SandboxRef);` (any builder.loadableNode ref).

import type { ObjectRef } from '@pothos/core';
import type DataLoader from 'dataloader';
import { type GraphQLFieldResolver, type GraphQLSchema, isUnionType } from 'graphql';
import { builder, type Context } from './builder.js';
import { parseGlobalId } from './ids.js';
import { MessageRef } from './message.js';
import { SandboxRef } from './sandbox.js';
import { TenantRef } from './tenant.js';
import { WorkerRef } from './worker.js';

type Types = typeof builder extends PothosSchemaTypes.SchemaBuilder<infer T> ? T : never;

/** What `builder.loadableNode` returns, reduced to what federation needs. */
interface LoadableNodeEntity<Shape> extends ObjectRef<Types, Shape> {
  readonly name: string;
  getDataloader: (ctx: Context) => DataLoader<string, Shape>;
}

/**
 * Declares a loadable node as a federation entity with @key(fields: "id"). Its `load` must
 * return only what the caller may see, with `sort` set so that other ids become null (as
 * TenantRef does with `findVisibleByIds`). A representation
 * that is malformed, of another type, missing or invisible to the caller resolves to null, so
 * `_entities` cannot be used to probe for another tenant's objects.
 */
export function nodeEntity<Shape>(ref: LoadableNodeEntity<Shape>): void {
  builder.asEntity(ref, {
    key: builder.selection<{ id: string }>('id'),
    resolveReference: async ({ id }, ctx: Context) => {
      const parsed = parseGlobalId(id);
      if (parsed?.typename !== ref.name) return null;
      // The loader answers null for what is missing or hidden from the caller; an Error from it
      // is a real failure (e.g. the database is down) and surfaces as one.
      return (await ref.getDataloader(ctx).load(parsed.id)) ?? null;
    },
  });
}

nodeEntity(TenantRef);
nodeEntity(WorkerRef);
nodeEntity(SandboxRef);
nodeEntity(MessageRef);

/** The federation fields' declaration, in the shape of a Pothos field's `authScopes`. */
export const FEDERATION_FIELD_SCOPES = { authenticated: true } as const;

/**
 * `_entities` and `_service` are added by the federation plugin after Pothos has built the
 * schema, so they cannot carry Pothos options: their declaration goes into their extensions
 * (`authScopes`). Like every `authenticated` field they need nothing beyond the verified token
 * the server requires before any execution: `_entities` answers through each type's
 * visibility-filtered loader (`nodeEntity`), and `_service` is the published SDL.
 */
export function declareFederationFieldScopes(schema: GraphQLSchema): GraphQLSchema {
  const fields = schema.getQueryType()?.getFields() ?? {};
  for (const name of ['_entities', '_service']) {
    const field = fields[name];
    if (field) field.extensions = { ...field.extensions, authScopes: FEDERATION_FIELD_SCOPES };
  }
  return schema;
}

/**
 * Makes `_entities` answer null for a representation it cannot resolve: one that is not an
 * object, or whose `__typename` is missing or names no entity. Apollo's resolver would throw for
 * the whole list (an internal error); the gateway gets null for that entry, as for a missing one.
 */
export function guardEntities(schema: GraphQLSchema): void {
  const field = schema.getQueryType()?.getFields()._entities;
  const union = schema.getType('_Entity');
  if (!field?.resolve || !isUnionType(union)) return;
  const entityTypes = new Set(union.getTypes().map((t) => t.name));
  const resolve: GraphQLFieldResolver<unknown, unknown> = field.resolve;
  const resolvable = (r: unknown): boolean =>
    typeof r === 'object' &&
    r !== null &&
    !Array.isArray(r) &&
    typeof (r as { __typename?: unknown }).__typename === 'string' &&
    entityTypes.has((r as { __typename: string }).__typename);
  field.resolve = async (source, args: { representations: unknown[] }, ctx, info) => {
    const representations = args.representations;
    const valid = representations.filter(resolvable);
    const resolved =
      valid.length > 0 ? ((await resolve(source, { representations: valid }, ctx, info)) as unknown[]) : [];
    let next = 0;
    return representations.map((r) => (resolvable(r) ? resolved[next++] : null));
  };
}
