import { PortAllocation } from '../db/entities/port-allocation.js';
import type { Sandbox } from '../db/entities/sandbox.js';
import type { Worker } from '../db/entities/worker.js';
import type { Em } from '../db/orm.js';
import { runSql } from './locks.js';

/**
 * The port pool of a worker (docs/domain-api.md, "Ports"). The count of held ports is reserved
 * with the capacity (reserveCapacity's conditional UPDATE of the worker row, which also locks it
 * until commit on Postgres; SQLite serialises writers), so choosing which ports comes after the
 * reservation and sees every earlier commit. The unique (worker, port) index is the last word.
 */

/** The name of a sandbox's i-th port: A, B, … */
export function portName(index: number): string {
  return String.fromCharCode(65 + index);
}

/** `publicBaseUrl:port`, or null without a base URL. */
export function portUrl(publicBaseUrl: string | null, port: number): string | null {
  return publicBaseUrl ? `${publicBaseUrl}:${port}` : null;
}

/**
 * Allocates the sandbox's ports on the worker whose capacity (port count included) was just
 * reserved for it: the lowest free ports of the range, named A, B, … in port order.
 */
export async function allocatePorts(
  em: Em,
  sandbox: Sandbox,
  worker: Pick<Worker, 'id' | 'portsFrom' | 'portsTo' | 'publicBaseUrl'>,
  now: Date,
): Promise<void> {
  if (sandbox.ports === 0) return;
  if (worker.portsFrom === null || worker.portsTo === null) throw new Error(`worker ${worker.id} offers no ports`);
  const held = await runSql<{ port: number | string }[]>(
    em,
    'select port from port_allocations where worker_id = ? order by port',
    [worker.id],
  );
  const taken = new Set(held.map((row) => Number(row.port)));
  const chosen: number[] = [];
  for (let port = worker.portsFrom; port <= worker.portsTo && chosen.length < sandbox.ports; port++) {
    if (!taken.has(port)) chosen.push(port);
  }
  // The reservation counted free ports; fewer here means the count and the rows disagree.
  if (chosen.length < sandbox.ports) throw new Error(`worker ${worker.id} has fewer free ports than it counts`);
  chosen.forEach((port, index) => {
    em.create(PortAllocation, {
      sandbox: sandbox.id,
      worker: worker.id,
      name: portName(index),
      port,
      url: portUrl(worker.publicBaseUrl, port),
      createdAt: now,
    });
  });
  await em.flush();
}

/** Frees every port the sandbox holds (its worker's count is released with the capacity). */
export async function releasePorts(em: Em, sandbox: Pick<Sandbox, 'id' | 'ports'>): Promise<void> {
  if (sandbox.ports === 0) return;
  await em.nativeDelete(PortAllocation, { sandbox: sandbox.id });
}
