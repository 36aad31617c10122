import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, TIMESTAMP } from './base.js';
import { Message } from './message.js';
import { Sandbox } from './sandbox.js';
import { Tenant } from './tenant.js';

export const QUESTION_STATUSES = ['OPEN', 'ANSWERED', 'CANCELLED'] as const;
export type QuestionStatus = (typeof QUESTION_STATUSES)[number];

/**
 * An agent's question to people (src/domain/questions.ts): asked by a QUESTION message, answered
 * at most once by an ANSWER message in the same thread and channel.
 */
export class Question extends BaseEntity<
  'status' | 'answerMessage' | 'answeredBy' | 'answeredAt' | 'answerChoice' | 'answerText' | 'allowFreeText'
> {
  sandbox!: Sandbox;
  /** Denormalised from the sandbox so tenant filters need no join. */
  tenant!: Tenant;
  /** The QUESTION message that asked it. */
  message!: Message;
  prompt!: string;
  options!: string[];
  allowFreeText = false;
  status: QuestionStatus = 'OPEN';
  answerMessage: Message | null = null;
  /** The subject of the person who answered. */
  answeredBy: string | null = null;
  answeredAt: Date | null = null;
  /** One of `options`, when the answer was a choice… */
  answerChoice: string | null = null;
  /** …or the free text, when it was text. */
  answerText: string | null = null;
}

export const QuestionSchema = new EntitySchema<Question, BaseEntity<string>>({
  class: Question,
  tableName: 'questions',
  extends: BaseEntitySchema,
  indexes: [{ name: 'questions_sandbox_status_index', properties: ['sandbox', 'status'] }],
  properties: {
    sandbox: { kind: 'm:1', entity: () => Sandbox, deleteRule: 'cascade' },
    tenant: { kind: 'm:1', entity: () => Tenant, deleteRule: 'cascade' },
    message: { kind: 'm:1', entity: () => Message, deleteRule: 'cascade' },
    prompt: { type: 'text' },
    options: { type: 'json' },
    allowFreeText: { type: 'boolean', default: false },
    status: { type: 'string', length: 20, default: 'OPEN' },
    answerMessage: { kind: 'm:1', entity: () => Message, nullable: true, deleteRule: 'set null' },
    answeredBy: { type: 'string', length: 300, nullable: true },
    answeredAt: { ...TIMESTAMP, nullable: true },
    answerChoice: { type: 'string', length: 200, nullable: true },
    answerText: { type: 'text', nullable: true },
  },
});
