import { Message, SENDER_KINDS } from '../src/db/entities/message.js';
import type { Sandbox } from '../src/db/entities/sandbox.js';
import { ForbiddenError, NotFoundError, StaleFencingTokenError, ValidationError } from '../src/domain/errors.js';
import { builder } from './builder.js';
import { eventStream } from './event-stream.js';
import { localIdOf } from './ids.js';
import { type ConnectionResult, decodeCursor, toConnection } from './pagination.js';
import { SandboxRef } from './sandbox.js';

export const SenderKindEnum = builder.enumType('SenderKind', { values: SENDER_KINDS });

export const MessageRef = builder.loadableNode('Message', {
  id: { resolve: (message: Message) => message.id },
  isTypeOf: (value) => value instanceof Message,
  load: (ids: string[], ctx) => ctx.services.messages.findVisibleByIds(ids),
  sort: (message) => message.id,
  fields: (t) => ({
    sandbox: t.field({ type: SandboxRef, resolve: (m) => m.sandbox.id }),
    threadId: t.exposeString('threadId', { description: '"main" unless given.' }),
    channel: t.exposeString('channel', { description: '"web", "cli", "api", ...' }),
    senderKind: t.field({ type: SenderKindEnum, resolve: (m) => m.senderKind }),
    senderId: t.exposeString('senderId'),
    body: t.exposeString('body', { description: 'At most 64 KiB.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    readAt: t.expose('readAt', { type: 'DateTime', nullable: true }),
    eventCursor: t.string({
      nullable: true,
      description:
        'Set on messages delivered by messageAdded: the event cursor to pass as `after` to resume after this message.',
      resolve: (m) => deliveredWith.get(m) ?? null,
    }),
  }),
});

/** The event cursor each message delivered by messageAdded came with (entities are fresh per event). */
const deliveredWith = new WeakMap<Message, string>();

export const MessageConnection = builder.connectionObject({
  type: MessageRef,
  name: 'MessageConnection',
  fields: (t) => ({
    totalCount: t.int({ resolve: (conn) => (conn as unknown as ConnectionResult<Message>).totalCount() }),
  }),
});

builder.objectFields(SandboxRef, (t) => ({
  messages: t.field({
    type: MessageConnection,
    description: 'Oldest first, so the newest is last.',
    args: {
      first: t.arg.int({ required: false }),
      after: t.arg.string({ required: false }),
      threadId: t.arg.string({ required: false }),
    },
    resolve: async (sandbox: Sandbox, args, ctx) =>
      toConnection(
        await ctx.services.messages.list(sandbox.id, args.threadId, {
          first: args.first,
          after: decodeCursor(args.after),
        }),
        !!args.after,
      ),
  }),
  lastMessage: t.loadable({
    type: MessageRef,
    nullable: true,
    description: 'The newest message of any thread.',
    load: async (sandboxIds: string[], ctx) => {
      const messages = await ctx.services.messages.lastOf(sandboxIds);
      const bySandbox = new Map(messages.map((m) => [m.sandbox.id, m]));
      return sandboxIds.map((id) => bySandbox.get(id) ?? null);
    },
    resolve: (sandbox: Sandbox) => sandbox.id,
  }),
}));

builder.queryField('messages', (t) =>
  t.field({
    type: MessageConnection,
    description: "A sandbox's messages (one thread when given), oldest first.",
    args: {
      sandboxId: t.arg.id({ required: true }),
      threadId: t.arg.string({ required: false }),
      first: t.arg.int({ required: false }),
      after: t.arg.string({ required: false }),
    },
    resolve: async (_root, args, ctx) =>
      toConnection(
        await ctx.services.messages.list(localIdOf(args.sandboxId, 'Sandbox'), args.threadId, {
          first: args.first,
          after: decodeCursor(args.after),
        }),
        !!args.after,
      ),
  }),
);

const SendMessageInput = builder.inputType('SendMessageInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    threadId: t.string({ required: false, description: 'Default "main".' }),
    channel: t.string({ required: false, description: 'Default "api".' }),
    body: t.string({ required: true }),
  }),
});

const PostAgentMessageInput = builder.inputType('PostAgentMessageInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    fencingToken: t.string({ required: true }),
    threadId: t.string({ required: false }),
    body: t.string({ required: true }),
  }),
});

