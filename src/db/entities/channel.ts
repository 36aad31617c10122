import { BigIntType, EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, TIMESTAMP } from './base.js';
import { Message } from './message.js';
import { Sandbox } from './sandbox.js';
import { Tenant } from './tenant.js';

/**
 * A tenant's chat channel: agent messages on its threads are POSTed to `outboundUrl`, and people
 * post into its threads through the inbound hook. `secret` is the HMAC secret sealed with the
 * secrets keyring under key `secretKeyId` (see domain/channel-signing.ts); a row from before that
 * (no key id) holds it in clear until `flotilla keys rotate-secrets` seals it. Never exposed after
 * the mutation that created or rotated it.
 */
export class Channel extends BaseEntity<'secretKeyId'> {
  tenant!: Tenant;
  /** What messages' `channel` field says for this channel's messages; unique per tenant. */
  name!: string;
  outboundUrl!: string;
  secret!: string;
  /** The secrets key that sealed `secret`; null: stored in clear (a row from before sealing). */
  secretKeyId: string | null = null;
}

export const ChannelSchema = new EntitySchema<Channel, BaseEntity<string>>({
  class: Channel,
  tableName: 'channels',
  extends: BaseEntitySchema,
  uniques: [{ name: 'channels_tenant_name_unique', properties: ['tenant', 'name'] }],
  properties: {
    tenant: { kind: 'm:1', entity: () => Tenant, deleteRule: 'cascade' },
    name: { type: 'string', length: 50 },
    outboundUrl: { type: 'string', length: 2000 },
    secret: { type: 'text' },
    secretKeyId: { type: 'string', length: 64, nullable: true },
  },
});

/**
 * Which channel a conversation (a sandbox's thread) came in through: the first inbound message
 * binds it, and the agent's messages on that thread go out on that channel.
 */
export class ChannelThread extends BaseEntity {
  channel!: Channel;
  sandbox!: Sandbox;
  threadId!: string;
}

export const ChannelThreadSchema = new EntitySchema<ChannelThread, BaseEntity<string>>({
  class: ChannelThread,
  tableName: 'channel_threads',
  extends: BaseEntitySchema,
  uniques: [{ name: 'channel_threads_sandbox_thread_unique', properties: ['sandbox', 'threadId'] }],
  indexes: [{ name: 'channel_threads_channel_thread_index', properties: ['channel', 'threadId'] }],
  properties: {
    channel: { kind: 'm:1', entity: () => Channel, deleteRule: 'cascade' },
    sandbox: { kind: 'm:1', entity: () => Sandbox, deleteRule: 'cascade' },
    threadId: { type: 'string', length: 200 },
  },
});

export const DELIVERY_STATUSES = ['PENDING', 'SUCCEEDED', 'FAILED'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/** One attempt at POSTing a delivery, as recorded. */
export interface DeliveryAttempt {
  number: number;
  at: string;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
}

/**
 * The outbox: one row per message to POST to a channel, inserted in the message's transaction and
 * drained by the channel drainer (domain/channel-outbox.ts). Per thread, rows go out in the
 * commit order of their messages (eventTxId, eventId).
 */
export class ChannelDelivery extends BaseEntity<'attempts' | 'attemptCount' | 'completedAt' | 'status'> {
  channel!: Channel;
  message!: Message;
  threadId!: string;
  /** The exact JSON body POSTed on every attempt (frozen at enqueue time). */
  payload!: string;
  status: DeliveryStatus = 'PENDING';
  attemptCount = 0;
  nextAttemptAt!: Date;
  completedAt: Date | null = null;
  attempts: DeliveryAttempt[] = [];
  eventTxId!: string;
  eventId!: string;
}

export const ChannelDeliverySchema = new EntitySchema<ChannelDelivery, BaseEntity<string>>({
  class: ChannelDelivery,
  tableName: 'channel_deliveries',
  extends: BaseEntitySchema,
  indexes: [
    { name: 'channel_deliveries_due_index', properties: ['status', 'nextAttemptAt'] },
    { name: 'channel_deliveries_thread_index', properties: ['channel', 'threadId', 'eventTxId', 'eventId'] },
  ],
  properties: {
    channel: { kind: 'm:1', entity: () => Channel, deleteRule: 'cascade' },
    message: { kind: 'm:1', entity: () => Message, deleteRule: 'cascade' },
    threadId: { type: 'string', length: 200 },
    payload: { type: 'text' },
    status: { type: 'string', length: 20 },
    attemptCount: { type: 'integer', default: 0 },
    nextAttemptAt: { ...TIMESTAMP },
    completedAt: { ...TIMESTAMP, nullable: true },
    attempts: { type: 'json' },
    eventTxId: { type: new BigIntType('string') },
    eventId: { type: new BigIntType('string') },
  },
});

/** A nonce an inbound call used, kept until its timestamp leaves the accepted window. */
export class ChannelNonce extends BaseEntity {
  channel!: Channel;
  nonce!: string;
  expiresAt!: Date;
}

export const ChannelNonceSchema = new EntitySchema<ChannelNonce, BaseEntity<string>>({
  class: ChannelNonce,
  tableName: 'channel_nonces',
  extends: BaseEntitySchema,
  uniques: [{ name: 'channel_nonces_channel_nonce_unique', properties: ['channel', 'nonce'] }],
  indexes: [{ name: 'channel_nonces_expiry_index', properties: ['channel', 'expiresAt'] }],
  properties: {
    channel: { kind: 'm:1', entity: () => Channel, deleteRule: 'cascade' },
    nonce: { type: 'string', length: 200 },
    expiresAt: { ...TIMESTAMP },
  },
});
