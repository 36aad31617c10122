import { DELIVERY_STATES, Message, SENDER_KINDS } from '../src/db/entities/message.js';
import type { Sandbox } from '../src/db/entities/sandbox.js';
import { ForbiddenError, NotFoundError, StaleFencingTokenError, ValidationError } from '../src/domain/errors.js';
import type { LogPosition } from '../src/events/reader.js';
import { builder, mutationResult } from './builder.js';
import { eventStream } from './event-stream.js';
import { encodeGlobalId, localIdOf, optionalLocalIdOf } from './ids.js';
import { type CursorCodec, connection, connectionType, eventCursor, pageArgs } from './pagination.js';
import { SandboxRef } from './sandbox.js';

export const SenderKindEnum = builder.enumType('SenderKind', { values: SENDER_KINDS });
export const DeliveryStateEnum = builder.enumType('DeliveryState', {
  description:
    "Whether a message to the agent reached its process: PENDING → DISPATCHED (taken by the worker holding the lease) → DELIVERED (written to the process's stdin), or FAILED with `deliveryError`. A dispatch not confirmed within FLOTILLA_MESSAGE_DISPATCH_TIMEOUT_SECONDS, or made under an earlier lease, goes back to PENDING.",
  values: DELIVERY_STATES,
});

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
    deliveryState: t.field({
      type: DeliveryStateEnum,
      nullable: true,
      description: "Null on the agent's own messages.",
      resolve: (m) => m.deliveryState,
    }),
    deliveryError: t.exposeString('deliveryError', { nullable: true, description: 'Why it FAILED.' }),
    dispatchedAt: t.expose('dispatchedAt', { type: 'DateTime', nullable: true }),
    deliveredAt: t.expose('deliveredAt', { type: 'DateTime', nullable: true }),
    eventCursor: t.string({
      nullable: true,
      description:
        'The cursor of the event that posted it (also its cursor in `messages`): pass it as `after` to messageAdded or messages to continue right after this message.',
      resolve: (m) => messageCursor.encode(m),
    }),
  }),
});

/** Messages are paged in commit order: a message's cursor is its MESSAGE_POSTED event's. */
const messageCursor: CursorCodec<Message, LogPosition> = {
  encode: (m) => eventCursor.encode({ txId: m.eventTxId, id: m.eventId }),
  decode: eventCursor.decode,
};

export const MessageConnection = connectionType('MessageConnection', MessageRef);

