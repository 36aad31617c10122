import { Lease } from '../src/db/entities/lease.js';
import {
  ForbiddenError,
  LeaseConflictError,
  NotFoundError,
  StaleFencingTokenError,
  ValidationError,
} from '../src/domain/errors.js';
import { builder, mutationResult } from './builder.js';
import { localIdOf } from './ids.js';
import { SandboxRef } from './sandbox.js';
import { WorkerRef } from './worker.js';

export const LeaseRef = builder.loadableNode('Lease', {
  description: 'One lease per sandbox. The fencing token grows by one on every acquire or takeover and never repeats.',
  id: { resolve: (lease: Lease) => lease.id },
  isTypeOf: (value) => value instanceof Lease,
  load: (ids: string[], ctx) => ctx.services.sandboxes.leasesByIds(ids),
  sort: (lease) => lease.id,
  fields: (t) => ({
    sandbox: t.field({ type: SandboxRef, resolve: (lease) => lease.sandbox.id }),
    holder: t.loadable({
      type: WorkerRef,
      description: 'The last holder, even once it has been deleted.',
      load: async (ids: string[], ctx) => {
        const workers = await ctx.services.workers.findVisibleByIdsWithDeleted(ids);
        return ids.map((id) => workers.find((w) => w.id === id) ?? new NotFoundError('Worker', id));
      },
      resolve: (lease) => lease.holder.id,
    }),
    fencingToken: t.exposeString('fencingToken', { description: 'Decimal of a 64-bit counter.' }),
    acquiredAt: t.expose('acquiredAt', { type: 'DateTime' }),
    renewedAt: t.expose('renewedAt', { type: 'DateTime' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
    transitions: t.exposeInt('transitions', { description: 'How many times it changed holder.' }),
  }),
});

builder.objectField(SandboxRef, 'lease', (t) =>
  t.loadable({
    type: LeaseRef,
    nullable: true,
    load: async (sandboxIds: string[], ctx) => {
      const leases = await ctx.services.sandboxes.leasesOf(sandboxIds);
      const bySandbox = new Map(leases.map((l) => [l.sandbox.id, l]));
      return sandboxIds.map((id) => bySandbox.get(id) ?? null);
    },
    resolve: (sandbox) => sandbox.id,
  }),
);

const AcquireLeaseInput = builder.inputType('AcquireLeaseInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    ttlSeconds: t.int({ required: false, description: 'Default 30, at most 3600.' }),
  }),
});

const RenewLeaseInput = builder.inputType('RenewLeaseInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    fencingToken: t.string({ required: true }),
    ttlSeconds: t.int({ required: false }),
  }),
});

const ReleaseLeaseInput = builder.inputType('ReleaseLeaseInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    fencingToken: t.string({ required: true }),
  }),
});

const leaseResult = mutationResult(
  'Lease',
  [NotFoundError, ForbiddenError, ValidationError, LeaseConflictError, StaleFencingTokenError],
  { field: 'lease' },
);

builder.mutationFields((t) => ({
  acquireLease: t.field({
    type: LeaseRef,
    errors: leaseResult,
    description: 'Worker token with scope worker:lease. Succeeds when free, expired (takeover) or already held.',
    args: { input: t.arg({ type: AcquireLeaseInput, required: true }) },
    authScopes: { workerScope: 'worker:lease' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.leases.acquire({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        ttlSeconds: input.ttlSeconds,
      }),
  }),
  renewLease: t.field({
    type: LeaseRef,
    errors: leaseResult,
    description: 'The holder only, with its current fencing token.',
    args: { input: t.arg({ type: RenewLeaseInput, required: true }) },
    authScopes: { workerScope: 'worker:lease' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.leases.renew({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        fencingToken: input.fencingToken,
        ttlSeconds: input.ttlSeconds,
      }),
  }),
  releaseLease: t.field({
    type: LeaseRef,
    errors: leaseResult,
    description: 'The holder only, with its current fencing token.',
    args: { input: t.arg({ type: ReleaseLeaseInput, required: true }) },
    authScopes: { workerScope: 'worker:lease' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.leases.release({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        fencingToken: input.fencingToken,
      }),
  }),
}));
