import { raw } from '@mikro-orm/core';
import { hasTenantRole } from '../auth/identity.js';
import { Message } from '../db/entities/message.js';
import { ACTIVE_SANDBOX, Sandbox } from '../db/entities/sandbox.js';
import { isUuid, newId } from '../db/ids.js';
import { databaseKindOf, type Em } from '../db/orm.js';
import { appendEvent } from '../events/log.js';
import { audited } from './audit.js';
import { channelRouteOf, enqueueDelivery, OUTBOUND_FLAG } from './channel-outbox.js';
import type { ServiceContext } from './context.js';
import { initialDelivery, UNDELIVERED_STATES } from './delivery-state.js';
import { ForbiddenError, NotFoundError, ValidationError } from './errors.js';
import { requireFencingToken } from './leases.js';
import { lockedRead } from './locks.js';
import { requireUnprunedMessageCursor } from './message-retention.js';
import { type Page, type PositionPageArgs, positionPage } from './pagination.js';
import { sandboxVisibleTo, visibleSandboxesFilter } from './sandboxes.js';

/** The largest message body, in bytes of UTF-8. */
export const MAX_MESSAGE_BYTES = 64 * 1024;
export const DEFAULT_THREAD_ID = 'main';
export const DEFAULT_CHANNEL = 'api';
/** The channel of what the agent posts unless it names one. */
export const AGENT_CHANNEL = 'agent';
const THREAD_PATTERN = /^[A-Za-z0-9._:-]{1,200}$/;
const CHANNEL_PATTERN = /^[a-z0-9_-]{1,50}$/;
/** The columns of a message's log position: its MESSAGE_POSTED event's. */
export const MESSAGE_POSITION = {
  txColumn: 'event_tx_id',
  idColumn: 'event_id',
  txProperty: 'eventTxId',
  idProperty: 'eventId',
};

export interface SendMessageInput {
  sandboxId: string;
  threadId?: string | null;
  channel?: string | null;
  body: string;
}

export interface PostAgentMessageInput {
  sandboxId: string;
  fencingToken: string;
  threadId?: string | null;
  body: string;
}

export interface MarkMessagesReadInput {
  sandboxId: string;
  threadId?: string | null;
  /** Everything up to and including this message; all of the thread when absent. */
  upToMessageId?: string | null;
}

export function validateBody(body: string): string {
  if (body.length === 0) throw new ValidationError('body must not be empty', 'input.body');
  if (Buffer.byteLength(body, 'utf8') > MAX_MESSAGE_BYTES)
    throw new ValidationError(`body must be at most ${MAX_MESSAGE_BYTES} bytes`, 'input.body');
  return body;
}

export function threadOf(threadId: string | null | undefined): string {
  const thread = threadId ?? DEFAULT_THREAD_ID;
  if (!THREAD_PATTERN.test(thread))
    throw new ValidationError(
      'threadId must be 1 to 200 characters of A-Z, a-z, 0-9, ".", "_", ":" and "-"',
      'input.threadId',
    );
  return thread;
}

/** A channel name as sendMessage checks it; `fallback` when none is given. */
export function channelOf(channel: string | null | undefined, fallback: string): string {
  const named = channel ?? fallback;
  if (!CHANNEL_PATTERN.test(named))
    throw new ValidationError('channel must be 1 to 50 characters of a-z, 0-9, "_" and "-"', 'input.channel');
  return named;
}

export class MessageService {
  constructor(private readonly ctx: ServiceContext) {}

