import { WORKER_STATUSES, Worker } from '../src/db/entities/worker.js';
import {
  AlreadyExistsError,
  ForbiddenError,
  LeaseConflictError,
  NotFoundError,
  ValidationError,
} from '../src/domain/errors.js';
import { builder, mutationResult } from './builder.js';
import { localIdOf, optionalLocalIdOf } from './ids.js';
import { connection, connectionType, pageArgs } from './pagination.js';
import { TenantRef } from './tenant.js';

export const WorkerStatusEnum = builder.enumType('WorkerStatus', {
  values: WORKER_STATUSES,
  description: 'OFFLINE: the heartbeat TTL passed (or the worker was deleted).',
});

export const ResourcesType = builder.objectRef<{ cpuMillis: number; memoryMb: number }>('Resources').implement({
  fields: (t) => ({ cpuMillis: t.exposeInt('cpuMillis'), memoryMb: t.exposeInt('memoryMb') }),
});

export const ResourcesInput = builder.inputType('ResourcesInput', {
  fields: (t) => ({ cpuMillis: t.int({ required: true }), memoryMb: t.int({ required: true }) }),
});

const WorkerPortsType = builder
  .objectRef<{ from: number; to: number; publicBaseUrl: string | null; allocated: number }>('WorkerPorts')
  .implement({
    description: "A worker's port pool: sandboxes placed on it get ports of this range.",
    fields: (t) => ({
      from: t.exposeInt('from'),
      to: t.exposeInt('to', { description: 'Included.' }),
      publicBaseUrl: t.exposeString('publicBaseUrl', {
        nullable: true,
        description: 'Where its ports are reached; a PortAllocation url is this with the port.',
      }),
      allocated: t.exposeInt('allocated', { description: 'Ports held by sandboxes placed on it.' }),
    }),
  });

const WorkerPortsInput = builder.inputType('WorkerPortsInput', {
  fields: (t) => ({
    from: t.int({ required: true }),
    to: t.int({ required: true, description: 'Included.' }),
    publicBaseUrl: t.string({
      required: false,
      description: 'http or https URL of the host sandboxes are reached at, without a port (e.g. http://10.0.0.7).',
    }),
  }),
});

export const WorkerRef = builder.loadableNode('Worker', {
  id: { resolve: (worker: Worker) => worker.id },
  isTypeOf: (value) => value instanceof Worker,
  load: (ids: string[], ctx) => ctx.services.workers.findVisibleByIds(ids),
  sort: (worker) => worker.id,
  fields: (t) => ({
    name: t.exposeString('name'),
    tenant: t.field({
      type: TenantRef,
      nullable: true,
      description: 'null = a shared platform worker.',
      resolve: (worker) => worker.tenant?.id ?? null,
    }),
    status: t.field({
      type: WorkerStatusEnum,
      resolve: (worker, _args, ctx) => ctx.services.workers.statusOf(worker),
    }),
    region: t.exposeString('region', { nullable: true }),
    labels: t.field({ type: 'JSON', resolve: (worker) => worker.labels }),
    capacity: t.field({
      type: ResourcesType,
      resolve: (w) => ({ cpuMillis: w.capacityCpuMillis, memoryMb: w.capacityMemoryMb }),
    }),
    allocated: t.field({
      type: ResourcesType,
      resolve: (w) => ({ cpuMillis: w.allocatedCpuMillis, memoryMb: w.allocatedMemoryMb }),
    }),
    observed: t.field({
      type: 'JSON',
      nullable: true,
      description: 'What the worker last reported in a heartbeat.',
      resolve: (w) => w.observed,
    }),
    version: t.exposeString('version', { nullable: true }),
    lastHeartbeatAt: t.expose('lastHeartbeatAt', { type: 'DateTime', nullable: true }),
    registeredAt: t.field({ type: 'DateTime', resolve: (w) => w.createdAt }),
    ports: t.field({
      type: WorkerPortsType,
      nullable: true,
      description: 'The port range it offers sandboxes; null = none.',
      resolve: (w) =>
        w.portsFrom !== null && w.portsTo !== null
          ? { from: w.portsFrom, to: w.portsTo, publicBaseUrl: w.publicBaseUrl, allocated: w.allocatedPorts }
          : null,
    }),
  }),
});

export const WorkerConnection = connectionType('WorkerConnection', WorkerRef);

builder.objectField(TenantRef, 'workers', (t) =>
  t.field({
    type: WorkerConnection,
    description: "The tenant's dedicated workers.",
    args: pageArgs(t.arg),
    resolve: (tenant, args, ctx) => connection(args, (page) => ctx.services.workers.listForTenant(tenant.id, page)),
  }),
);