const MarkMessagesReadInput = builder.inputType('MarkMessagesReadInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    threadId: t.string({ required: false, description: 'Default "main".' }),
    upToMessageId: t.id({
      required: false,
      description: 'Up to and including this message; the whole thread when absent.',
    }),
  }),
});

class MessagePayload {
  constructor(readonly message: Message) {}
}
builder.objectType(MessagePayload, {
  name: 'MessagePayload',
  isTypeOf: (value) => value instanceof MessagePayload,
  description: 'The field is `posted`, not `message`, so it never clashes with `Error.message` in one selection.',
  fields: (t) => ({ posted: t.field({ type: MessageRef, resolve: (p) => p.message }) }),
});

class MarkMessagesReadPayload {
  constructor(
    readonly sandbox: Sandbox,
    readonly count: number,
  ) {}
}
builder.objectType(MarkMessagesReadPayload, {
  name: 'MarkMessagesReadPayload',
  isTypeOf: (value) => value instanceof MarkMessagesReadPayload,
  fields: (t) => ({
    sandbox: t.field({ type: SandboxRef, resolve: (p) => p.sandbox }),
    count: t.exposeInt('count', { description: 'How many messages were marked read.' }),
  }),
});

const MessageResult = builder.errorUnion('MessageResult', {
  types: [MessagePayload, NotFoundError, ForbiddenError, ValidationError, StaleFencingTokenError],
});
const MarkMessagesReadResult = builder.errorUnion('MarkMessagesReadResult', {
  types: [MarkMessagesReadPayload, NotFoundError, ForbiddenError, ValidationError],
});

builder.mutationFields((t) => ({
  sendMessage: t.field({
    type: MessageResult,
    description: 'A person (tenant OPERATOR) writes to the agent.',
    args: { input: t.arg({ type: SendMessageInput, required: true }) },
    resolve: async (_root, { input }, ctx) =>
      new MessagePayload(
        await ctx.services.messages.send({
          sandboxId: localIdOf(input.sandboxId, 'Sandbox'),
          threadId: input.threadId,
          channel: input.channel,
          body: input.body,
        }),
      ),
  }),
  postAgentMessage: t.field({
    type: MessageResult,
    description: 'The worker holding the lease (scope message:post) posts for the agent, with its fencing token.',
    args: { input: t.arg({ type: PostAgentMessageInput, required: true }) },
    authScopes: { workerScope: 'message:post' },
    resolve: async (_root, { input }, ctx) =>
      new MessagePayload(
        await ctx.services.messages.postAgent({
          sandboxId: localIdOf(input.sandboxId, 'Sandbox'),
          fencingToken: input.fencingToken,
          threadId: input.threadId,
          body: input.body,
        }),
      ),
  }),
  markMessagesRead: t.field({
    type: MarkMessagesReadResult,
    args: { input: t.arg({ type: MarkMessagesReadInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const { sandbox, count } = await ctx.services.messages.markRead({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox'),
        threadId: input.threadId,
        upToMessageId: input.upToMessageId ? localIdOf(input.upToMessageId, 'Message') : null,
      });
      return new MarkMessagesReadPayload(sandbox, count);
    },
  }),
}));

builder.subscriptionField('messageAdded', (t) =>
  t.field({
    type: MessageRef,
    description:
      'Messages of one sandbox (optionally one thread), oldest first. With `after` (an event cursor, see Message.eventCursor), replays first.',
    args: {
      sandboxId: t.arg.id({ required: true }),
      threadId: t.arg.string({ required: false }),
      after: t.arg.string({ required: false }),
    },
    subscribe: (_root, args, ctx) =>
      eventStream(ctx, () =>
        ctx.services.subscriptions.messageAdded(localIdOf(args.sandboxId, 'Sandbox'), args.threadId, args.after),
      ),
    resolve: async (event, _args, ctx) => {
      const message = event.messageId ? await MessageRef.getDataloader(ctx).load(event.messageId) : null;
      if (!message) throw new NotFoundError('Message', event.messageId ?? undefined);
      deliveredWith.set(message, event.cursor);
      return message;
    },
  }),
);
