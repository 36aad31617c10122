import type { PortAllocation } from '../src/db/entities/port-allocation.js';
import { AGENT_PHASES, SANDBOX_STATUSES, Sandbox, STDIN_FRAMINGS } from '../src/db/entities/sandbox.js';
import {
  ForbiddenError,
  InvalidTransitionError,
  LeaseConflictError,
  NoCapacityError,
  NotFoundError,
  PolicyViolationError,
  QuotaExceededError,
  StaleFencingTokenError,
  ValidationError,
} from '../src/domain/errors.js';
import {
  type SandboxWait,
  WAIT_DEFAULT_TIMEOUT_SECONDS,
  WAIT_MAX_TIMEOUT_SECONDS,
} from '../src/domain/sandbox-waits.js';
import type { SandboxFilter } from '../src/domain/sandboxes.js';
import { builder, mutationResult } from './builder.js';
import { localIdOf, optionalLocalIdOf } from './ids.js';
import { connection, connectionType, pageArgs } from './pagination.js';
import { TenantRef } from './tenant.js';
import { ResourcesInput, ResourcesType, WorkerRef } from './worker.js';

export const SandboxStatusEnum = builder.enumType('SandboxStatus', { values: SANDBOX_STATUSES });
export const AgentPhaseEnum = builder.enumType('AgentPhase', { values: AGENT_PHASES });
export const StdinFramingEnum = builder.enumType('StdinFraming', {
  description:
    "How the worker writes a message to the process's stdin: PLAIN, the body's lines; JSON_LINES, one JSON object per message (docs/worker.md).",
  values: STDIN_FRAMINGS,
});

const AgentStatusType = builder
  .objectRef<{ phase: (typeof AGENT_PHASES)[number]; activity: string | null; updatedAt: Date }>('AgentStatus')
  .implement({
    description: 'Live agent status reported by the worker.',
    fields: (t) => ({
      phase: t.field({ type: AgentPhaseEnum, resolve: (a) => a.phase }),
      activity: t.exposeString('activity', { nullable: true }),
      updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    }),
  });

const PlacementType = builder
  .objectRef<{ region?: string | null; labels?: Record<string, string> | null }>('Placement')
  .implement({
    description: 'Where a sandbox may run.',
    fields: (t) => ({
      region: t.string({ nullable: true, resolve: (p) => p.region ?? null }),
      workerLabels: t.field({ type: 'JSON', resolve: (p) => p.labels ?? {} }),
    }),
  });

const PortAllocationType = builder.objectRef<PortAllocation>('PortAllocation').implement({
  description: "A port of its worker's range held by the sandbox while it is placed there.",
  fields: (t) => ({
    name: t.exposeString('name', { description: 'A, B, … (the process sees FLOTILLA_PORT_A, FLOTILLA_URL_A, …).' }),
    port: t.exposeInt('port'),
    url: t.exposeString('url', {
      nullable: true,
      description: "The worker's public base URL with the port; null when the worker declared none.",
    }),
  }),
});

