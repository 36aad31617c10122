import { hasTenantRole } from '../auth/identity.js';
import { Message } from '../db/entities/message.js';
import { Question } from '../db/entities/question.js';
import { ACTIVE_SANDBOX, Sandbox } from '../db/entities/sandbox.js';
import { isUuid, newId } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { findRows } from '../db/rows.js';
import { audited } from './audit.js';
import { channelRouteOf, enqueueDelivery, OUTBOUND_FLAG } from './channel-outbox.js';
import type { ServiceContext } from './context.js';
import { ForbiddenError, NotFoundError, QuestionClosedError, ValidationError } from './errors.js';
import { QUESTION_MAX_OPTIONS, QUESTION_OPTION_MAX_LENGTH, QUESTION_PROMPT_MAX_LENGTH } from './input-limits.js';
import { requireFencingToken } from './leases.js';
import { lockedRead } from './locks.js';
import { AGENT_CHANNEL, channelOf, MAX_MESSAGE_BYTES, MessageService, threadOf } from './messages.js';
import { recordEvent } from './outbox.js';
import { AGENT_ACTIVITY_MAX_LENGTH, sandboxVisibleTo, visibleSandboxesFilter } from './sandboxes.js';

export interface PostAgentQuestionInput {
  sandboxId: string;
  fencingToken: string;
  prompt: string;
  options?: readonly string[] | null;
  allowFreeText?: boolean | null;
  threadId?: string | null;
  channel?: string | null;
}

export interface AnswerQuestionInput {
  questionId: string;
  /** One of the question's options… */
  choice?: string | null;
  /** …or free text, when the question allows it. Exactly one of the two. */
  text?: string | null;
}

/** The agent's phase while one of its questions is open, and once the last one is answered. */
const WAITING = 'WAITING_FOR_INPUT';
const RESUMED = 'THINKING';

function validatePrompt(prompt: string): string {
  const trimmed = prompt.trim();
  if (trimmed.length === 0 || trimmed.length > QUESTION_PROMPT_MAX_LENGTH)
    throw new ValidationError(`prompt must be 1 to ${QUESTION_PROMPT_MAX_LENGTH} characters`, 'input.prompt');
  return trimmed;
}

function validateOptions(options: readonly string[], allowFreeText: boolean): string[] {
  if (options.length > QUESTION_MAX_OPTIONS)
    throw new ValidationError(`at most ${QUESTION_MAX_OPTIONS} options`, 'input.options');
  const trimmed = options.map((o) => o.trim());
  const bad = trimmed.findIndex((o) => o.length === 0 || o.length > QUESTION_OPTION_MAX_LENGTH);
  if (bad >= 0)
    throw new ValidationError(
      `an option must be 1 to ${QUESTION_OPTION_MAX_LENGTH} characters`,
      `input.options.${bad}`,
    );
  if (new Set(trimmed).size !== trimmed.length) throw new ValidationError('options must differ', 'input.options');
  if (trimmed.length === 0 && !allowFreeText)
    throw new ValidationError('a question needs at least one option or allowFreeText', 'input.options');
  return trimmed;
}

/**
 * Questions an agent asks people, and their answers. A question is a QUESTION message plus a
 * `questions` row; the one answer that wins (compare-and-swap on the row's status) is an ANSWER
 * message in the same thread and channel, which reaches the agent like any person's message.
 * While a sandbox has an open question its agent's phase is WAITING_FOR_INPUT, set in the
 * question's transaction; answering the last one moves it back to THINKING. A sandbox that stops,
 * fails, is lost or deleted cancels its open questions (question-lifecycle.ts).
 */
export class QuestionService {
  constructor(private readonly ctx: ServiceContext) {}

