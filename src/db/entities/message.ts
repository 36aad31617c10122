import { BigIntType, EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, TIMESTAMP } from './base.js';
import { Sandbox } from './sandbox.js';
import { Tenant } from './tenant.js';

export const SENDER_KINDS = ['USER', 'AGENT', 'SYSTEM'] as const;
export type SenderKind = (typeof SENDER_KINDS)[number];
/** A plain message, an agent's question (questions.ts) or a person's answer to one. */
export const MESSAGE_KINDS = ['MESSAGE', 'QUESTION', 'ANSWER'] as const;
export type MessageKind = (typeof MESSAGE_KINDS)[number];

/**
 * Whether a message addressed to the agent reached its process: PENDING until the worker holding
 * the lease takes it (DISPATCHED), DELIVERED once written to the process's stdin, FAILED (with
 * `deliveryError`) when it cannot be. Null on the agent's own messages.
 */
export const DELIVERY_STATES = ['PENDING', 'DISPATCHED', 'DELIVERED', 'FAILED'] as const;
export type DeliveryState = (typeof DELIVERY_STATES)[number];
/** Who writes to the agent: their messages have a delivery state. */
export const TO_AGENT_SENDERS: readonly SenderKind[] = ['USER', 'SYSTEM'];

export class Message extends BaseEntity<
  | 'threadId'
  | 'channel'
  | 'readAt'
  | 'eventTxId'
  | 'eventId'
  | 'deliveryState'
  | 'deliveryError'
  | 'dispatchedAt'
  | 'deliveredAt'
  | 'kind'
  | 'questionId'
> {
  sandbox!: Sandbox;
  /** Denormalised from the sandbox so tenant filters need no join. */
  tenant!: Tenant;
  threadId = 'main';
  channel = 'api';
  senderKind!: SenderKind;
  senderId!: string;
  body!: string;
  readAt: Date | null = null;
  kind: MessageKind = 'MESSAGE';
  /** The question a QUESTION message asks or an ANSWER message answers (a plain id: no foreign key). */
  questionId: string | null = null;
  /**
   * The log position (transaction id, event id) of the MESSAGE_POSTED event written in the same
   * transaction: messages are paged in this commit order, never by their time-ordered id.
   */
  eventTxId = '0';
  eventId = '0';
  deliveryState: DeliveryState | null = null;
  deliveryError: string | null = null;
  dispatchedAt: Date | null = null;
  deliveredAt: Date | null = null;
}

export const MessageSchema = new EntitySchema<Message, BaseEntity<string>>({
  class: Message,
  tableName: 'messages',
  extends: BaseEntitySchema,
  indexes: [
    { name: 'messages_sandbox_position_index', properties: ['sandbox', 'eventTxId', 'eventId'] },
    { name: 'messages_sandbox_thread_index', properties: ['sandbox', 'threadId', 'eventTxId', 'eventId'] },
    // Retention: a tenant's oldest message, and the ones past its retention, without a scan.
    { name: 'messages_tenant_created_index', properties: ['tenant', 'createdAt'] },
    // The reaper's look for dispatches that timed out.
    { name: 'messages_delivery_state_index', properties: ['deliveryState', 'dispatchedAt'] },
    // A sandbox's undelivered messages, in commit order (the worker's read).
    {
      name: 'messages_sandbox_delivery_index',
      properties: ['sandbox', 'deliveryState', 'eventTxId', 'eventId'],
    },
  ],
  properties: {
    sandbox: { kind: 'm:1', entity: () => Sandbox, deleteRule: 'cascade' },
    tenant: { kind: 'm:1', entity: () => Tenant, deleteRule: 'cascade' },
    threadId: { type: 'string', length: 200 },
    channel: { type: 'string', length: 50 },
    senderKind: { type: 'string', length: 20 },
    senderId: { type: 'string', length: 300 },
    body: { type: 'text' },
    readAt: { ...TIMESTAMP, nullable: true },
    kind: { type: 'string', length: 20, default: 'MESSAGE' },
    questionId: { type: 'uuid', nullable: true },
    eventTxId: { type: new BigIntType('string'), default: 0 },
    eventId: { type: new BigIntType('string'), default: 0 },
    deliveryState: { type: 'string', length: 20, nullable: true },
    deliveryError: { type: 'text', nullable: true },
    dispatchedAt: { ...TIMESTAMP, nullable: true },
    deliveredAt: { ...TIMESTAMP, nullable: true },
  },
});
