import type { Identity } from '../auth/identity.js';
import { Lease } from '../db/entities/lease.js';
import { Sandbox } from '../db/entities/sandbox.js';
import { Worker } from '../db/entities/worker.js';
import { isUuid } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { audited } from './audit.js';
import type { Clock, ServiceContext } from './context.js';
import { voidDispatches } from './delivery-state.js';
import {
  ForbiddenError,
  LeaseConflictError,
  NotFoundError,
  StaleFencingTokenError,
  ValidationError,
} from './errors.js';
import { LEASABLE_STATUSES, UNPLACED_STATUSES } from './lifecycle.js';
import { lockedRead } from './locks.js';
import { recordEvent } from './outbox.js';
import { dueBy } from './sweep-signals.js';
import { transactionNow } from './time.js';

/** Lease lifetimes a worker may ask for. */
export const MIN_LEASE_TTL_SECONDS = 1;
export const MAX_LEASE_TTL_SECONDS = 3_600;
export const DEFAULT_LEASE_TTL_SECONDS = 30;

export interface AcquireLeaseInput {
  sandboxId: string;
  ttlSeconds?: number | null;
}

export interface RenewLeaseInput extends AcquireLeaseInput {
  fencingToken: string;
}

export interface ReleaseLeaseInput {
  sandboxId: string;
  fencingToken: string;
}

function leaseTtl(ttl: number | null | undefined): number {
  const value = ttl ?? DEFAULT_LEASE_TTL_SECONDS;
  if (!Number.isInteger(value) || value < MIN_LEASE_TTL_SECONDS || value > MAX_LEASE_TTL_SECONDS) {
    throw new ValidationError(
      `ttlSeconds must be from ${MIN_LEASE_TTL_SECONDS} to ${MAX_LEASE_TTL_SECONDS}`,
      'input.ttlSeconds',
    );
  }
  return value;
}

function parseToken(token: string): bigint {
  if (!/^\d{1,20}$/.test(token))
    throw new ValidationError('fencingToken must be a decimal number', 'input.fencingToken');
  return BigInt(token);
}

function workerOf(identity: Identity, scope: string): string {
  if (!identity.workerId || !identity.scopes.has(scope))
    throw new ForbiddenError(`needs a worker token with scope ${scope}`);
  return identity.workerId;
}

/** A sandbox as the calling worker sees it, with its lease row (if any). */
interface WorkerView {
  sandbox: Sandbox;
  lease: Lease | null;
}

/**
 * Locks the sandbox row (Postgres: FOR UPDATE, first, so every lease operation and fenced write
 * on one sandbox is serialised) and reads its lease. A worker sees a sandbox placed on it or
 * whose lease it holds; any other answers exactly like a missing id, so a worker never learns
 * whether another worker's (or another tenant's) sandbox exists.
 */
async function lockSandboxFor(em: Em, workerId: string, sandboxId: string): Promise<WorkerView> {
  const sandbox = isUuid(sandboxId) ? await em.findOne(Sandbox, sandboxId, lockedRead(em)) : null;
  const lease = sandbox ? await em.findOne(Lease, { sandbox: sandbox.id }, { refresh: true }) : null;
  if (!sandbox || (sandbox.worker?.id !== workerId && lease?.holder.id !== workerId))
    throw new NotFoundError('Sandbox', sandboxId);
  return { sandbox, lease };
}

/** True when the sandbox is placed on the worker now: only then may the worker acquire its lease. */
function placedOn(sandbox: Sandbox, workerId: string): boolean {
  return sandbox.worker?.id === workerId && !UNPLACED_STATUSES.includes(sandbox.status);
}

/**
 * The fence of every worker write about a sandbox: the caller must hold the sandbox's live
 * lease with exactly the current token. Returns the row-locked sandbox.
 */
export async function requireFencingToken(
  em: Em,
  identity: Identity,
  scope: string,
  sandboxId: string,
  token: string,
  clock: Clock,
): Promise<Sandbox> {
  const workerId = workerOf(identity, scope);
  const presented = parseToken(token);
  const { sandbox, lease } = await lockSandboxFor(em, workerId, sandboxId);
  const now = await transactionNow(em, clock);
  if (
    !lease ||
    BigInt(lease.fencingToken) !== presented ||
    lease.holder.id !== workerId ||
    lease.expiresAt.getTime() <= now.getTime()
  ) {
    throw new StaleFencingTokenError(presented.toString(), lease ? lease.fencingToken : null);
  }
  return sandbox;
}

export class LeaseService {
  constructor(private readonly ctx: ServiceContext) {}

