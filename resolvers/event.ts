import { EVENT_TYPES, type Event } from '../src/db/entities/event.js';
import { cursorOfEvent, type LogPosition } from '../src/events/reader.js';
import { builder } from './builder.js';
import { eventStream } from './event-stream.js';
import { localIdOf } from './ids.js';
import { LeaseRef } from './lease.js';
import { MessageRef } from './message.js';
import { connection, connectionType, eventCursor, pageArgs } from './pagination.js';
import { SandboxRef } from './sandbox.js';
import { TenantRef } from './tenant.js';
import { WorkerRef } from './worker.js';

export const EventTypeEnum = builder.enumType('EventType', { values: EVENT_TYPES });

/** An event as the log stores it or as the hub delivers it (which carries its cursor already). */
type EventShape = Pick<
  Event,
  'id' | 'type' | 'tenantId' | 'sandboxId' | 'workerId' | 'messageId' | 'leaseId' | 'createdAt'
> & {
  data: Readonly<Record<string, unknown>>;
} & ({ txId: string } | { cursor: string });

export const EventRef = builder.objectRef<EventShape>('Event').implement({
  description: 'One entry of the event log.',
  fields: (t) => ({
    // The same opaque cursor the subscriptions take as `after` (src/events/reader.ts).
    cursor: t.string({
      description: 'Opaque, ordered, resumable.',
      resolve: (e) => ('cursor' in e ? e.cursor : cursorOfEvent(e)),
    }),
    type: t.field({ type: EventTypeEnum, resolve: (e) => e.type }),
    occurredAt: t.field({ type: 'DateTime', resolve: (e) => e.createdAt }),
    tenant: t.field({ type: TenantRef, nullable: true, resolve: (e) => e.tenantId }),
    sandbox: t.field({ type: SandboxRef, nullable: true, resolve: (e) => e.sandboxId }),
    worker: t.field({ type: WorkerRef, nullable: true, resolve: (e) => e.workerId }),
    message: t.field({ type: MessageRef, nullable: true, resolve: (e) => e.messageId }),
    lease: t.field({ type: LeaseRef, nullable: true, resolve: (e) => e.leaseId }),
    data: t.field({
      type: 'JSON',
      description: 'Small details, e.g. {"from":"STARTING","to":"RUNNING"}.',
      resolve: (e) => e.data,
    }),
  }),
});

const EventConnection = connectionType('EventConnection', EventRef);

builder.queryField('events', (t) => {
  const { first, after } = pageArgs(t.arg);
  return t.field({
    type: EventConnection,
    description: "A tenant's event log in commit order; resume with the last cursor you saw.",
    args: {
      tenantId: t.arg.id({ required: true }),
      after,
      first,
      types: t.arg({ type: [EventTypeEnum], required: false }),
    },
    authScopes: (_root, args) => ({
      tenantRole: { tenantId: localIdOf(args.tenantId, 'Tenant', 'tenantId'), role: 'VIEWER' },
    }),
    resolve: (_root, args, ctx) =>
      connection<Event, LogPosition>(
        args,
        (page) =>
          ctx.services.events.listForTenant(localIdOf(args.tenantId, 'Tenant', 'tenantId'), {
            ...page,
            types: args.types,
          }),
        eventCursor,
      ),
  });
});

builder.subscriptionType({});

builder.subscriptionFields((t) => ({
  sandboxEvents: t.field({
    type: EventRef,
    description:
      'Everything that happens to one sandbox: status, agent status, messages, lease. With `after`, replays first.',
    args: { sandboxId: t.arg.id({ required: true }), after: t.arg.string({ required: false }) },
    authScopes: { authenticated: true },
    subscribe: (_root, args, ctx) =>
      eventStream(ctx, () =>
        ctx.services.subscriptions.sandboxEvents(localIdOf(args.sandboxId, 'Sandbox', 'sandboxId'), args.after),
      ),
    resolve: (event) => event,
  }),
  tenantEvents: t.field({
    type: EventRef,
    description: 'Everything in a tenant, optionally only some types. With `after`, replays first.',
    args: {
      tenantId: t.arg.id({ required: true }),
      after: t.arg.string({ required: false }),
      types: t.arg({ type: [EventTypeEnum], required: false }),
    },
    authScopes: { tenantMember: true },
    subscribe: (_root, args, ctx) =>
      eventStream(ctx, () =>
        ctx.services.subscriptions.tenantEvents(localIdOf(args.tenantId, 'Tenant', 'tenantId'), args.after, args.types),
      ),
    resolve: (event) => event,
  }),
  workerAssignments: t.field({
    type: EventRef,
    description:
      "A worker's own work queue: SANDBOX_ASSIGNED, SANDBOX_STOP_REQUESTED and SANDBOX_RESTART_REQUESTED. With `after`, replays first.",
    args: { workerId: t.arg.id({ required: true }), after: t.arg.string({ required: false }) },
    authScopes: { worker: true, tenantMember: true },
    subscribe: (_root, args, ctx) =>
      eventStream(ctx, () =>
        ctx.services.subscriptions.workerAssignments(localIdOf(args.workerId, 'Worker', 'workerId'), args.after),
      ),
    resolve: (event) => event,
  }),
}));
