import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { SecretKeyUnavailableError } from '../auth/secret-keys.js';
import { Channel, ChannelNonce, ChannelThread } from '../db/entities/channel.js';
import { Message } from '../db/entities/message.js';
import { Question } from '../db/entities/question.js';
import { Sandbox } from '../db/entities/sandbox.js';
import { isUuid } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { audited } from './audit.js';
import { openChannelSecret, SIGNATURE_TOLERANCE_SECONDS, signatureMatches } from './channel-signing.js';
import type { ServiceContext } from './context.js';
import { AuthenticationError, NotFoundError, ValidationError } from './errors.js';
import { MessageService, threadOf, validateBody } from './messages.js';
import { QuestionService } from './questions.js';

const NONCE_PATTERN = /^[A-Za-z0-9._:-]{8,200}$/;
const TIMESTAMP_PATTERN = /^\d{1,12}$/;
/** A sender fits `Question.answeredBy` (300) behind `channel:<uuid>:` (45 characters). */
export const SENDER_MAX_LENGTH = 255;

/** An inbound call as the hook received it: the headers that sign it and the raw body. */
export interface InboundCall {
  timestamp: string | null;
  nonce: string | null;
  signature: string | null;
  body: string;
}

interface InboundMessage {
  kind: 'message';
  threadId: string;
  sandboxId: string | null;
  body: string;
  sender: string;
}

/** An answer to an agent's question asked on the channel's thread. */
interface InboundAnswer {
  kind: 'answer';
  threadId: string;
  questionId: string;
  choice: string | null;
  text: string | null;
  sender: string;
}

/** What an accepted call posted: the message, and for an answer the question it answered. */
export interface InboundResult {
  message: Message;
  question: Question | null;
}

/** Who answered a question through a channel: the channel and the person the bridge names. */
export function channelAnswerer(channelId: string, sender: string): string {
  return `channel:${channelId}:${sender}`;
}

/**
 * A person's message arriving through a channel's inbound hook. The call is verified before
 * anything is written: the HMAC over timestamp, nonce and body with the channel's secret (compared
 * in constant time), the timestamp within SIGNATURE_TOLERANCE_SECONDS of now, the nonce never seen
 * on this channel. Then, in one transaction, the nonce is kept (until its timestamp leaves the
 * window; expired ones are pruned there) and the message is posted into the thread: on the
 * sandbox the body names, or the one the thread already talks to through this channel. A call
 * naming a `questionId` answers an agent's question asked on that thread instead, through the
 * questions service's answer path (one answer wins; the nonce rolls back with a refused answer).
 */
export class ChannelInboundService {
  constructor(private readonly ctx: ServiceContext) {}

  async receive(channelId: string, call: InboundCall): Promise<InboundResult> {
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
    if (!signatureMatches(this.secretOf(channel), [timestamp, nonce, call.body], signature))
      throw new AuthenticationError('the signature does not match');
    if (await this.ctx.em.count(ChannelNonce, { channel: channel.id, nonce }))
      throw new AuthenticationError('the nonce was already used');
    const input = parseInbound(call.body);
    const sentAtMs = sentAt * 1000;

    if (input.kind === 'answer')
      return audited(
        this.ctx,
        'answerQuestion',
        { tenantId: channel.tenant.id, targetId: input.questionId },
        async (em) => {
          await this.keepNonce(em, channel, nonce, sentAtMs);
          const question = await this.questionOf(em, channel, input);
          const answered = await new QuestionService(this.ctx).answerIn(em, question, input, {
            answeredBy: channelAnswerer(channel.id, input.sender),
            senderId: input.sender,
          });
          return { message: answered.answer, question: answered.question };
        },
        (result) => ({ targetId: result.question?.id ?? null }),
      );

    return audited(
      this.ctx,
      'receiveChannelMessage',
      { tenantId: channel.tenant.id, targetId: channel.id },
      async (em) => {
        await this.keepNonce(em, channel, nonce, sentAtMs);
        const sandbox = await this.sandboxOf(em, channel, input);
        const bound = await em.findOne(ChannelThread, { sandbox: sandbox.id, threadId: input.threadId });
        if (!bound) {
          em.create(ChannelThread, { channel: channel.id, sandbox: sandbox.id, threadId: input.threadId });
          // Written natively: the sandbox's updatedAt must not move (the sweeper reads it, see sweeper.ts).
          if (!sandbox.channelBound) await em.nativeUpdate(Sandbox, { id: sandbox.id }, { channelBound: true });
        }
        const message = await new MessageService(this.ctx).post(em, sandbox, {
          threadId: input.threadId,
          channel: channel.name,
          senderKind: 'USER',
          senderId: input.sender,
          body: input.body,
        });
        return { message, question: null };
      },
      (result) => ({ targetId: result.message.id }),
    );
  }

