/**
 * An example second subgraph: usage and billing for Flotilla tenants. It owns no tenants; it
 * extends Flotilla's Tenant entity (keyed by its global id) with a `billing` field and keeps
 * budgets in memory. Authorization is Flotilla's: the caller's token is forwarded to Flotilla,
 * which answers what the caller may see and whether it is a platform admin.
 */
import { buildSubgraphSchema } from '@apollo/subgraph';
import DataLoader from 'dataloader';
import { GraphQLError, parse, type GraphQLSchema } from 'graphql';

export const USAGE_TYPE_DEFS = /* GraphQL */ `
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.6", import: ["@key"])

  enum Plan {
    FREE
    TEAM
    ENTERPRISE
  }

  type Billing {
    plan: Plan!
    monthlyBudgetCents: Int!
    spentCents: Int!
    remainingCents: Int!
  }

  type Tenant @key(fields: "id") {
    id: ID!
    "null when the caller may not see the tenant."
    billing: Billing
  }

  type Query {
    billingPlans: [Plan!]!
  }

  type Mutation {
    "Platform admins only. Returns the tenant, so a gateway can join Flotilla's fields."
    setBudget(tenantId: ID!, cents: Int!, plan: Plan): Tenant!
  }
`;

export const PLANS = ['FREE', 'TEAM', 'ENTERPRISE'] as const;
export type Plan = (typeof PLANS)[number];

/** A budget above this (100 million dollars) is surely a typo. */
export const MAX_BUDGET_CENTS = 10_000_000_000;

export interface Billing {
  plan: Plan;
  monthlyBudgetCents: number;
  spentCents: number;
}

/** Budgets by tenant global id, in memory: this is an example service. */
export class BillingStore {
  private readonly byTenant = new Map<string, Billing>();

  get(tenantId: string): Billing {
    return this.byTenant.get(tenantId) ?? { plan: 'FREE', monthlyBudgetCents: 0, spentCents: 0 };
  }

  setBudget(tenantId: string, cents: number, plan: Plan | null): Billing {
    const next = { ...this.get(tenantId), monthlyBudgetCents: cents, ...(plan ? { plan } : {}) };
    this.byTenant.set(tenantId, next);
    return next;
  }
}

/** Asks Flotilla a question on the caller's behalf (its Authorization header is forwarded). */
export type FlotillaClient = <T>(query: string, variables: Record<string, unknown>) => Promise<T>;

export function flotillaClient(graphqlUrl: string, authorization: string | null): FlotillaClient {
  return async <T>(query: string, variables: Record<string, unknown>): Promise<T> => {
    if (!authorization) throw new GraphQLError('authentication required', { extensions: { code: 'UNAUTHENTICATED' } });
    const res = await fetch(graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', authorization },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await res.json()) as { data?: T | null; errors?: { message: string; extensions?: { code?: string } }[] };
    const [first] = body.errors ?? [];
    if (first) throw new GraphQLError(first.message, { extensions: { code: first.extensions?.code ?? 'FLOTILLA_ERROR' } });
    if (!body.data) throw new GraphQLError('Flotilla returned no data', { extensions: { code: 'FLOTILLA_ERROR' } });
    return body.data;
  };
}

export interface UsageContext {
  flotilla: FlotillaClient;
  /** Which of the given tenant ids the caller can see; one Flotilla request per batch. */
  visibleTenants: DataLoader<string, boolean>;
}

export function createUsageContext(flotilla: FlotillaClient): UsageContext {
  return {
    flotilla,
    visibleTenants: new DataLoader<string, boolean>(async (ids) => {
      const data = await flotilla<{ nodes: ({ id: string } | null)[] }>(
        'query Visible($ids: [ID!]!) { nodes(ids: $ids) { ... on Tenant { id } } }',
        { ids: [...ids] },
      );
      const visible = new Set(data.nodes.flatMap((node) => (node?.id ? [node.id] : [])));
      return ids.map((id) => visible.has(id));
    }),
  };
}

interface TenantReference {
  id: string;
}

function isPlan(value: unknown): value is Plan {
  return typeof value === 'string' && (PLANS as readonly string[]).includes(value);
}

export function createUsageSchema(store: BillingStore): GraphQLSchema {
  return buildSubgraphSchema([
    {
      typeDefs: parse(USAGE_TYPE_DEFS),
      resolvers: {
        Query: {
          billingPlans: () => [...PLANS],
        },
        Mutation: {
          setBudget: async (_root: unknown, args: { tenantId: string; cents: number; plan?: string | null }, ctx: UsageContext) => {
            if (!Number.isInteger(args.cents) || args.cents < 0 || args.cents > MAX_BUDGET_CENTS) {
              throw new GraphQLError(`cents must be an integer from 0 to ${MAX_BUDGET_CENTS}`, { extensions: { code: 'BAD_USER_INPUT' } });
            }
            const plan = args.plan ?? null;
            if (plan !== null && !isPlan(plan)) throw new GraphQLError('unknown plan', { extensions: { code: 'BAD_USER_INPUT' } });
            const data = await ctx.flotilla<{ viewer: { platformAdmin: boolean }; tenant: { id: string } | null }>(
              'query Can($id: ID!) { viewer { platformAdmin } tenant(id: $id) { id } }',
              { id: args.tenantId },
            );
            if (!data.viewer.platformAdmin) throw new GraphQLError('only a platform admin may set budgets', { extensions: { code: 'FORBIDDEN' } });
            if (!data.tenant) throw new GraphQLError('no such tenant', { extensions: { code: 'NOT_FOUND' } });
            store.setBudget(data.tenant.id, args.cents, plan);
            return { id: data.tenant.id };
          },
        },
        Tenant: {
          __resolveReference: (ref: TenantReference) => ({ id: ref.id }),
          billing: async (tenant: TenantReference, _args: unknown, ctx: UsageContext) => {
            // A gateway only asks for tenants Flotilla showed the caller; a direct caller is checked too.
            if (!(await ctx.visibleTenants.load(tenant.id))) return null;
            const billing = store.get(tenant.id);
            return { ...billing, remainingCents: Math.max(0, billing.monthlyBudgetCents - billing.spentCents) };
          },
        },
      },
    },
  ]);
}