export const SandboxRef = builder.loadableNode('Sandbox', {
  id: { resolve: (sandbox: Sandbox) => sandbox.id },
  isTypeOf: (value) => value instanceof Sandbox,
  load: (ids: string[], ctx) => ctx.services.sandboxes.findVisibleByIds(ids),
  sort: (sandbox) => sandbox.id,
  fields: (t) => ({
    tenant: t.field({ type: TenantRef, resolve: (s) => s.tenant.id }),
    name: t.exposeString('name'),
    image: t.exposeString('image'),
    command: t.exposeStringList('command'),
    resources: t.field({ type: ResourcesType, resolve: (s) => ({ cpuMillis: s.cpuMillis, memoryMb: s.memoryMb }) }),
    labels: t.field({ type: 'JSON', resolve: (s) => s.labels }),
    placement: t.field({ type: PlacementType, nullable: true, resolve: (s) => s.placement }),
    status: t.field({ type: SandboxStatusEnum, resolve: (s) => s.status }),
    statusReason: t.exposeString('statusReason', { nullable: true }),
    restartRequestedAt: t.expose('restartRequestedAt', {
      type: 'DateTime',
      nullable: true,
      description: 'Set while it is STOPPING for a restart (it then goes STARTING on the same worker); null otherwise.',
    }),
    stateVersion: t.exposeInt('stateVersion', { description: 'Bumps on every state change.' }),
    agent: t.field({
      type: AgentStatusType,
      nullable: true,
      resolve: (s) =>
        s.agentPhase && s.agentUpdatedAt
          ? { phase: s.agentPhase, activity: s.agentActivity, updatedAt: s.agentUpdatedAt }
          : null,
    }),
    worker: t.field({ type: WorkerRef, nullable: true, resolve: (s) => s.worker?.id ?? null }),
    exitCode: t.exposeInt('exitCode', { nullable: true }),
    ttlSeconds: t.exposeInt('ttlSeconds', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    startedAt: t.expose('startedAt', { type: 'DateTime', nullable: true }),
    stoppedAt: t.expose('stoppedAt', { type: 'DateTime', nullable: true }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', nullable: true, description: 'From ttlSeconds.' }),
    stdinFraming: t.field({ type: StdinFramingEnum, resolve: (s) => s.stdinFraming }),
    requestedPorts: t.int({
      description: 'How many ports it asked for (createSandbox `ports`); `ports` lists those it holds now.',
      resolve: (s) => s.ports,
    }),
    ports: t.loadableList({
      type: PortAllocationType,
      description:
        'Ports it holds on its worker, A first: allocated at placement, freed when it stops, fails, is lost or deleted. Empty when it asked for none or holds none now.',
      load: async (sandboxIds: string[], ctx) => {
        const rows = await ctx.services.sandboxes.portsOf(sandboxIds);
        return sandboxIds.map((id) => rows.filter((row) => row.sandbox.id === id));
      },
      resolve: (sandbox) => sandbox.id,
    }),
  }),
});

export const SandboxConnection = connectionType('SandboxConnection', SandboxRef);

const SandboxFilterInput = builder.inputType('SandboxFilter', {
  fields: (t) => ({
    status: t.field({ type: [SandboxStatusEnum], required: false }),
    workerId: t.id({ required: false }),
    label: t.field({ type: 'JSON', required: false, description: 'Every given label must match exactly.' }),
    nameContains: t.string({ required: false }),
  }),
});

function toFilter(
  input:
    | {
        status?: readonly Sandbox['status'][] | null;
        workerId?: string | null;
        label?: unknown;
        nameContains?: string | null;
      }
    | null
    | undefined,
): SandboxFilter | null {
  if (!input) return null;
  return {
    status: input.status ?? null,
    workerId: optionalLocalIdOf(input.workerId, 'Worker', 'filter.workerId'),
    label: input.label ?? null,
    nameContains: input.nameContains ?? null,
  };
}

builder.objectField(TenantRef, 'sandboxes', (t) =>
  t.field({
    type: SandboxConnection,
    args: { ...pageArgs(t.arg), filter: t.arg({ type: SandboxFilterInput, required: false }) },
    resolve: (tenant, args, ctx) =>
      connection(args, (page) => ctx.services.sandboxes.listForTenant(tenant.id, toFilter(args.filter), page)),
  }),
);

builder.objectField(WorkerRef, 'sandboxes', (t) =>
  t.field({
    type: SandboxConnection,
    args: pageArgs(t.arg),
    resolve: (worker, args, ctx) => connection(args, (page) => ctx.services.sandboxes.listForWorker(worker.id, page)),
  }),
);

builder.queryFields((t) => ({
  sandbox: t.field({
    type: SandboxRef,
    nullable: true,
    args: { id: t.arg.id({ required: true }) },
    authScopes: { authenticated: true },
    resolve: (_root, args) => localIdOf(args.id, 'Sandbox', 'id'),
  }),
  sandboxes: t.field({
    type: SandboxConnection,
    description: "A tenant's sandboxes (deleted ones are not listed), oldest first.",
    args: {
      tenantId: t.arg.id({ required: true }),
      ...pageArgs(t.arg),
      filter: t.arg({ type: SandboxFilterInput, required: false }),
    },
    authScopes: (_root, args) => ({
      tenantRole: { tenantId: localIdOf(args.tenantId, 'Tenant', 'tenantId'), role: 'VIEWER' },
    }),
    resolve: (_root, args, ctx) =>
      connection(args, (page) =>
        ctx.services.sandboxes.listForTenant(
          localIdOf(args.tenantId, 'Tenant', 'tenantId'),
          toFilter(args.filter),
          page,
        ),
      ),
  }),
}));

// ---------------------------------------------------------------- waiting for a state

const WaitOutcomeEnum = builder.enumType('WaitOutcome', {
  description: 'How a `waitForSandbox` ended.',
  values: {
    REACHED: { description: 'The sandbox reached one of the statuses (at once, if it already was in one).' },
    TIMED_OUT: { description: 'The timeout passed first: ask again to keep waiting.' },
    UNREACHABLE: {
      description:
        'The sandbox is in a status from which none of them can follow (e.g. FAILED while waiting for RUNNING).',
    },
    INTERRUPTED: { description: 'The server is shutting down: ask again (another replica answers).' },
  } as const,
});

const WaitForSandboxPayload = builder.objectRef<SandboxWait>('WaitForSandboxPayload').implement({
  description: 'The answer of `waitForSandbox`.',
  fields: (t) => ({
    sandbox: t.field({
      type: SandboxRef,
      description: 'The sandbox as read when the wait ended.',
      resolve: (w) => w.sandbox,
    }),
    status: t.field({
      type: SandboxStatusEnum,
      description: 'The status the wait ended on: the one reached, or the status when it timed out.',
      resolve: (w) => w.status,
    }),
    outcome: t.field({ type: WaitOutcomeEnum, resolve: (w) => w.outcome }),
    reached: t.boolean({ description: 'outcome is REACHED.', resolve: (w) => w.outcome === 'REACHED' }),
    timedOut: t.boolean({ description: 'outcome is TIMED_OUT.', resolve: (w) => w.outcome === 'TIMED_OUT' }),
  }),
});

builder.queryFields((t) => ({
  waitForSandbox: t.field({
    type: WaitForSandboxPayload,
    errors: mutationResult('WaitForSandbox', [NotFoundError, ValidationError]),
    description: `Answers once the sandbox is in one of \`statuses\` (at once if it already is), when none of them can follow any more, or when \`timeoutSeconds\` (default ${WAIT_DEFAULT_TIMEOUT_SECONDS}, at most ${WAIT_MAX_TIMEOUT_SECONDS}) pass. Follows the event log; a sandbox the caller cannot see is NotFoundError.`,
    args: {
      id: t.arg.id({ required: true }),
      statuses: t.arg({ type: [SandboxStatusEnum], required: true }),
      timeoutSeconds: t.arg.int({ required: false }),
    },
    authScopes: { authenticated: true },
    resolve: (_root, args, ctx) =>
      ctx.services.sandboxWaits.waitFor({
        sandboxId: localIdOf(args.id, 'Sandbox', 'id'),
        statuses: args.statuses,
        timeoutSeconds: args.timeoutSeconds,
        signal: ctx.abortSignal(),
      }),
  }),
}));

// ---------------------------------------------------------------- mutations

const PlacementInput = builder.inputType('PlacementInput', {
  fields: (t) => ({
    region: t.string({ required: false }),
    workerLabels: t.field({ type: 'JSON', required: false, description: 'Labels the worker must carry.' }),
  }),
});

const CreateSandboxInput = builder.inputType('CreateSandboxInput', {
  fields: (t) => ({
    tenantId: t.id({ required: true }),
    name: t.string({ required: true }),
    image: t.string({ required: true }),
    command: t.stringList({ required: false }),
    resources: t.field({ type: ResourcesInput, required: true }),
    labels: t.field({ type: 'JSON', required: false }),
    ttlSeconds: t.int({ required: false }),
    placement: t.field({ type: PlacementInput, required: false }),
    ports: t.int({
      required: false,
      description: "How many ports of its worker's range it needs (default 0; at most FLOTILLA_MAX_PORTS_PER_SANDBOX).",
    }),
    stdinFraming: t.field({
      type: StdinFramingEnum,
      required: false,
      description: 'How messages reach the process (default PLAIN).',
    }),
  }),
});

const SandboxRefInput = builder.inputType('SandboxRefInput', {
  fields: (t) => ({ sandboxId: t.id({ required: true }) }),
});

const RestartSandboxInput = builder.inputType('RestartSandboxInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    reason: t.string({ required: false, description: 'Why: shown as `restart requested: <reason>`.' }),
  }),
});

