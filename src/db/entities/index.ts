import { ApiTokenSchema } from './api-token.js';
import { AuditEntrySchema } from './audit-entry.js';
import { BaseEntitySchema } from './base.js';
import { ChannelDeliverySchema, ChannelNonceSchema, ChannelSchema, ChannelThreadSchema } from './channel.js';
import { EnvEntrySchema } from './env-entry.js';
import { EventSchema } from './event.js';
import { EventLogStateSchema } from './event-log-state.js';
import { LeaseSchema } from './lease.js';
import { MemberSchema } from './member.js';
import { MessageSchema } from './message.js';
import { PortAllocationSchema } from './port-allocation.js';
import { QuestionSchema } from './question.js';
import { SandboxSchema } from './sandbox.js';
import { SigningKeySchema } from './signing-key.js';
import { TenantSchema } from './tenant.js';
import { WorkerSchema } from './worker.js';

/** Every entity schema, for the ORM's discovery. */
export const ENTITY_SCHEMAS = [
  BaseEntitySchema,
  TenantSchema,
  MemberSchema,
  WorkerSchema,
  SandboxSchema,
  LeaseSchema,
  PortAllocationSchema,
  EnvEntrySchema,
  MessageSchema,
  QuestionSchema,
  EventSchema,
  EventLogStateSchema,
  AuditEntrySchema,
  ApiTokenSchema,
  SigningKeySchema,
  ChannelSchema,
  ChannelThreadSchema,
  ChannelDeliverySchema,
  ChannelNonceSchema,
];