  /** A person's message to the agent of a sandbox. */
  async send(input: SendMessageInput): Promise<Message> {
    return audited(
      this.ctx,
      'sendMessage',
      { targetId: input.sandboxId },
      async (em) => {
        const body = validateBody(input.body);
        const threadId = threadOf(input.threadId);
        const channel = channelOf(input.channel, DEFAULT_CHANNEL);
        const sandbox = isUuid(input.sandboxId) ? await em.findOne(Sandbox, input.sandboxId, lockedRead(em)) : null;
        if (!sandbox || !hasTenantRole(this.ctx.identity, sandbox.tenant.id, 'VIEWER'))
          throw new NotFoundError('Sandbox', input.sandboxId);
        if (!hasTenantRole(this.ctx.identity, sandbox.tenant.id, 'OPERATOR'))
          throw new ForbiddenError('sending messages needs the OPERATOR role');
        return this.post(em, sandbox, {
          threadId,
          channel,
          senderKind: 'USER',
          senderId: this.ctx.identity.subject,
          body,
        });
      },
      (m) => ({ tenantId: m.tenant.id, targetId: m.id }),
    );
  }

  /** The agent's message, posted by the worker holding the sandbox's lease (fenced). */
  async postAgent(input: PostAgentMessageInput): Promise<Message> {
    return audited(
      this.ctx,
      'postAgentMessage',
      { targetId: input.sandboxId },
      async (em) => {
        const body = validateBody(input.body);
        const threadId = threadOf(input.threadId);
        const sandbox = await requireFencingToken(
          em,
          this.ctx.identity,
          'message:post',
          input.sandboxId,
          input.fencingToken,
          this.ctx.clock,
        );
        // A thread that came in through a channel is answered on it (channel-outbox.ts), never from here.
        const route = sandbox.channelBound ? await channelRouteOf(em, sandbox.id, threadId) : null;
        const message = await this.post(
          em,
          sandbox,
          {
            threadId,
            channel: route?.name ?? AGENT_CHANNEL,
            senderKind: 'AGENT',
            senderId: this.ctx.identity.workerId as string,
            body,
          },
          route ? { [OUTBOUND_FLAG]: true } : undefined,
        );
        if (route) {
          enqueueDelivery(em, route, message, 'MESSAGE', message.createdAt);
          await em.flush();
        }
        return message;
      },
      (m) => ({ tenantId: m.tenant.id, targetId: m.id }),
    );
  }

  /** Marks a thread's unread messages read (up to a message when given); returns how many. */
  async markRead(input: MarkMessagesReadInput): Promise<{ sandbox: Sandbox; count: number }> {
    return audited(
      this.ctx,
      'markMessagesRead',
      { targetId: input.sandboxId },
      async (em) => {
        const threadId = threadOf(input.threadId);
        const sandbox = await this.visibleSandbox(em, input.sandboxId);
        if (input.upToMessageId !== undefined && input.upToMessageId !== null && !isUuid(input.upToMessageId)) {
          throw new NotFoundError('Message', input.upToMessageId);
        }
        const now = this.ctx.clock.now();
        const unread = { sandbox: sandbox.id, threadId, readAt: null };
        let upTo = {};
        if (input.upToMessageId) {
          // Up to it in the order the thread is read (commit order), not by id.
          const last = await em.findOne(Message, { id: input.upToMessageId, sandbox: sandbox.id });
          if (!last) throw new NotFoundError('Message', input.upToMessageId);
          upTo = {
            $or: [
              { eventTxId: { $lt: last.eventTxId } },
              { eventTxId: last.eventTxId, eventId: { $lte: last.eventId } },
            ],
          };
        }
        const count = await em.nativeUpdate(Message, { ...unread, ...upTo }, { readAt: now, updatedAt: now });
        return { sandbox, count };
      },
      (r) => ({ tenantId: r.sandbox.tenant.id }),
    );
  }

  /**
   * One thread of a sandbox (or all of them) in commit order, so the newest is last and a reader
   * paging on never skips a message that committed late (events/reader.ts explains the horizon).
   */
  async list(sandboxId: string, threadId: string | null | undefined, args: PositionPageArgs): Promise<Page<Message>> {
    const sandbox = await this.visibleSandbox(this.ctx.em, sandboxId);
    const where = { sandbox: sandbox.id, ...(threadId ? { threadId } : {}) };
    const page = await positionPage(this.ctx.em, Message, where, MESSAGE_POSITION, args);
    // After the read: a prune that removed messages after `after` before it has moved the mark.
    if (args.after !== null && args.after !== undefined)
      await requireUnprunedMessageCursor(this.ctx.em, sandbox.tenant.id, args.after);
    return page;
  }

