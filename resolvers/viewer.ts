import type { Identity } from '../src/auth/identity.js';
import { builder } from './builder.js';
import { encodeGlobalId } from './ids.js';
import { MemberRef } from './member.js';

const ViewerRef = builder.objectRef<Identity>('Viewer').implement({
  description: 'The caller, as its token identifies it.',
  fields: (t) => ({
    subject: t.exposeString('subject'),
    platformAdmin: t.exposeBoolean('platformAdmin'),
    memberships: t.field({
      type: [MemberRef],
      resolve: (identity, _args, ctx) => ctx.services.tenants.membershipsOf(identity.subject),
    }),
    liveCursor: t.string({
      description:
        'Where a subscription without `after` starts if it subscribes now. Keep it when you subscribe without `after`: if the stream is cut before its first event, resubscribing with `after` set to it misses nothing. The SDK does this by itself.',
      resolve: (_identity, _args, ctx) => ctx.services.subscriptions.startCursor(),
    }),
    workerId: t.id({
      nullable: true,
      resolve: (identity) => (identity.workerId ? encodeGlobalId('Worker', identity.workerId) : null),
    }),
  }),
});

builder.queryField('viewer', (t) =>
  t.field({
    type: ViewerRef,
    authScopes: { authenticated: true },
    resolve: (_root, _args, ctx) => ctx.identity,
  }),
);
