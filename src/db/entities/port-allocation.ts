import { EntitySchema } from '@mikro-orm/core';
import { BaseEntity, BaseEntitySchema } from './base.js';
import { Sandbox } from './sandbox.js';
import { Worker } from './worker.js';

/**
 * One port of a worker's range held by a sandbox placed on it, from placement until the sandbox
 * stops reserving capacity. The unique (worker, port) index makes a double allocation impossible.
 */
export class PortAllocation extends BaseEntity<'url'> {
  sandbox!: Sandbox;
  worker!: Worker;
  /** 'A', 'B', … in the order the sandbox's ports were allocated (lowest port first). */
  name!: string;
  port!: number;
  /** The worker's public base URL with the port, or null when the worker declared none. */
  url: string | null = null;
}

export const PortAllocationSchema = new EntitySchema<PortAllocation, BaseEntity<string>>({
  class: PortAllocation,
  tableName: 'port_allocations',
  extends: BaseEntitySchema,
  uniques: [{ name: 'port_allocations_worker_port_unique', properties: ['worker', 'port'] }],
  indexes: [{ name: 'port_allocations_sandbox_index', properties: ['sandbox'] }],
  properties: {
    sandbox: { kind: 'm:1', entity: () => Sandbox, deleteRule: 'cascade' },
    worker: { kind: 'm:1', entity: () => Worker, deleteRule: 'cascade' },
    name: { type: 'string', length: 4 },
    port: { type: 'integer' },
    url: { type: 'string', length: 600, nullable: true },
  },
});