builder.objectFields(SandboxRef, (t) => ({
  messages: t.field({
    type: MessageConnection,
    description: 'Oldest first, so the newest is last.',
    args: { ...pageArgs(t.arg), threadId: t.arg.string({ required: false }) },
    resolve: (sandbox: Sandbox, args, ctx) =>
      connection(args, (page) => ctx.services.messages.list(sandbox.id, args.threadId, page), messageCursor),
  }),
  undeliveredMessages: t.field({
    type: MessageConnection,
    description:
      'Messages to the agent not DELIVERED yet (PENDING or DISPATCHED), in commit order: what the worker holding the lease delivers.',
    args: pageArgs(t.arg),
    resolve: (sandbox: Sandbox, args, ctx) =>
      connection(args, (page) => ctx.services.messages.undelivered(sandbox, page), messageCursor),
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
      ...pageArgs(t.arg),
    },
    authScopes: { authenticated: true },
    resolve: (_root, args, ctx) =>
      connection(
        args,
        (page) => ctx.services.messages.list(localIdOf(args.sandboxId, 'Sandbox', 'sandboxId'), args.threadId, page),
        messageCursor,
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

const ReportMessageDeliveryInput = builder.inputType('ReportMessageDeliveryInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    fencingToken: t.string({ required: true }),
    messageIds: t.idList({ required: true, description: 'At most 100, of this sandbox.' }),
    state: t.field({ type: DeliveryStateEnum, required: true, description: 'DISPATCHED, DELIVERED or FAILED.' }),
    reason: t.string({ required: false, description: 'Why, for FAILED only (required there).' }),
  }),
});

const ReportMessageDeliveryPayload = builder
  .objectRef<{ sandbox: Sandbox; changed: Message[]; unchanged: string[] }>('ReportMessageDeliveryPayload')
  .implement({
    fields: (t) => ({
      sandbox: t.field({ type: SandboxRef, resolve: (p) => p.sandbox }),
      changed: t.field({
        type: [MessageRef],
        description: 'The messages this report moved, in commit order.',
        resolve: (p) => p.changed,
      }),
      unchangedIds: t.idList({
        description:
          'Ids it did not move: no longer in the state the transition starts from (a lost compare-and-swap), or not messages of this sandbox.',
        resolve: (p) => p.unchanged.map((id) => encodeGlobalId('Message', id)),
      }),
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

const messageResult = mutationResult(
  'Message',
  [NotFoundError, ForbiddenError, ValidationError, StaleFencingTokenError],
  {
    field: 'posted',
    description: 'The field is `posted`, not `message`, so it never clashes with `Error.message` in one selection.',
  },
);

const MarkMessagesReadPayload = builder
  .objectRef<{ sandbox: Sandbox; count: number }>('MarkMessagesReadPayload')
  .implement({
    fields: (t) => ({
      sandbox: t.field({ type: SandboxRef, resolve: (p) => p.sandbox }),
      count: t.exposeInt('count', { description: 'How many messages were marked read.' }),
    }),
  });

builder.mutationFields((t) => ({
  sendMessage: t.field({
    type: MessageRef,
    errors: messageResult,
    description: 'A person (tenant OPERATOR) writes to the agent.',
    args: { input: t.arg({ type: SendMessageInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.messages.send({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        threadId: input.threadId,
        channel: input.channel,
        body: input.body,
      }),
  }),
  postAgentMessage: t.field({
    type: MessageRef,
    errors: messageResult,
    description: 'The worker holding the lease (scope message:post) posts for the agent, with its fencing token.',
    args: { input: t.arg({ type: PostAgentMessageInput, required: true }) },
    authScopes: { workerScope: 'message:post' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.messages.postAgent({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        fencingToken: input.fencingToken,
        threadId: input.threadId,
        body: input.body,
      }),
  }),
  reportMessageDelivery: t.field({
    type: ReportMessageDeliveryPayload,
    errors: mutationResult('ReportMessageDelivery', [
      NotFoundError,
      ForbiddenError,
      ValidationError,
      StaleFencingTokenError,
    ]),
    description:
      'The worker holding the lease (scope message:post) reports delivery, fenced: DISPATCHED (from PENDING), DELIVERED (from DISPATCHED, once written to stdin) or FAILED with a reason. Each message moves by compare-and-swap.',
    args: { input: t.arg({ type: ReportMessageDeliveryInput, required: true }) },
    authScopes: { workerScope: 'message:post' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.deliveries.report({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        fencingToken: input.fencingToken,
        messageIds: input.messageIds.map((id) => localIdOf(String(id), 'Message', 'input.messageIds')),
        state: input.state,
        reason: input.reason,
      }),
  }),
  markMessagesRead: t.field({
    type: MarkMessagesReadPayload,
    errors: mutationResult('MarkMessagesRead', [NotFoundError, ForbiddenError, ValidationError]),
    args: { input: t.arg({ type: MarkMessagesReadInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.messages.markRead({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        threadId: input.threadId,
        upToMessageId: optionalLocalIdOf(input.upToMessageId, 'Message', 'input.upToMessageId'),
      }),
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
    authScopes: { authenticated: true },
    subscribe: (_root, args, ctx) =>
      eventStream(ctx, () =>
        ctx.services.subscriptions.messageAdded(
          localIdOf(args.sandboxId, 'Sandbox', 'sandboxId'),
          args.threadId,
          args.after,
        ),
      ),
    resolve: async (event, _args, ctx) => {
      const message = event.messageId ? await MessageRef.getDataloader(ctx).load(event.messageId) : null;
      if (!message) throw new NotFoundError('Message', event.messageId ?? undefined);
      return message;
    },
  }),
);