  /**
   * The channel's secret, opened with the server's keyring. A sealed secret that does not open for
   * this channel (copied from another row, or altered) verifies nothing: the call is unauthorized.
   * A key this server lacks is its own fault, not the caller's: SecretKeyUnavailableError (503),
   * naming the key id.
   */
  private secretOf(channel: Channel): string {
    try {
      return openChannelSecret(this.ctx.secrets, channel);
    } catch (err) {
      if (err instanceof SecretKeyUnavailableError && err.problem === 'unverified') {
        this.ctx.logger?.warn(
          { channelId: channel.id, keyId: err.keyId },
          "a channel's stored secret does not decrypt for it: inbound calls are refused",
        );
        throw new AuthenticationError('the signature does not match');
      }
      throw err;
    }
  }

  /** Keeps the call's nonce (until its timestamp leaves the window) in the call's transaction; prunes expired ones. */
  private async keepNonce(em: Em, channel: Channel, nonce: string, sentAtMs: number): Promise<void> {
    const now = this.ctx.clock.now();
    await em.nativeDelete(ChannelNonce, { channel: channel.id, expiresAt: { $lt: now } });
    em.create(ChannelNonce, {
      channel: channel.id,
      nonce,
      expiresAt: new Date(sentAtMs + SIGNATURE_TOLERANCE_SECONDS * 1000),
      createdAt: now,
    });
    try {
      await em.flush();
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException)
        throw new AuthenticationError('the nonce was already used');
      throw err;
    }
  }

  /**
   * The question an answer names: of a sandbox of the channel's tenant, asked on the thread the call
   * names, which this channel binds to that sandbox. Anything else is not found (nothing tells
   * whether a question of another tenant or thread exists).
   */
  private async questionOf(em: Em, channel: Channel, input: InboundAnswer): Promise<Question> {
    const question = isUuid(input.questionId)
      ? await em.findOne(Question, { id: input.questionId, tenant: channel.tenant.id })
      : null;
    const asked = question ? await em.findOne(Message, { id: question.message.id }) : null;
    const bound =
      question && asked?.threadId === input.threadId
        ? await em.count(ChannelThread, { channel: channel.id, sandbox: question.sandbox.id, threadId: input.threadId })
        : 0;
    if (!question || bound === 0) throw new NotFoundError('Question', input.questionId);
    return question;
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
function parseInbound(raw: string): InboundMessage | InboundAnswer {
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
  const sender = text('sender', true) as string;
  if (sender.length === 0 || sender.length > SENDER_MAX_LENGTH)
    throw new ValidationError(`sender must be 1 to ${SENDER_MAX_LENGTH} characters`, 'sender');
  const questionId = text('questionId', false);
  if (questionId !== null) {
    if (fields.body !== undefined) throw new ValidationError('an answer carries choice or text, not body', 'body');
    if (fields.sandboxId !== undefined)
      throw new ValidationError("an answer goes to the question's sandbox: leave sandboxId out", 'sandboxId');
    // Exactly one of the two, and whether it fits the question, is checked by the questions service.
    return {
      kind: 'answer',
      threadId: threadOf(text('threadId', true)),
      questionId,
      choice: text('choice', false),
      text: text('text', false),
      sender,
    };
  }
  if (fields.choice !== undefined || fields.text !== undefined)
    throw new ValidationError('choice and text answer a question: questionId is required', 'questionId');
  return {
    kind: 'message',
    threadId: threadOf(text('threadId', true)),
    sandboxId: text('sandboxId', false),
    body: validateBody(text('body', true) as string),
    sender,
  };
}
