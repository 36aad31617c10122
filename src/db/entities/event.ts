import { BigIntType, EntitySchema, OptionalProps } from '@mikro-orm/core';
import { TIMESTAMP } from './base.js';

export const EVENT_TYPES = [
  'SANDBOX_STATUS_CHANGED',
  'AGENT_STATUS_CHANGED',
  'MESSAGE_POSTED',
  // A message reached the agent's process (data: from, to); MESSAGE_DELIVERY_CHANGED is any other delivery transition.
  'MESSAGE_DELIVERED',
  'MESSAGE_DELIVERY_CHANGED',
  'LEASE_CHANGED',
  'WORKER_STATUS_CHANGED',
  'SANDBOX_ASSIGNED',
  'SANDBOX_STOP_REQUESTED',
  // restartSandbox: the worker stops the process and starts it again on the same placement.
  'SANDBOX_RESTART_REQUESTED',
  // Access changes: they end the affected live streams on every replica.
  'MEMBER_REMOVED',
  'TOKEN_REVOKED',
  // A member added, or a member's role changed (data: subject, role, previousRole, lowered).
  'MEMBER_CHANGED',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/**
 * One row of the event log. Its position is (txId, id): the writing transaction's id on Postgres
 * (0 on SQLite, whose single writer hands out ids in commit order) and a database sequence, both
 * decimal strings of 64-bit integers. Readers deliver positions in that order, only below the
 * oldest transaction still running (src/events/reader.ts), so the position is the subscription
 * cursor. References are plain ids, not foreign keys: the log outlives what it talks about.
 */
export class Event {
  [OptionalProps]?:
    | 'id'
    | 'txId'
    | 'createdAt'
    | 'updatedAt'
    | 'tenantId'
    | 'sandboxId'
    | 'workerId'
    | 'messageId'
    | 'leaseId'
    | 'data';
  id!: string;
  /** The writing transaction (Postgres `pg_current_xact_id()`, set by the column default); 0 on SQLite. */
  txId!: string;
  createdAt: Date = new Date();
  updatedAt: Date = new Date();
  type!: EventType;
  tenantId: string | null = null;
  sandboxId: string | null = null;
  workerId: string | null = null;
  messageId: string | null = null;
  leaseId: string | null = null;
  data: Record<string, unknown> = {};
}

export const EventSchema = new EntitySchema<Event>({
  class: Event,
  tableName: 'events',
  indexes: [
    { name: 'events_position_index', properties: ['txId', 'id'] },
    { name: 'events_tenant_index', properties: ['tenantId', 'txId', 'id'] },
    { name: 'events_sandbox_index', properties: ['sandboxId', 'txId', 'id'] },
    { name: 'events_worker_index', properties: ['workerId', 'txId', 'id'] },
    { name: 'events_created_at_index', properties: ['createdAt'] },
  ],
  properties: {
    id: { type: new BigIntType('string'), primary: true, autoincrement: true },
    createdAt: { ...TIMESTAMP, onCreate: () => new Date() },
    updatedAt: { ...TIMESTAMP },
    type: { type: 'string', length: 40 },
    tenantId: { type: 'uuid', nullable: true },
    sandboxId: { type: 'uuid', nullable: true },
    workerId: { type: 'uuid', nullable: true },
    messageId: { type: 'uuid', nullable: true },
    leaseId: { type: 'uuid', nullable: true },
    data: { type: 'json' },
    // The Postgres default (pg_current_xact_id()) lives in its migration; an entity default cannot say it.
    txId: { type: new BigIntType('string'), default: 0, ignoreSchemaChanges: ['default'] },
  },
});
