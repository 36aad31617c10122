import { hasTenantRole } from '../auth/identity.js';
import type { EventType } from '../db/entities/event.js';
import { isUuid } from '../db/ids.js';
import { StreamAccess, type StreamTarget } from '../events/authorize.js';
import type { EventHub, EventSubscription } from '../events/hub.js';
import { decodeEventCursor, type LogEvent } from '../events/reader.js';
import type { ServiceContext } from './context.js';
import { ForbiddenError, NotFoundError, UnavailableError } from './errors.js';
import { requireUnprunedMessageCursor } from './message-retention.js';
import { SandboxService } from './sandboxes.js';
import { WorkerService } from './workers.js';

/** What a worker's work queue carries. */
export const ASSIGNMENT_EVENT_TYPES: readonly EventType[] = [
  'SANDBOX_ASSIGNED',
  'SANDBOX_STOP_REQUESTED',
  'SANDBOX_RESTART_REQUESTED',
];

/**
 * Opens the live streams of the contract's subscriptions. Each checks at subscribe time that the
 * caller may see what it asks for (another tenant's object reads as missing), and every event is
 * checked again against the caller's identity as it is delivered.
 */
export class SubscriptionService {
  constructor(private readonly ctx: ServiceContext) {}

  private hub(): EventHub {
    const hub = this.ctx.events?.();
    if (!hub) throw new UnavailableError('live events are not available yet');
    return hub;
  }

  /**
   * `target` names the tenant whose data the stream follows and the role that takes: losing it
   * ends the stream; losing a role elsewhere narrows what the stream sees (src/events/hub.ts).
   */
  private open(
    match: Parameters<EventHub['subscribe']>[0]['match'],
    target: StreamTarget | null,
    after: string | null | undefined,
    narrow?: (e: LogEvent) => boolean,
  ): Promise<EventSubscription> {
    const access = new StreamAccess(this.ctx.identity, target);
    return this.hub().subscribe({
      match,
      after: after ?? null,
      authorize: narrow ? (e) => access.sees(e) && narrow(e) : (e) => access.sees(e),
      principal: access,
    });
  }

  /**
   * Where a subscription without `after` starts if it subscribes now: a client that keeps it
   * resumes a stream that was cut before its first event without missing what came meanwhile.
   */
  startCursor(): string {
    return this.hub().startCursor();
  }

  /** Everything that happens to one sandbox the caller can see. */
  async sandboxEvents(sandboxId: string, after?: string | null): Promise<EventSubscription> {
    const tenantId = await this.requireSandbox(sandboxId);
    return this.open({ sandboxId }, { tenantId, role: 'VIEWER' }, after);
  }

  /** Everything in a tenant, optionally only some types. */
  async tenantEvents(
    tenantId: string,
    after?: string | null,
    types?: readonly EventType[] | null,
  ): Promise<EventSubscription> {
    if (!isUuid(tenantId) || !hasTenantRole(this.ctx.identity, tenantId, 'VIEWER'))
      throw new NotFoundError('Tenant', tenantId);
    return this.open({ tenantId, ...(types?.length ? { types } : {}) }, { tenantId, role: 'VIEWER' }, after);
  }

  /** A worker's own work queue: assignments and stop requests. */
  async workerAssignments(workerId: string, after?: string | null): Promise<EventSubscription> {
    const identity = this.ctx.identity;
    let target: StreamTarget | null = null;
    if (identity.workerId !== null) {
      if (identity.workerId !== workerId)
        throw new ForbiddenError('a worker token may only follow its own assignments');
    } else {
      const [worker] = await new WorkerService(this.ctx).findVisibleByIds([workerId]);
      if (!worker) throw new NotFoundError('Worker', workerId);
      const managesIt =
        identity.platformAdmin || (worker.tenant !== null && hasTenantRole(identity, worker.tenant.id, 'ADMIN'));
      if (!managesIt)
        throw new ForbiddenError('only the worker itself or its administrators may follow its assignments');
      // A dedicated worker's administrators follow it while they hold ADMIN in its tenant.
      if (worker.tenant !== null) target = { tenantId: worker.tenant.id, role: 'ADMIN' };
    }
    return this.open({ workerId, types: ASSIGNMENT_EVENT_TYPES }, target, after);
  }

  /** Messages of one sandbox, optionally of one thread. */
  async messageAdded(sandboxId: string, threadId?: string | null, after?: string | null): Promise<EventSubscription> {
    const tenantId = await this.requireSandbox(sandboxId);
    const thread = threadId ?? null;
    // A replay from before pruned messages would skip them (or name messages that are gone).
    const from = after ? decodeEventCursor(after) : null;
    if (from !== null) await requireUnprunedMessageCursor(this.ctx.em, tenantId, from);
    return this.open(
      { sandboxId, types: ['MESSAGE_POSTED'] },
      { tenantId, role: 'VIEWER' },
      after,
      (e) => thread === null || e.data.threadId === thread,
    );
  }

  /** The sandbox's tenant, if the caller may see it. */
  private async requireSandbox(sandboxId: string): Promise<string> {
    const [sandbox] = await new SandboxService(this.ctx).findVisibleByIds([sandboxId]);
    if (!sandbox) throw new NotFoundError('Sandbox', sandboxId);
    return sandbox.tenant.id;
  }
}
