import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema, softDeleteFilter, TIMESTAMP } from './base.js';
import { Tenant } from './tenant.js';

export const WORKER_STATUSES = ['ONLINE', 'DRAINING', 'OFFLINE'] as const;
export type WorkerStatus = (typeof WORKER_STATUSES)[number];

export class Worker extends BaseEntity<
  | 'status'
  | 'allocatedCpuMillis'
  | 'allocatedMemoryMb'
  | 'observed'
  | 'labels'
  | 'tenant'
  | 'region'
  | 'lastHeartbeatAt'
  | 'version'
  | 'tokenId'
  | 'deletedAt'
  | 'drainRequestedAt'
  | 'portsFrom'
  | 'portsTo'
  | 'publicBaseUrl'
  | 'allocatedPorts'
> {
  name!: string;
  /** null = a shared platform worker; otherwise dedicated to this tenant. */
  tenant: Tenant | null = null;
  status: WorkerStatus = 'ONLINE';
  region: string | null = null;
  labels: Record<string, string> = {};
  capacityCpuMillis!: number;
  capacityMemoryMb!: number;
  allocatedCpuMillis = 0;
  allocatedMemoryMb = 0;
  lastHeartbeatAt: Date | null = null;
  version: string | null = null;
  /** What the worker itself last reported it uses (free-form, from heartbeats). */
  observed: Record<string, unknown> | null = null;
  /** The id of the worker's current token; rotation replaces it. */
  tokenId: string | null = null;
  deletedAt: Date | null = null;
  /** Set by drainWorker, cleared by undrainWorker: a drain outlives the worker going offline and back. */
  drainRequestedAt: Date | null = null;
  /** The port range sandboxes on it may be given (both ends included); null = it offers no ports. */
  portsFrom: number | null = null;
  portsTo: number | null = null;
  /** Where its ports are reached from outside (http or https, no port), for the URLs of allocations. */
  publicBaseUrl: string | null = null;
  /** Ports of its range held by sandboxes (port_allocations rows), reserved with the capacity. */
  allocatedPorts = 0;
}

/** How many ports of its range a worker has free. */
export function freePorts(worker: Pick<Worker, 'portsFrom' | 'portsTo' | 'allocatedPorts'>): number {
  if (worker.portsFrom === null || worker.portsTo === null) return 0;
  return worker.portsTo - worker.portsFrom + 1 - worker.allocatedPorts;
}

/** Not soft-deleted; like ACTIVE_SANDBOX, only for a condition on a relation that may not join. */
export const ACTIVE_WORKER = { deletedAt: null } as const;

export const WorkerSchema = new EntitySchema<Worker, BaseEntity<string>>({
  class: Worker,
  tableName: 'workers',
  filters: softDeleteFilter,
  extends: BaseEntitySchema,
  properties: {
    name: { type: 'string', length: 200, unique: 'workers_name_unique' },
    tenant: { kind: 'm:1', entity: () => Tenant, nullable: true, deleteRule: 'cascade' },
    status: { type: 'string', length: 20 },
    region: { type: 'string', length: 100, nullable: true },
    labels: { type: 'json' },
    capacityCpuMillis: { type: 'integer' },
    capacityMemoryMb: { type: 'integer' },
    allocatedCpuMillis: { type: 'integer', default: 0 },
    allocatedMemoryMb: { type: 'integer', default: 0 },
    lastHeartbeatAt: { ...TIMESTAMP, nullable: true },
    version: { type: 'string', length: 100, nullable: true },
    observed: { type: 'json', nullable: true },
    tokenId: { type: 'string', length: 64, nullable: true },
    deletedAt: { ...TIMESTAMP, nullable: true },
    drainRequestedAt: { ...TIMESTAMP, nullable: true },
    portsFrom: { type: 'integer', nullable: true },
    portsTo: { type: 'integer', nullable: true },
    publicBaseUrl: { type: 'string', length: 500, nullable: true },
    allocatedPorts: { type: 'integer', default: 0 },
  },
});
