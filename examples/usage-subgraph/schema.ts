/**
 * An example second subgraph: usage and billing for Flotilla tenants. It owns no tenants; it
 * extends Flotilla's Tenant entity (keyed by its global id) with a `billing` field and keeps
 * budgets in memory. Authorization is Flotilla's: the caller's token is forwarded to Flotilla,
 * which answers what the caller may see and whether it is a platform admin.
 * It also extends Flotilla's Sandbox with a price, `costCentsPerHour`, computed from the sandbox's
 * resources, which the gateway fetches from Flotilla first (@requires on @external fields).
 */
import { buildSubgraphSchema } from '@apollo/subgraph';
import DataLoader from 'dataloader';
import { GraphQLError, type GraphQLSchema, parse } from 'graphql';

export const USAGE_TYPE_DEFS = /* GraphQL */ `
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.6", import: ["@key", "@external", "@requires"])

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

  "Flotilla's; declared here only so @requires can name its fields."
  type Resources {
    cpuMillis: Int! @external
    memoryMb: Int! @external
  }

  type Sandbox @key(fields: "id") {
    id: ID!
    resources: Resources! @external
    "What the sandbox costs per hour at list price, from its resources (rounded up)."
    costCentsPerHour: Int! @requires(fields: "resources { cpuMillis memoryMb }")
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

/** List prices: one CPU core (1000 millicores) and one GiB of memory for an hour, in cents. */
export const CENTS_PER_CORE_HOUR = 4;
export const CENTS_PER_GIB_HOUR = 1;
const MILLICORES_PER_CORE = 1000;
const MB_PER_GIB = 1024;

export interface SandboxResources {
  cpuMillis: number;
  memoryMb: number;
}

/** The hourly list price of a sandbox's resources, rounded up to a whole cent. */
export function costCentsPerHour(resources: SandboxResources): number {
  // One division of integers, so a whole number of cents is never rounded up by float error.
  const numerator =
    resources.cpuMillis * CENTS_PER_CORE_HOUR * MB_PER_GIB +
    resources.memoryMb * CENTS_PER_GIB_HOUR * MILLICORES_PER_CORE;
  return Math.ceil(numerator / (MILLICORES_PER_CORE * MB_PER_GIB));
}

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
    const body = (await res.json()) as {
      data?: T | null;
      errors?: { message: string; extensions?: { code?: string } }[];
    };
    const [first] = body.errors ?? [];
    if (first)
      throw new GraphQLError(first.message, { extensions: { code: first.extensions?.code ?? 'FLOTILLA_ERROR' } });
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

/** What the gateway sends for a Sandbox: its key plus the @requires fields it fetched from Flotilla. */
interface SandboxReference {
  id: string;
  resources?: Partial<SandboxResources> | null;
}

function isResources(value: Partial<SandboxResources> | null | undefined): value is SandboxResources {
  return Number.isInteger(value?.cpuMillis) && Number.isInteger(value?.memoryMb);
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
          setBudget: async (
            _root: unknown,
            args: { tenantId: string; cents: number; plan?: string | null },
            ctx: UsageContext,
          ) => {
            if (!Number.isInteger(args.cents) || args.cents < 0 || args.cents > MAX_BUDGET_CENTS) {
              throw new GraphQLError(`cents must be an integer from 0 to ${MAX_BUDGET_CENTS}`, {
                extensions: { code: 'BAD_USER_INPUT' },
              });
            }
            const plan = args.plan ?? null;
            if (plan !== null && !isPlan(plan))
              throw new GraphQLError('unknown plan', { extensions: { code: 'BAD_USER_INPUT' } });
            const data = await ctx.flotilla<{ viewer: { platformAdmin: boolean }; tenant: { id: string } | null }>(
              'query Can($id: ID!) { viewer { platformAdmin } tenant(id: $id) { id } }',
              { id: args.tenantId },
            );
            if (!data.viewer.platformAdmin)
              throw new GraphQLError('only a platform admin may set budgets', { extensions: { code: 'FORBIDDEN' } });
            if (!data.tenant) throw new GraphQLError('no such tenant', { extensions: { code: 'NOT_FOUND' } });
            store.setBudget(data.tenant.id, args.cents, plan);
            return { id: data.tenant.id };
          },
        },
        Sandbox: {
          __resolveReference: (ref: SandboxReference) => ref,
          // A price list is public and the price is a function of the resources in the
          // representation alone, so no authorization is needed: nothing of Flotilla's is read.
          costCentsPerHour: (sandbox: SandboxReference) => {
            if (!isResources(sandbox.resources)) {
              throw new GraphQLError('costCentsPerHour needs the sandbox resources (the gateway sends them)', {
                extensions: { code: 'BAD_USER_INPUT' },
              });
            }
            return costCentsPerHour(sandbox.resources);
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
