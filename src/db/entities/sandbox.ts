import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, softDeleteFilter, TIMESTAMP } from './base.js';
import { Tenant } from './tenant.js';
import { Worker } from './worker.js';

export const SANDBOX_STATUSES = [
  'PENDING',
  'SCHEDULED',
  'STARTING',
  'RUNNING',
  'STOPPING',
  'STOPPED',
  'FAILED',
  'LOST',
  'DELETED',
] as const;
export type SandboxStatus = (typeof SANDBOX_STATUSES)[number];

export const AGENT_PHASES = ['IDLE', 'THINKING', 'EXECUTING', 'WAITING_FOR_INPUT', 'DONE', 'ERROR'] as const;
export type AgentPhase = (typeof AGENT_PHASES)[number];

/** How the worker writes a message to the process's stdin (src/worker/framing.ts). */
export const STDIN_FRAMINGS = ['PLAIN', 'JSON_LINES'] as const;
export type StdinFraming = (typeof STDIN_FRAMINGS)[number];

export class Sandbox extends BaseEntity<
  | 'status'
  | 'stateVersion'
  | 'command'
  | 'labels'
  | 'worker'
  | 'statusReason'
  | 'agentPhase'
  | 'agentActivity'
  | 'agentUpdatedAt'
  | 'exitCode'
  | 'ttlSeconds'
  | 'channelBound'
  | 'startedAt'
  | 'stoppedAt'
  | 'expiresAt'
  | 'deletedAt'
  | 'placement'
  | 'nextPlacementAt'
  | 'placementAttempts'
  | 'ports'
  | 'restartRequestedAt'
  | 'stdinFraming'
> {
  tenant!: Tenant;
  worker: Worker | null = null;
  name!: string;
  image!: string;
  command: string[] = [];
  cpuMillis!: number;
  memoryMb!: number;
  labels: Record<string, string> = {};
  /** Where it may run: a region and labels its worker must carry (null = anywhere). */
  placement: { region?: string | null; labels?: Record<string, string> | null } | null = null;
  status: SandboxStatus = 'PENDING';
  statusReason: string | null = null;
  /** Bumped on every state change; writers compare-and-swap on it. */
  stateVersion = 0;
  agentPhase: AgentPhase | null = null;
  agentActivity: string | null = null;
  agentUpdatedAt: Date | null = null;
  exitCode: number | null = null;
  ttlSeconds: number | null = null;
  /** Some thread of it came in through a chat channel (channel_threads): only then do its agent's messages look for a route. */
  channelBound = false;
  startedAt: Date | null = null;
  stoppedAt: Date | null = null;
  expiresAt: Date | null = null;
  /** Set when soft-deleted (status DELETED); the soft-delete filter hides such rows. */
  deletedAt: Date | null = null;
  /** While waiting (PENDING, LOST): when the scheduler's backoff retry tries it next; null otherwise. */
  nextPlacementAt: Date | null = null;
  /** Backoff retries since it started waiting (the delay doubles with each, up to a cap). */
  placementAttempts = 0;
  /** How many ports of its worker's range it asks for (allocated at placement: port_allocations). */
  ports = 0;
  /**
   * Set while a restart is under way (STOPPING for a restart; cleared on STARTING or any other
   * transition): the sandbox keeps its capacity, ports and placement, and may go STOPPING → STARTING.
   */
  restartRequestedAt: Date | null = null;
  stdinFraming: StdinFraming = 'PLAIN';
}

export const SandboxSchema = new EntitySchema<Sandbox, BaseEntity<string>>({
  class: Sandbox,
  tableName: 'sandboxes',
  filters: softDeleteFilter,
  extends: BaseEntitySchema,
  indexes: [
    { name: 'sandboxes_tenant_status_index', properties: ['tenant', 'status'] },
    { name: 'sandboxes_worker_index', properties: ['worker'] },
    { name: 'sandboxes_next_placement_index', properties: ['nextPlacementAt'] },
  ],
  properties: {
    tenant: { kind: 'm:1', entity: () => Tenant, deleteRule: 'cascade' },
    worker: { kind: 'm:1', entity: () => Worker, nullable: true, deleteRule: 'set null' },
    name: { type: 'string', length: 200 },
    image: { type: 'string', length: 500 },
    command: { type: 'json' },
    cpuMillis: { type: 'integer' },
    memoryMb: { type: 'integer' },
    labels: { type: 'json' },
    placement: { type: 'json', nullable: true },
    status: { type: 'string', length: 20 },
    statusReason: { type: 'text', nullable: true },
    stateVersion: { type: 'integer', default: 0 },
    agentPhase: { type: 'string', length: 30, nullable: true },
    agentActivity: { type: 'text', nullable: true },
    agentUpdatedAt: { ...TIMESTAMP, nullable: true },
    exitCode: { type: 'integer', nullable: true },
    ttlSeconds: { type: 'integer', nullable: true },
    channelBound: { type: 'boolean', default: false },
    startedAt: { ...TIMESTAMP, nullable: true },
    stoppedAt: { ...TIMESTAMP, nullable: true },
    expiresAt: { ...TIMESTAMP, nullable: true },
    deletedAt: { ...TIMESTAMP, nullable: true },
    nextPlacementAt: { ...TIMESTAMP, nullable: true },
    placementAttempts: { type: 'integer', default: 0 },
    ports: { type: 'integer', default: 0 },
    restartRequestedAt: { ...TIMESTAMP, nullable: true },
    stdinFraming: { type: 'string', length: 20, default: 'PLAIN' },
  },
});

/**
 * Not soft-deleted. Queries on sandboxes get this from the soft-delete filter; write it out only
 * in a condition on a relation that may not join the sandboxes table (e.g. `{ sandbox: {} }`).
 */
export const ACTIVE_SANDBOX = { deletedAt: null } as const;
