import { graphql } from 'graphql';
import { describe, expect, it } from 'vitest';
import {
  BillingStore,
  costCentsPerHour,
  createUsageContext,
  createUsageSchema,
  type FlotillaClient,
} from '../../examples/usage-subgraph/schema.js';

const SANDBOX_COST = /* GraphQL */ `
  query ($r: [_Any!]!) { _entities(representations: $r) { ... on Sandbox { id costCentsPerHour } } }
`;

/** Sandbox prices never ask Flotilla: a client that fails the test if they do. */
const noFlotilla: FlotillaClient = () => Promise.reject(new Error('the price must not need Flotilla'));

async function price(representations: Record<string, unknown>[]) {
  return graphql({
    schema: createUsageSchema(new BillingStore()),
    source: SANDBOX_COST,
    variableValues: { r: representations },
    contextValue: createUsageContext(noFlotilla),
  });
}

describe('usage subgraph: Sandbox.costCentsPerHour', () => {
  it('prices cores and memory per hour, rounding up to a whole cent', () => {
    expect(costCentsPerHour({ cpuMillis: 1000, memoryMb: 1024 })).toBe(5);
    expect(costCentsPerHour({ cpuMillis: 1500, memoryMb: 2048 })).toBe(8);
    expect(costCentsPerHour({ cpuMillis: 250, memoryMb: 256 })).toBe(2); // 1 + 0.25 rounds up
    expect(costCentsPerHour({ cpuMillis: 0, memoryMb: 0 })).toBe(0);
  });

  it('resolves a representation from the resources the gateway sends, without asking Flotilla', async () => {
    const res = await price([{ __typename: 'Sandbox', id: 'sb-1', resources: { cpuMillis: 4000, memoryMb: 8192 } }]);
    expect(res).toEqual({ data: { _entities: [{ id: 'sb-1', costCentsPerHour: 24 }] } });
  });

  it('refuses a representation without the required resources', async () => {
    const res = await price([{ __typename: 'Sandbox', id: 'sb-2' }]);
    expect(res.errors?.map((e) => e.extensions.code)).toEqual(['BAD_USER_INPUT']);
  });
});
