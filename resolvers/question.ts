import { MESSAGE_KINDS, type Message } from '../src/db/entities/message.js';
import { QUESTION_STATUSES, Question } from '../src/db/entities/question.js';
import type { Sandbox } from '../src/db/entities/sandbox.js';
import {
  ForbiddenError,
  NotFoundError,
  QuestionClosedError,
  StaleFencingTokenError,
  ValidationError,
} from '../src/domain/errors.js';
import { QUESTION_MAX_OPTIONS, QUESTION_OPTION_MAX_LENGTH } from '../src/domain/input-limits.js';
import { builder, mutationResult } from './builder.js';
import { localIdOf } from './ids.js';
import { MessageRef } from './message.js';
import { SandboxRef } from './sandbox.js';

export const MessageKindEnum = builder.enumType('MessageKind', { values: MESSAGE_KINDS });
export const QuestionStatusEnum = builder.enumType('QuestionStatus', { values: QUESTION_STATUSES });

export const QuestionRef = builder.loadableNode('Question', {
  description: "An agent's question to people: a QUESTION message, answered at most once by an ANSWER message.",
  id: { resolve: (question: Question) => question.id },
  isTypeOf: (value) => value instanceof Question,
  load: (ids: string[], ctx) => ctx.services.questions.findVisibleByIds(ids),
  sort: (question) => question.id,
  fields: (t) => ({
    sandbox: t.field({ type: SandboxRef, resolve: (q) => q.sandbox.id }),
    prompt: t.exposeString('prompt'),
    options: t.exposeStringList('options', { description: 'What a person may choose from (may be empty).' }),
    allowFreeText: t.exposeBoolean('allowFreeText', { description: 'Whether a person may answer in words.' }),
    status: t.field({ type: QuestionStatusEnum, resolve: (q) => q.status }),
    message: t.field({
      type: MessageRef,
      description: 'The QUESTION message that asked it.',
      resolve: (q) => q.message.id,
    }),
    answer: t.field({
      type: MessageRef,
      nullable: true,
      description: 'The ANSWER message, once answered.',
      resolve: (q) => q.answerMessage?.id ?? null,
    }),
    answerChoice: t.exposeString('answerChoice', { nullable: true, description: 'The option chosen, if any.' }),
    answerText: t.exposeString('answerText', { nullable: true, description: 'The free text given, if any.' }),
    answeredBy: t.exposeString('answeredBy', {
      nullable: true,
      description: 'Who answered: a subject, or `channel:<channel id>:<sender>` for an answer through a chat channel.',
    }),
    answeredAt: t.expose('answeredAt', { type: 'DateTime', nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

builder.objectFields(MessageRef, (t) => ({
  kind: t.field({ type: MessageKindEnum, resolve: (m: Message) => m.kind }),
  question: t.field({
    type: QuestionRef,
    nullable: true,
    description: 'The question a QUESTION message asks or an ANSWER message answers.',
    resolve: (m: Message) => m.questionId,
  }),
}));

builder.objectFields(SandboxRef, (t) => ({
  openQuestions: t.loadableList({
    type: QuestionRef,
    description: "The agent's questions waiting for an answer, oldest first.",
    load: async (sandboxIds: string[], ctx) => {
      const open = await ctx.services.questions.openOf(sandboxIds);
      return sandboxIds.map((id) => open.filter((q) => q.sandbox.id === id));
    },
    resolve: (sandbox: Sandbox) => sandbox.id,
  }),
}));

const PostAgentQuestionInput = builder.inputType('PostAgentQuestionInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    fencingToken: t.string({ required: true }),
    prompt: t.string({ required: true }),
    options: t.stringList({
      required: true,
      description: `At most ${QUESTION_MAX_OPTIONS}, each 1 to ${QUESTION_OPTION_MAX_LENGTH} characters, all different; may be empty when allowFreeText.`,
    }),
    allowFreeText: t.boolean({ required: false, description: 'Default false.' }),
    threadId: t.string({ required: false, description: 'Default "main".' }),
    channel: t.string({ required: false, description: 'Default "agent".' }),
  }),
});

const AnswerQuestionInput = builder.inputType('AnswerQuestionInput', {
  description: 'Exactly one of `choice` and `text`.',
  fields: (t) => ({
    questionId: t.id({ required: true }),
    choice: t.string({ required: false, description: "One of the question's options." }),
    text: t.string({ required: false, description: 'Free text, when the question allows it.' }),
  }),
});

const questionResult = mutationResult(
  'Question',
  [NotFoundError, ForbiddenError, ValidationError, StaleFencingTokenError, QuestionClosedError],
  { field: 'question' },
);

builder.mutationFields((t) => ({
  postAgentQuestion: t.field({
    type: QuestionRef,
    errors: questionResult,
    description:
      "The worker holding the lease (scope message:post) asks people a question for the agent, with its fencing token. The agent's phase becomes WAITING_FOR_INPUT.",
    args: { input: t.arg({ type: PostAgentQuestionInput, required: true }) },
    authScopes: { workerScope: 'message:post' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.questions.post({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        fencingToken: input.fencingToken,
        prompt: input.prompt,
        options: input.options,
        allowFreeText: input.allowFreeText,
        threadId: input.threadId,
        channel: input.channel,
      }),
  }),
  answerQuestion: t.field({
    type: QuestionRef,
    errors: questionResult,
    description:
      'A person (tenant OPERATOR) answers an open question; exactly one answer wins, later ones get QuestionClosedError. The answer is an ANSWER message in the same thread and channel.',
    args: { input: t.arg({ type: AnswerQuestionInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.questions.answer({
        questionId: localIdOf(input.questionId, 'Question', 'input.questionId'),
        choice: input.choice,
        text: input.text,
      }),
  }),
}));