builder.queryFields((t) => ({
  worker: t.field({
    type: WorkerRef,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    authScopes: { authenticated: true },
    resolve: (_root, args) => localIdOf(args.id, 'Worker', 'id'),
  }),
  workers: t.field({
    type: WorkerConnection,
    description: 'Shared workers and the dedicated workers of your tenants (platform admins: all).',
    args: { ...pageArgs(t.arg), status: t.arg({ type: [WorkerStatusEnum], required: false }) },
    authScopes: { authenticated: true },
    resolve: (_root, args, ctx) =>
      connection(args, (page) => ctx.services.workers.list({ ...page, status: args.status })),
  }),
}));

// ---------------------------------------------------------------- mutations

const RegisterWorkerInput = builder.inputType('RegisterWorkerInput', {
  fields: (t) => ({
    name: t.string({ required: true, description: 'Unique.' }),
    region: t.string({ required: false }),
    labels: t.field({ type: 'JSON', required: false }),
    capacity: t.field({ type: ResourcesInput, required: true }),
    tenantId: t.id({
      required: false,
      description: 'Dedicated to this tenant (its ADMIN may register it); absent = shared.',
    }),
    ports: t.field({
      type: WorkerPortsInput,
      required: false,
      description: 'The ports it offers sandboxes (at most 10000); absent = none.',
    }),
  }),
});

const WorkerRefInput = builder.inputType('WorkerRefInput', {
  fields: (t) => ({ workerId: t.id({ required: true }) }),
});

const HeartbeatInput = builder.inputType('HeartbeatInput', {
  fields: (t) => ({
    workerId: t.id({ required: false, description: "Optional; must be the token's own worker." }),
    observed: t.field({ type: 'JSON', required: false, description: 'What the worker observes it uses (free-form).' }),
    version: t.string({ required: false }),
  }),
});

/** A worker with its bearer token, shown once. */
const RegisterWorkerPayload = builder.objectRef<{ worker: Worker; token: string }>('RegisterWorkerPayload').implement({
  fields: (t) => ({
    worker: t.field({ type: WorkerRef, resolve: (p) => p.worker }),
    token: t.exposeString('token', { description: "The worker's bearer token. Shown once: store it now." }),
  }),
});

const registerWorkerResult = mutationResult('RegisterWorker', [
  NotFoundError,
  ForbiddenError,
  ValidationError,
  AlreadyExistsError,
]);
const workerResult = mutationResult('Worker', [NotFoundError, ForbiddenError, ValidationError, LeaseConflictError], {
  field: 'worker',
});

builder.mutationFields((t) => ({
  registerWorker: t.field({
    type: RegisterWorkerPayload,
    errors: registerWorkerResult,
    description: 'Platform admin, or tenant ADMIN for a dedicated worker. The token is shown once.',
    args: { input: t.arg({ type: RegisterWorkerInput, required: true }) },
    authScopes: (_root, { input }) =>
      input.tenantId
        ? {
            platformAdmin: true,
            tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'ADMIN' },
          }
        : { platformAdmin: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.workers.register({
        name: input.name,
        region: input.region,
        labels: input.labels,
        capacity: input.capacity,
        tenantId: optionalLocalIdOf(input.tenantId, 'Tenant', 'input.tenantId'),
        ports: input.ports,
      }),
  }),
  rotateWorkerToken: t.field({
    type: RegisterWorkerPayload,
    errors: registerWorkerResult,
    description: 'Revokes the current token and returns a new one, shown once.',
    args: { input: t.arg({ type: WorkerRefInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.workers.rotateToken(localIdOf(input.workerId, 'Worker', 'input.workerId')),
  }),
  drainWorker: t.field({
    type: WorkerRef,
    errors: workerResult,
    description: 'No new placements; running sandboxes stay.',
    args: { input: t.arg({ type: WorkerRefInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.workers.drain(localIdOf(input.workerId, 'Worker', 'input.workerId')),
  }),
  undrainWorker: t.field({
    type: WorkerRef,
    errors: workerResult,
    description:
      'Lifts a drain: the worker takes new placements again. A drain otherwise outlasts the worker going offline.',
    args: { input: t.arg({ type: WorkerRefInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.workers.undrain(localIdOf(input.workerId, 'Worker', 'input.workerId')),
  }),
  deleteWorker: t.field({
    type: WorkerRef,
    errors: workerResult,
    description: 'Refused (LeaseConflictError) while the worker holds live leases.',
    args: { input: t.arg({ type: WorkerRefInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.workers.delete(localIdOf(input.workerId, 'Worker', 'input.workerId')),
  }),
  heartbeat: t.field({
    type: WorkerRef,
    errors: workerResult,
    description: 'Worker token with scope worker:heartbeat, for its own worker.',
    args: { input: t.arg({ type: HeartbeatInput, required: true }) },
    authScopes: { workerScope: 'worker:heartbeat' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.workers.heartbeat({
        workerId: optionalLocalIdOf(input.workerId, 'Worker', 'input.workerId'),
        observed: input.observed,
        version: input.version,
      }),
  }),
}));
