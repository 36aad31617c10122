import { Channel, ChannelDelivery, DELIVERY_STATUSES, type DeliveryAttempt } from '../src/db/entities/channel.js';
import { AlreadyExistsError, ForbiddenError, NotFoundError, ValidationError } from '../src/domain/errors.js';
import { builder, mutationResult } from './builder.js';
import { encodeGlobalId, localIdOf } from './ids.js';
import { MessageRef } from './message.js';
import { connection, connectionType, pageArgs } from './pagination.js';
import { TenantRef } from './tenant.js';

export const ChannelDeliveryStatusEnum = builder.enumType('ChannelDeliveryStatus', { values: DELIVERY_STATUSES });

const ChannelDeliveryAttemptType = builder.objectRef<DeliveryAttempt>('ChannelDeliveryAttempt').implement({
  description: 'One POST of a delivery to the channel’s outbound URL.',
  fields: (t) => ({
    number: t.exposeInt('number', { description: '1 for the first attempt.' }),
    at: t.field({ type: 'DateTime', resolve: (a) => new Date(a.at) }),
    statusCode: t.exposeInt('statusCode', {
      nullable: true,
      description: 'Null when no answer came (timeout, refused connection).',
    }),
    error: t.exposeString('error', { nullable: true, description: 'Null for a 2xx answer.' }),
    durationMs: t.exposeInt('durationMs'),
  }),
});

/** A channel as its tenant sees it: never the secret. */
export const ChannelRef = builder.loadableNode('Channel', {
  description:
    'A chat channel of a tenant, reached through signed webhooks. The secret is shown once, by createChannel and rotateChannelSecret.',
  id: { resolve: (channel: Channel) => channel.id },
  isTypeOf: (value) => value instanceof Channel,
  load: (ids: string[], ctx) => ctx.services.channels.findVisibleByIds(ids),
  sort: (channel) => channel.id,
  fields: (t) => ({
    name: t.exposeString('name', { description: 'What the `channel` field of its messages says.' }),
    outboundUrl: t.exposeString('outboundUrl'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    tenant: t.field({ type: TenantRef, resolve: (c) => c.tenant.id }),
  }),
});

export const ChannelDeliveryRef = builder.loadableNode('ChannelDelivery', {
  description: 'One agent message queued for a channel, with every attempt at POSTing it.',
  id: { resolve: (delivery: ChannelDelivery) => delivery.id },
  isTypeOf: (value) => value instanceof ChannelDelivery,
  load: (ids: string[], ctx) => ctx.services.channels.findVisibleDeliveriesByIds(ids),
  sort: (delivery) => delivery.id,
  fields: (t) => ({
    message: t.field({ type: MessageRef, nullable: true, resolve: (d) => d.message.id }),
    threadId: t.exposeString('threadId'),
    status: t.field({ type: ChannelDeliveryStatusEnum, resolve: (d) => d.status }),
    attemptCount: t.exposeInt('attemptCount'),
    nextAttemptAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the next attempt is due; null once SUCCEEDED or FAILED.',
      resolve: (d) => (d.status === 'PENDING' ? d.nextAttemptAt : null),
    }),
    completedAt: t.expose('completedAt', { type: 'DateTime', nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    attempts: t.field({ type: [ChannelDeliveryAttemptType], resolve: (d) => d.attempts }),
  }),
});

export const ChannelConnection = connectionType('ChannelConnection', ChannelRef);
export const ChannelDeliveryConnection = connectionType('ChannelDeliveryConnection', ChannelDeliveryRef);

builder.objectField(ChannelRef, 'deliveries', (t) =>
  t.field({
    type: ChannelDeliveryConnection,
    description: 'Oldest first.',
    args: pageArgs(t.arg),
    resolve: (channel, args, ctx) => connection(args, (page) => ctx.services.channels.deliveries(channel, page)),
  }),
);

builder.objectField(TenantRef, 'channels', (t) =>
  t.field({
    type: ChannelConnection,
    description: 'Tenant OPERATOR and above.',
    authScopes: (tenant) => ({ tenantRole: { tenantId: tenant.id, role: 'OPERATOR' } }),
    args: pageArgs(t.arg),
    resolve: (tenant, args, ctx) => connection(args, (page) => ctx.services.channels.list(tenant.id, page)),
  }),
);

const CreateChannelInput = builder.inputType('CreateChannelInput', {
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    name: t.string({ required: true, description: '1 to 50 of a-z, 0-9, "_" and "-"; unique in the tenant.' }),
    outboundUrl: t.string({ required: true, description: 'An http or https URL the agent’s messages are POSTed to.' }),
  }),
});

const ChannelIdInput = builder.inputType('ChannelIdInput', {
  fields: (t) => ({ channelId: t.id({ required: true }) }),
});

const ChannelSecretPayload = builder.objectRef<{ channel: Channel; secret: string }>('ChannelSecretPayload').implement({
  fields: (t) => ({
    channel: t.field({ type: ChannelRef, resolve: (p) => p.channel }),
    secret: t.exposeString('secret', {
      description: 'Signs and verifies the channel’s calls, both ways. Shown only this once: store it now.',
    }),
  }),
});

const DeleteChannelPayload = builder.objectRef<Channel>('DeleteChannelPayload').implement({
  fields: (t) => ({ channelId: t.id({ resolve: (c) => encodeGlobalId('Channel', c.id) }) }),
});

builder.mutationFields((t) => ({
  createChannel: t.field({
    type: ChannelSecretPayload,
    errors: mutationResult('CreateChannel', [ValidationError, NotFoundError, ForbiddenError, AlreadyExistsError]),
    description: 'Tenant ADMIN only. The secret is in the result once and never again.',
    args: { input: t.arg({ type: CreateChannelInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.channels.create({
        tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'),
        name: input.name,
        outboundUrl: input.outboundUrl,
      }),
  }),
  rotateChannelSecret: t.field({
    type: ChannelSecretPayload,
    errors: mutationResult('RotateChannelSecret', [ValidationError, NotFoundError, ForbiddenError]),
    description: 'Tenant ADMIN only. A new secret, shown once; the old one stops verifying at once.',
    args: { input: t.arg({ type: ChannelIdInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.channels.rotateSecret(localIdOf(input.channelId, 'Channel', 'input.channelId')),
  }),
  deleteChannel: t.field({
    type: DeleteChannelPayload,
    errors: mutationResult('DeleteChannel', [ValidationError, NotFoundError, ForbiddenError]),
    description: 'Tenant ADMIN only. Its pending deliveries are dropped; its messages stay.',
    args: { input: t.arg({ type: ChannelIdInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.channels.delete(localIdOf(input.channelId, 'Channel', 'input.channelId')),
  }),
}));
