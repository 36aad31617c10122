import { Event, EVENT_TYPES } from '../src/db/entities/event.js';
import { ValidationError } from '../src/domain/errors.js';
import { builder } from './builder.js';
import { localIdOf } from './ids.js';
import { LeaseRef } from './lease.js';
import { MessageRef } from './message.js';
import { SandboxRef } from './sandbox.js';
import { TenantRef } from './tenant.js';
import { WorkerRef } from './worker.js';

export const EventTypeEnum = builder.enumType('EventType', { values: EVENT_TYPES });

/** Event cursors are opaque: base64url of "e:<event id>". */
export function encodeEventCursor(id: string): string {
  return Buffer.from(`e:${id}`, 'utf8').toString('base64url');
}

export function decodeEventCursor(cursor: string | null | undefined): string | null {
  if (cursor === null || cursor === undefined) return null;
  const decoded = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!/^e:\d{1,20}$/.test(decoded)) throw new ValidationError('after is not a valid event cursor', 'after');
  return decoded.slice(2);
}

export const EventRef = builder.objectRef<Event>('Event').implement({
  description: 'One entry of the event log.',
  isTypeOf: (value) => value instanceof Event,
  fields: (t) => ({
    cursor: t.string({ description: 'Opaque, ordered, resumable.', resolve: (e) => encodeEventCursor(String(e.id)) }),
    type: t.field({ type: EventTypeEnum, resolve: (e) => e.type }),
    occurredAt: t.field({ type: 'DateTime', resolve: (e) => e.createdAt }),
    tenant: t.field({ type: TenantRef, nullable: true, resolve: (e) => e.tenantId }),
    sandbox: t.field({ type: SandboxRef, nullable: true, resolve: (e) => e.sandboxId }),
    worker: t.field({ type: WorkerRef, nullable: true, resolve: (e) => e.workerId }),
    message: t.field({ type: MessageRef, nullable: true, resolve: (e) => e.messageId }),
    lease: t.field({ type: LeaseRef, nullable: true, resolve: (e) => e.leaseId }),
    data: t.field({ type: 'JSON', description: 'Small details, e.g. {"from":"STARTING","to":"RUNNING"}.', resolve: (e) => e.data }),
  }),
});

const EventEdge = builder.objectRef<{ cursor: string; node: Event }>('EventEdge').implement({
  fields: (t) => ({
    cursor: t.exposeString('cursor'),
    node: t.field({ type: EventRef, resolve: (edge) => edge.node }),
  }),
});

interface EventPage {
  edges: { cursor: string; node: Event }[];
  hasNextPage: boolean;
  hadCursor: boolean;
  totalCount: () => Promise<number>;
}

const EventPageInfo = builder.objectRef<EventPage>('EventPageInfo').implement({
  fields: (t) => ({
    hasNextPage: t.boolean({ resolve: (p) => p.hasNextPage }),
    hasPreviousPage: t.boolean({ resolve: (p) => p.hadCursor }),
    startCursor: t.string({ nullable: true, resolve: (p) => p.edges[0]?.cursor ?? null }),
    endCursor: t.string({ nullable: true, resolve: (p) => p.edges.at(-1)?.cursor ?? null }),
  }),
});

const EventConnection = builder.objectRef<EventPage>('EventConnection').implement({
  fields: (t) => ({
    edges: t.field({ type: [EventEdge], resolve: (p) => p.edges }),
    pageInfo: t.field({ type: EventPageInfo, resolve: (p) => p }),
    totalCount: t.int({ resolve: (p) => p.totalCount() }),
  }),
});

builder.queryField('events', (t) =>
  t.field({
    type: EventConnection,
    description: "A tenant's event log in commit order; resume with the last cursor you saw.",
    args: {
      tenantId: t.arg.id({ required: true }),
      after: t.arg.string({ required: false }),
      first: t.arg.int({ required: false }),
      types: t.arg({ type: [EventTypeEnum], required: false }),
    },
    authScopes: (_root, args) => ({ tenantRole: { tenantId: localIdOf(args.tenantId, 'Tenant'), role: 'VIEWER' } }),
    resolve: async (_root, args, ctx) => {
      const page = await ctx.services.events.listForTenant(localIdOf(args.tenantId, 'Tenant'), {
        after: decodeEventCursor(args.after),
        first: args.first,
        types: args.types,
      });
      return {
        edges: page.items.map((node) => ({ cursor: encodeEventCursor(String(node.id)), node })),
        hasNextPage: page.hasNextPage,
        hadCursor: !!args.after,
        totalCount: page.totalCount,
      };
    },
  }),
);