  /**
   * What the sandbox's agent has not received yet (PENDING or DISPATCHED), in commit order: what the
   * worker holding the lease delivers.
   */
  async undelivered(sandbox: Sandbox, args: PositionPageArgs): Promise<Page<Message>> {
    const where = { sandbox: sandbox.id, deliveryState: { $in: [...UNDELIVERED_STATES] } };
    return positionPage(this.ctx.em, Message, where, MESSAGE_POSITION, args);
  }

  async findVisibleByIds(ids: readonly string[]): Promise<Message[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const { sharedReads, identity } = this.ctx;
    if (sharedReads) {
      const messages = await sharedReads.byIds(Message, wanted);
      // The sandbox must be live (not deleted: the shared read applies the soft-delete filter) and visible.
      const sandboxes = await sharedReads.byIds(Sandbox, [...new Set(messages.map((m) => m.sandbox.id))]);
      const visible = new Set(sandboxes.filter((s) => sandboxVisibleTo(identity, s)).map((s) => s.id));
      return messages.filter((m) => visible.has(m.sandbox.id));
    }
    return this.ctx.em.find(Message, {
      id: { $in: wanted },
      sandbox: { $and: [ACTIVE_SANDBOX, visibleSandboxesFilter(this.ctx.identity)] },
    });
  }

  /** The newest message of each sandbox, in two statements whatever the number of sandboxes. */
  async lastOf(sandboxIds: readonly string[]): Promise<Message[]> {
    if (sandboxIds.length === 0) return [];
    const rows: { id: string }[] = await this.ctx.em
      .createQueryBuilder(Message, 'm')
      .select(raw(databaseKindOf(this.ctx.em) === 'postgres' ? 'max(m.id::text) as id' : 'max(m.id) as id'))
      .where({ sandbox: { $in: [...sandboxIds] } })
      .groupBy('m.sandbox_id')
      .execute('all', false);
    if (rows.length === 0) return [];
    return this.ctx.em.find(Message, { id: { $in: rows.map((r) => String(r.id)) } });
  }

  private async visibleSandbox(em: Em, sandboxId: string): Promise<Sandbox> {
    const sandbox = isUuid(sandboxId)
      ? await em.findOne(Sandbox, {
          $and: [{ id: sandboxId }, visibleSandboxesFilter(this.ctx.identity)],
        })
      : null;
    if (!sandbox) throw new NotFoundError('Sandbox', sandboxId);
    return sandbox;
  }

  /** Stores a message with its MESSAGE_POSTED event, in the caller's transaction (questions.ts posts through it too); the caller has checked who may post it. */
  async post(
    em: Em,
    sandbox: Sandbox,
    fields: Pick<Message, 'threadId' | 'channel' | 'senderKind' | 'senderId' | 'body'> &
      Partial<Pick<Message, 'kind' | 'questionId'>>,
    eventData?: Record<string, unknown>,
  ): Promise<Message> {
    const now = this.ctx.clock.now();
    // The event first: the message is stored with the event's log position, its place in commit order.
    const id = newId();
    const event = await appendEvent(
      em,
      {
        type: 'MESSAGE_POSTED',
        tenantId: sandbox.tenant.id,
        sandboxId: sandbox.id,
        workerId: sandbox.worker?.id ?? null,
        messageId: id,
        data: { threadId: fields.threadId, senderKind: fields.senderKind, ...eventData },
      },
      now,
    );
    const message = em.create(Message, {
      ...fields,
      ...initialDelivery(fields.senderKind, sandbox),
      id,
      sandbox: sandbox.id,
      tenant: sandbox.tenant.id,
      createdAt: now,
      eventTxId: event.txId,
      eventId: event.id,
    });
    await em.flush();
    return message;
  }
}