  /** The agent's question, posted by the worker holding the sandbox's lease (fenced). */
  async post(input: PostAgentQuestionInput): Promise<Question> {
    return audited(
      this.ctx,
      'postAgentQuestion',
      { targetId: input.sandboxId },
      async (em) => {
        const prompt = validatePrompt(input.prompt);
        const allowFreeText = input.allowFreeText ?? false;
        const options = validateOptions(input.options ?? [], allowFreeText);
        const threadId = threadOf(input.threadId);
        const channel = channelOf(input.channel, AGENT_CHANNEL);
        const sandbox = await requireFencingToken(
          em,
          this.ctx.identity,
          'message:post',
          input.sandboxId,
          input.fencingToken,
          this.ctx.clock,
        );
        const now = this.ctx.clock.now();
        const questionId = newId();
        // On a thread that came in through a channel the question goes out on it, like postAgentMessage.
        const route = sandbox.channelBound ? await channelRouteOf(em, sandbox.id, threadId) : null;
        const message = await new MessageService(this.ctx).post(
          em,
          sandbox,
          {
            threadId,
            channel: route?.name ?? channel,
            senderKind: 'AGENT',
            senderId: this.ctx.identity.workerId as string,
            body: prompt,
            kind: 'QUESTION',
            questionId,
          },
          route ? { [OUTBOUND_FLAG]: true } : undefined,
        );
        if (route) enqueueDelivery(em, route, message, 'QUESTION', now, { questionId, options, allowFreeText });
        const question = em.create(Question, {
          id: questionId,
          sandbox: sandbox.id,
          tenant: sandbox.tenant.id,
          message: message.id,
          prompt,
          options,
          allowFreeText,
          createdAt: now,
          updatedAt: now,
        });
        this.setAgentPhase(em, sandbox, WAITING, prompt, now);
        await em.flush();
        return question;
      },
      (q) => ({ tenantId: q.tenant.id, targetId: q.id }),
    );
  }

  /** A person's answer: exactly one answer per question wins, the others get QuestionClosedError. */
  async answer(input: AnswerQuestionInput): Promise<Question> {
    return audited(
      this.ctx,
      'answerQuestion',
      { targetId: input.questionId },
      async (em) => {
        const found = isUuid(input.questionId) ? await em.findOne(Question, input.questionId) : null;
        if (!found || !hasTenantRole(this.ctx.identity, found.tenant.id, 'VIEWER'))
          throw new NotFoundError('Question', input.questionId);
        if (!hasTenantRole(this.ctx.identity, found.tenant.id, 'OPERATOR'))
          throw new ForbiddenError('answering questions needs the OPERATOR role');
        const subject = this.ctx.identity.subject;
        // Answered here (dashboard, SDK) while the question went out on a chat channel: the answer
        // goes out on it too, so nobody on the channel answers it again.
        const { question } = await this.answerIn(em, found, input, {
          answeredBy: subject,
          senderId: subject,
          sendOut: true,
        });
        return question;
      },
      (q) => ({ tenantId: q.tenant.id, targetId: q.id }),
    );
  }

  /**
   * Answers `found` in the caller's transaction: the path answerQuestion and a channel's inbound
   * hook (channel-inbound.ts) share. The caller has checked who may answer; `answeredBy` is kept
   * on the question, `senderId` is the ANSWER message's sender. With `sendOut`, an answer on a
   * thread bound to a chat channel is queued for that channel (not for answers that came from it).
   */
  async answerIn(
    em: Em,
    found: Question,
    input: Pick<AnswerQuestionInput, 'choice' | 'text'>,
    by: { answeredBy: string; senderId: string; sendOut?: boolean },
  ): Promise<{ question: Question; answer: Message }> {
    const { choice, text } = this.validateAnswer(found, input);
    // Answers to one sandbox's questions queue up behind each other (Postgres), so "was that the
    // last open one?" below sees every answer committed before it.
    const sandbox = await em.findOne(Sandbox, found.sandbox.id, lockedRead(em));
    if (!sandbox) throw new NotFoundError('Question', found.id);
    const question = await em.findOne(Question, found.id, { refresh: true });
    if (!question) throw new NotFoundError('Question', found.id);
    if (question.status !== 'OPEN') throw new QuestionClosedError(found.id, question.status);
    const now = this.ctx.clock.now();
    const asked = await em.findOneOrFail(Message, question.message.id);
    const route = by.sendOut && sandbox.channelBound ? await channelRouteOf(em, sandbox.id, asked.threadId) : null;
    const answer = await new MessageService(this.ctx).post(
      em,
      sandbox,
      {
        threadId: asked.threadId,
        channel: asked.channel,
        senderKind: 'USER',
        senderId: by.senderId,
        body: choice ?? (text as string),
        kind: 'ANSWER',
        questionId: question.id,
      },
      route ? { [OUTBOUND_FLAG]: true } : undefined,
    );
    // The compare-and-swap is what guarantees one winner: whoever changes the row first.
    const won = await em.nativeUpdate(
      Question,
      { id: question.id, status: 'OPEN' },
      {
        status: 'ANSWERED',
        answerMessage: answer.id,
        answeredBy: by.answeredBy,
        answeredAt: now,
        answerChoice: choice,
        answerText: text,
        updatedAt: now,
      },
    );
    if (won !== 1) {
      const current = await em.findOne(Question, question.id, { refresh: true });
      throw new QuestionClosedError(found.id, current?.status ?? 'ANSWERED');
    }
    if (route) {
      enqueueDelivery(em, route, answer, 'ANSWER', now, { questionId: question.id, choice, text });
      await em.flush();
    }
    const stillOpen = await em.count(Question, { sandbox: sandbox.id, status: 'OPEN' });
    if (stillOpen === 0 && sandbox.agentPhase === WAITING) {
      this.setAgentPhase(em, sandbox, RESUMED, null, now);
      await em.flush();
    }
    const answered = await em.findOne(Question, question.id, { refresh: true });
    if (!answered) throw new NotFoundError('Question', found.id);
    return { question: answered, answer };
  }