  /**
   * Acquires the sandbox's lease for the worker it is placed on (anyone else, and anyone for a
   * sandbox waiting to be placed, gets NotFoundError as for a missing id): when there is none,
   * when it expired (a takeover) or when the caller holds it. The fencing token grows by one
   * every time, and the row is never deleted, so a released-then-reacquired lease still grows.
   */
  async acquire(input: AcquireLeaseInput): Promise<Lease> {
    return audited(
      this.ctx,
      'acquireLease',
      { targetId: input.sandboxId },
      async (em) => {
        const workerId = workerOf(this.ctx.identity, 'worker:lease');
        const ttl = leaseTtl(input.ttlSeconds);
        const view = await lockSandboxFor(em, workerId, input.sandboxId);
        const sandbox = view.sandbox;
        if (!placedOn(sandbox, workerId)) throw new NotFoundError('Sandbox', input.sandboxId);
        if (!LEASABLE_STATUSES.includes(sandbox.status))
          throw new LeaseConflictError(`a ${sandbox.status} sandbox cannot be leased`);
        const now = await transactionNow(em, this.ctx.clock);
        const expiresAt = new Date(now.getTime() + ttl * 1000);
        let lease = view.lease;
        let previousHolder: string | null = null;
        if (!lease) {
          lease = em.create(Lease, {
            sandbox: sandbox.id,
            holder: workerId,
            fencingToken: '1',
            acquiredAt: now,
            renewedAt: now,
            expiresAt,
            transitions: 0,
            createdAt: now,
          });
        } else {
          previousHolder = lease.holder.id;
          const live = lease.expiresAt.getTime() > now.getTime();
          if (live && previousHolder !== workerId) throw new LeaseConflictError('another worker holds the lease');
          lease.fencingToken = (BigInt(lease.fencingToken) + 1n).toString();
          if (previousHolder !== workerId) lease.transitions += 1;
          lease.holder = em.getReference(Worker, workerId);
          lease.acquiredAt = now;
          lease.renewedAt = now;
          lease.expiresAt = expiresAt;
        }
        await em.flush();
        dueBy(em, expiresAt);
        // A new lease on a sandbox leased before: its process is new, so unconfirmed dispatches are void.
        if (view.lease) await voidDispatches(em, sandbox, now);
        recordEvent(
          em,
          {
            type: 'LEASE_CHANGED',
            tenantId: sandbox.tenant.id,
            sandboxId: sandbox.id,
            workerId,
            leaseId: lease.id,
            data: {
              action: previousHolder && previousHolder !== workerId ? 'takeover' : 'acquired',
              fencingToken: lease.fencingToken,
              from: previousHolder,
              to: workerId,
            },
          },
          now,
        );
        return lease;
      },
      (l) => ({ tenantId: l.sandbox.tenant?.id ?? null }),
    );
  }

  /**
   * Extends the holder's live lease. Renewals append no event and no audit entry (they would
   * flood both; the acquire and the release or takeover are recorded); refused ones are audited.
   */
  async renew(input: RenewLeaseInput): Promise<Lease> {
    return audited(
      this.ctx,
      'renewLease',
      { targetId: input.sandboxId },
      async (em) => {
        const ttl = leaseTtl(input.ttlSeconds);
        const lease = await this.held(em, input.sandboxId, input.fencingToken);
        const now = await transactionNow(em, this.ctx.clock);
        lease.renewedAt = now;
        lease.expiresAt = new Date(now.getTime() + ttl * 1000);
        await em.flush();
        dueBy(em, lease.expiresAt);
        return lease;
      },
      () => null,
    );
  }

  /** Ends the holder's lease now; the row (and its token counter) stays. */
  async release(input: ReleaseLeaseInput): Promise<Lease> {
    return audited(this.ctx, 'releaseLease', { targetId: input.sandboxId }, async (em) => {
      const lease = await this.held(em, input.sandboxId, input.fencingToken);
      const now = await transactionNow(em, this.ctx.clock);
      lease.expiresAt = now;
      await em.flush();
      // Its sandbox is now without a live lease: the sweeper settles it (LOST or STOPPED).
      dueBy(em, now);
      const sandbox = await em.findOneOrFail(Sandbox, lease.sandbox.id);
      recordEvent(
        em,
        {
          type: 'LEASE_CHANGED',
          tenantId: sandbox.tenant.id,
          sandboxId: sandbox.id,
          workerId: lease.holder.id,
          leaseId: lease.id,
          data: { action: 'released', fencingToken: lease.fencingToken },
        },
        now,
      );
      return lease;
    });
  }

  /** The caller's live lease with the presented token, or the error saying why not. */
  private async held(em: Em, sandboxId: string, token: string): Promise<Lease> {
    const workerId = workerOf(this.ctx.identity, 'worker:lease');
    const presented = parseToken(token);
    const { lease } = await lockSandboxFor(em, workerId, sandboxId);
    const now = await transactionNow(em, this.ctx.clock);
    if (!lease || lease.holder.id !== workerId) throw new LeaseConflictError('the caller does not hold this lease');
    if (BigInt(lease.fencingToken) !== presented)
      throw new StaleFencingTokenError(presented.toString(), lease.fencingToken);
    if (lease.expiresAt.getTime() <= now.getTime())
      throw new LeaseConflictError('the lease has expired; acquire it again');
    return lease;
  }
}
