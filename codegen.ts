/**
 * graphql-codegen configuration for the typed client: TypeScript types and TypedDocumentNode
 * documents for every operation in schema/operations, generated from the printed schema.
 * Run with `npm run codegen`; `npm run codegen:check` (part of `npm test`) fails on drift.
 */
export const codegenConfig = {
  schema: 'schema/schema.graphql',
  documents: 'schema/operations',
  output: 'src/client/generated/graphql.ts',
  plugins: ['typescript-operations', 'typed-document-node'] as const,
  config: {
    // _Any: federation entity representations (served for gateways, not used by the client).
    scalars: { DateTime: 'string', JSON: 'unknown', ID: 'string', _Any: 'unknown' },
    strictScalars: true,
    enumsAsTypes: true,
    useTypeImports: true,
    skipTypename: false,
    nonOptionalTypename: false,
    dedupeFragments: true,
  },
};

export default codegenConfig;