  /** Open questions of the given sandboxes, oldest first (one statement for any number). */
  async openOf(sandboxIds: readonly string[]): Promise<Question[]> {
    if (sandboxIds.length === 0) return [];
    return findRows(
      this.ctx.em,
      Question,
      { sandbox: { $in: [...sandboxIds] }, status: 'OPEN' },
      { orderBy: { createdAt: 'asc', id: 'asc' } },
    );
  }

  async findVisibleByIds(ids: readonly string[]): Promise<Question[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const { sharedReads, identity } = this.ctx;
    if (sharedReads) {
      const questions = await sharedReads.byIds(Question, wanted);
      const sandboxes = await sharedReads.byIds(Sandbox, [...new Set(questions.map((q) => q.sandbox.id))]);
      const visible = new Set(sandboxes.filter((s) => sandboxVisibleTo(identity, s)).map((s) => s.id));
      return questions.filter((q) => visible.has(q.sandbox.id));
    }
    return findRows(this.ctx.em, Question, {
      id: { $in: wanted },
      sandbox: { $and: [ACTIVE_SANDBOX, visibleSandboxesFilter(identity)] },
    });
  }

  private validateAnswer(
    question: Question,
    input: Pick<AnswerQuestionInput, 'choice' | 'text'>,
  ): { choice: string | null; text: string | null } {
    const hasChoice = input.choice !== undefined && input.choice !== null;
    const hasText = input.text !== undefined && input.text !== null;
    if (hasChoice === hasText) throw new ValidationError('give exactly one of choice and text', 'input');
    if (hasChoice) {
      const choice = input.choice as string;
      if (!question.options.includes(choice))
        throw new ValidationError(`choice must be one of: ${question.options.join(', ')}`, 'input.choice');
      return { choice, text: null };
    }
    if (!question.allowFreeText) throw new ValidationError('this question takes one of its options only', 'input.text');
    const text = (input.text as string).trim();
    if (text.length === 0 || Buffer.byteLength(text, 'utf8') > MAX_MESSAGE_BYTES)
      throw new ValidationError(`text must be 1 to ${MAX_MESSAGE_BYTES} bytes`, 'input.text');
    return { choice: null, text };
  }

  private setAgentPhase(
    em: Em,
    sandbox: Sandbox,
    phase: typeof WAITING | typeof RESUMED,
    activity: string | null,
    now: Date,
  ) {
    const from = sandbox.agentPhase;
    sandbox.agentPhase = phase;
    sandbox.agentActivity = activity ? activity.slice(0, AGENT_ACTIVITY_MAX_LENGTH) : null;
    sandbox.agentUpdatedAt = now;
    recordEvent(
      em,
      {
        type: 'AGENT_STATUS_CHANGED',
        tenantId: sandbox.tenant.id,
        sandboxId: sandbox.id,
        workerId: sandbox.worker?.id ?? null,
        data: { from, to: phase },
      },
      now,
    );
  }
}