const ReportSandboxStatusInput = builder.inputType('ReportSandboxStatusInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    fencingToken: t.string({ required: true }),
    status: t.field({ type: SandboxStatusEnum, required: true }),
    reason: t.string({ required: false }),
    exitCode: t.int({ required: false }),
  }),
});

const ReportAgentStatusInput = builder.inputType('ReportAgentStatusInput', {
  fields: (t) => ({
    sandboxId: t.id({ required: true }),
    fencingToken: t.string({ required: true }),
    phase: t.field({ type: AgentPhaseEnum, required: true }),
    activity: t.string({ required: false }),
  }),
});

const sandboxResult = mutationResult(
  'Sandbox',
  [
    NotFoundError,
    ForbiddenError,
    ValidationError,
    QuotaExceededError,
    PolicyViolationError,
    NoCapacityError,
    InvalidTransitionError,
    StaleFencingTokenError,
    LeaseConflictError,
  ],
  { field: 'sandbox' },
);

builder.mutationFields((t) => ({
  createSandbox: t.field({
    type: SandboxRef,
    errors: sandboxResult,
    description: 'Tenant OPERATOR. Checks policy and quota, places it on a worker; with no room now it stays PENDING.',
    args: { input: t.arg({ type: CreateSandboxInput, required: true }) },
    authScopes: (_root, { input }) => ({
      tenantRole: { tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'), role: 'OPERATOR' },
    }),
    resolve: (_root, { input }, ctx) =>
      ctx.services.sandboxes.create({
        tenantId: localIdOf(input.tenantId, 'Tenant', 'input.tenantId'),
        name: input.name,
        image: input.image,
        command: input.command,
        resources: input.resources,
        labels: input.labels,
        ttlSeconds: input.ttlSeconds,
        placement: input.placement,
        ports: input.ports,
        stdinFraming: input.stdinFraming,
      }),
  }),
  stopSandbox: t.field({
    type: SandboxRef,
    errors: sandboxResult,
    description: 'Tenant OPERATOR. The worker is told through SANDBOX_STOP_REQUESTED.',
    args: { input: t.arg({ type: SandboxRefInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.sandboxes.stop(localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId')),
  }),
  restartSandbox: t.field({
    type: SandboxRef,
    errors: sandboxResult,
    description:
      'Tenant OPERATOR. A RUNNING sandbox restarts on the same worker, keeping its capacity and ports: RUNNING → STOPPING → STARTING → RUNNING. The worker is told through SANDBOX_RESTART_REQUESTED; any other status is InvalidTransitionError.',
    args: { input: t.arg({ type: RestartSandboxInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.sandboxes.restart({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        reason: input.reason,
      }),
  }),
  deleteSandbox: t.field({
    type: SandboxRef,
    errors: sandboxResult,
    description: 'Tenant OPERATOR. Soft delete: kept for audit, hidden from lists.',
    args: { input: t.arg({ type: SandboxRefInput, required: true }) },
    authScopes: { tenantMember: true },
    resolve: (_root, { input }, ctx) =>
      ctx.services.sandboxes.delete(localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId')),
  }),
  reportSandboxStatus: t.field({
    type: SandboxRef,
    errors: sandboxResult,
    description: 'Worker (scope sandbox:report) holding the lease, with its current fencing token.',
    args: { input: t.arg({ type: ReportSandboxStatusInput, required: true }) },
    authScopes: { workerScope: 'sandbox:report' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.sandboxes.reportStatus({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        fencingToken: input.fencingToken,
        status: input.status,
        reason: input.reason,
        exitCode: input.exitCode,
      }),
  }),
  reportAgentStatus: t.field({
    type: SandboxRef,
    errors: sandboxResult,
    description: 'Worker (scope sandbox:report) holding the lease, with its current fencing token.',
    args: { input: t.arg({ type: ReportAgentStatusInput, required: true }) },
    authScopes: { workerScope: 'sandbox:report' },
    resolve: (_root, { input }, ctx) =>
      ctx.services.sandboxes.reportAgentStatus({
        sandboxId: localIdOf(input.sandboxId, 'Sandbox', 'input.sandboxId'),
        fencingToken: input.fencingToken,
        phase: input.phase,
        activity: input.activity,
      }),
  }),
}));
