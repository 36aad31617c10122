import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { Channel, ChannelNonce, ChannelThread } from '../db/entities/channel.js';
import type { Message } from '../db/entities/message.js';
import { Sandbox } from '../db/entities/sandbox.js';
import { isUuid } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { audited } from './audit.js';
import { openChannelSecret, SIGNATURE_TOLERANCE_SECONDS, signatureMatches } from './channel-signing.js';
import type { ServiceContext } from './context.js';
import { AuthenticationError, NotFoundError, ValidationError } from './errors.js';
import { MessageService, threadOf, validateBody } from './messages.js';

const NONCE_PATTERN = /^[A-Za-z0-9._:-]{8,200}$/;
const TIMESTAMP_PATTERN = /^\d{1,12}$/;
export const SENDER_MAX_LENGTH = 300;

/** An inbound call as the hook received it: the headers that sign it and the raw body. */
export interface InboundCall {
  timestamp: string | null;
  nonce: string | null;
  signature: string | null;
  body: string;
}

interface InboundMessage {
  threadId: string;
  sandboxId: string | null;
  body: string;
  sender: string;
}

/**
 * A person's message arriving through a channel's inbound hook. The call is verified before
 * anything is written: the HMAC over timestamp, nonce and body with the channel's secret (compared
 * in constant time), the timestamp within SIGNATURE_TOLERANCE_SECONDS of now, the nonce never seen
 * on this channel. Then, in one transaction, the nonce is kept (until its timestamp leaves the
 * window; expired ones are pruned there) and the message is posted into the thread: on the
 * sandbox the body names, or the one the thread already talks to through this channel.
 */
export class ChannelInboundService {
  constructor(private readonly ctx: ServiceContext) {}

  async receive(channelId: string, call: InboundCall): Promise<Message> {
    const channel = isUuid(channelId) ? await this.ctx.em.findOne(Channel, { id: channelId }) : null;
    if (!channel) throw new NotFoundError('Channel', channelId);
    const { timestamp, nonce, signature } = call;
    if (!timestamp || !nonce || !signature)
      throw new AuthenticationError('the timestamp, nonce and signature headers are required');
    if (!TIMESTAMP_PATTERN.test(timestamp)) throw new AuthenticationError('the timestamp is not a number of seconds');
    if (!NONCE_PATTERN.test(nonce))
      throw new AuthenticationError('the nonce must be 8 to 200 characters of A-Za-z0-9._:-');
    const nowMs = this.ctx.clock.now().getTime();
    const sentAt = Number(timestamp);
    if (Math.abs(nowMs / 1000 - sentAt) > SIGNATURE_TOLERANCE_SECONDS)
      throw new AuthenticationError('the timestamp is outside the accepted window');
    if (!signatureMatches(openChannelSecret(channel.secret), [timestamp, nonce, call.body], signature))
      throw new AuthenticationError('the signature does not match');
    if (await this.ctx.em.count(ChannelNonce, { channel: channel.id, nonce }))
      throw new AuthenticationError('the nonce was already used');
    const input = parseInbound(call.body);

    return audited(
      this.ctx,
      'receiveChannelMessage',
      { tenantId: channel.tenant.id, targetId: channel.id },
      async (em) => {
        const now = this.ctx.clock.now();
        await em.nativeDelete(ChannelNonce, { channel: channel.id, expiresAt: { $lt: now } });
        em.create(ChannelNonce, {
          channel: channel.id,
          nonce,
          expiresAt: new Date((sentAt + SIGNATURE_TOLERANCE_SECONDS) * 1000),
          createdAt: now,
        });
        try {
          await em.flush();
        } catch (err) {
          if (err instanceof UniqueConstraintViolationException)
            throw new AuthenticationError('the nonce was already used');
          throw err;
        }
        const sandbox = await this.sandboxOf(em, channel, input);
        const bound = await em.findOne(ChannelThread, { sandbox: sandbox.id, threadId: input.threadId });
        if (!bound) {
          em.create(ChannelThread, { channel: channel.id, sandbox: sandbox.id, threadId: input.threadId });
          // Written natively: the sandbox's updatedAt must not move (the sweeper reads it, see sweeper.ts).
          if (!sandbox.channelBound) await em.nativeUpdate(Sandbox, { id: sandbox.id }, { channelBound: true });
        }
        return new MessageService(this.ctx).post(em, sandbox, {
          threadId: input.threadId,
          channel: channel.name,
          senderKind: 'USER',
          senderId: input.sender,
          body: input.body,
        });
      },
      (message) => ({ targetId: message.id }),
    );
  }

  /** The sandbox the body names (of the channel's tenant), else the one the thread talks to on this channel. */
  private async sandboxOf(em: Em, channel: Channel, input: InboundMessage): Promise<Sandbox> {
    if (input.sandboxId !== null) {
      const sandbox = isUuid(input.sandboxId)
        ? await em.findOne(Sandbox, { id: input.sandboxId, tenant: channel.tenant.id })
        : null;
      if (!sandbox) throw new NotFoundError('Sandbox', input.sandboxId);
      return sandbox;
    }
    const [bound] = await em.find(
      ChannelThread,
      { channel: channel.id, threadId: input.threadId },
      { orderBy: { createdAt: 'desc' }, limit: 1 },
    );
    const sandbox = bound ? await em.findOne(Sandbox, { id: bound.sandbox.id }) : null;
    if (!sandbox) throw new NotFoundError('Sandbox', `for thread ${input.threadId} (name the sandbox with sandboxId)`);
    return sandbox;
  }
}

/** The body's JSON, validated; a ValidationError names the field at fault. */
function parseInbound(raw: string): InboundMessage {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new ValidationError('the body must be JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new ValidationError('the body must be a JSON object');
  const fields = value as Record<string, unknown>;
  const text = (name: string, required: boolean): string | null => {
    const v = fields[name];
    if (v === undefined || v === null) {
      if (required) throw new ValidationError(`${name} is required`, name);
      return null;
    }
    if (typeof v !== 'string') throw new ValidationError(`${name} must be a string`, name);
    return v;
  };
  // Answers to agents' questions come through here once the questions service exists; until then
  // a call carrying one is refused whole rather than posted as a plain message.
  if (fields.questionId !== undefined || fields.choice !== undefined || fields.text !== undefined)
    throw new ValidationError('answering questions through a channel is not supported by this server', 'questionId');
  const sender = text('sender', true) as string;
  if (sender.length === 0 || sender.length > SENDER_MAX_LENGTH)
    throw new ValidationError(`sender must be 1 to ${SENDER_MAX_LENGTH} characters`, 'sender');
  return {
    threadId: threadOf(text('threadId', true)),
    sandboxId: text('sandboxId', false),
    body: validateBody(text('body', true) as string),
    sender,
  };
}
