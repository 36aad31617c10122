import { buildSchema, type GraphQLNamedType, isInputObjectType, isInterfaceType, isObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import {
  CompositionError,
  composeSupergraph,
  FLOTILLA_SUBGRAPH,
  USAGE_SUBGRAPH,
} from '../../examples/gateway/compose.js';
import { USAGE_TYPE_DEFS } from '../../examples/usage-subgraph/schema.js';
import { schema } from '../../resolvers/index.js';
import { subgraphSdl } from '../../resolvers/subgraph-sdl.js';

const FLOTILLA_URL = 'http://flotilla.invalid/graphql';
const USAGE_URL = 'http://usage.invalid/graphql';

async function subgraphs(usageSdl = USAGE_TYPE_DEFS) {
  return [
    { name: FLOTILLA_SUBGRAPH, url: FLOTILLA_URL, sdl: await subgraphSdl(schema) },
    { name: USAGE_SUBGRAPH, url: USAGE_URL, sdl: usageSdl },
  ];
}

/** "Type.field: Type" for every field (and input field) of a named type. */
function fieldSignatures(type: GraphQLNamedType | undefined): string[] {
  if (!type) return [];
  if (isObjectType(type) || isInterfaceType(type) || isInputObjectType(type)) {
    return Object.values(type.getFields()).map((f) => `${type.name}.${f.name}: ${String(f.type)}`);
  }
  return [];
}

describe('federation composition', () => {
  it('composes Flotilla with the usage subgraph into one API joining both on Tenant', async () => {
    const { supergraphSdl, publicSdl } = composeSupergraph(await subgraphs());
    const api = buildSchema(publicSdl);

    expect(fieldSignatures(api.getType('Tenant'))).toEqual(
      expect.arrayContaining([
        'Tenant.id: ID!',
        'Tenant.slug: String!',
        'Tenant.name: String!',
        'Tenant.billing: Billing',
      ]),
    );
    expect(Object.keys(api.getMutationType()?.getFields() ?? {})).toEqual(
      expect.arrayContaining(['createTenant', 'setBudget']),
    );
    expect(Object.keys(api.getQueryType()?.getFields() ?? {})).toEqual(
      expect.arrayContaining(['tenant', 'tenants', 'viewer', 'billingPlans']),
    );
    // Federation plumbing stays between gateway and subgraphs.
    expect(api.getQueryType()?.getFields()._entities).toBeUndefined();
    expect(api.getQueryType()?.getFields()._service).toBeUndefined();
    // The gateway learns both subgraphs' locations and that Tenant is keyed by id in each.
    expect(supergraphSdl).toContain(FLOTILLA_URL);
    expect(supergraphSdl).toContain(USAGE_URL);
    expect(supergraphSdl.match(/@join__type\(graph: \w+, key: "id"\)/g)?.length).toBeGreaterThanOrEqual(2);
  });

  it('joins Sandbox too: costCentsPerHour from the usage subgraph requires the resources Flotilla owns', async () => {
    const { supergraphSdl, publicSdl } = composeSupergraph(await subgraphs());
    const api = buildSchema(publicSdl);

    expect(fieldSignatures(api.getType('Sandbox'))).toEqual(
      expect.arrayContaining([
        'Sandbox.name: String!',
        'Sandbox.resources: Resources!',
        'Sandbox.costCentsPerHour: Int!',
      ]),
    );
    // The gateway must fetch the resources from Flotilla before asking the usage subgraph.
    expect(supergraphSdl).toMatch(
      /costCentsPerHour: Int! @join__field\(graph: USAGE, requires: "resources\s*\{\s*cpuMillis memoryMb\s*\}"\)/,
    );
    expect(supergraphSdl).toMatch(
      /cpuMillis: Int! @join__field\(graph: FLOTILLA\) @join__field\(graph: USAGE, external: true\)/,
    );
  });

  it('keeps every field of the Flotilla API unchanged in the composed API', async () => {
    // composition-library hints are not available, so check the effect that matters: nothing of
    // Flotilla's contract is dropped, renamed or retyped by composing it with another subgraph.
    const { publicSdl } = composeSupergraph(await subgraphs());
    const api = buildSchema(publicSdl);
    for (const type of Object.values(schema.getTypeMap())) {
      if (type.name.startsWith('_')) continue;
      const expected = fieldSignatures(type).filter((s) => !/\._(entities|service):/.test(s));
      expect(fieldSignatures(api.getType(type.name))).toEqual(expect.arrayContaining(expected));
    }
  });

  it('fails with the composition errors when a subgraph disagrees on the entity key', async () => {
    const broken = USAGE_TYPE_DEFS.replace('id: ID!', 'id: String!');
    expect(broken).not.toBe(USAGE_TYPE_DEFS);
    const attempt = async () => composeSupergraph(await subgraphs(broken));
    await expect(attempt()).rejects.toThrow(CompositionError);
    await expect(attempt()).rejects.toThrow(/Tenant\.id/);
  });
});
