import { AuditEntry } from '../db/entities/audit-entry.js';
import { isUuid } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import type { ServiceContext } from './context.js';
import { DomainError } from './errors.js';
import { inTransaction } from './outbox.js';

export interface AuditTarget {
  tenantId?: string | null;
  targetId?: string | null;
}

/** Audit entries deleted per statement by the retention sweep, so one pass never holds long locks. */
export const AUDIT_PRUNE_BATCH = 1000;

/**
 * Runs a mutation in one transaction that also writes its audit entry and appends the events it
 * recorded (outbox.ts), then wakes the event bus after commit. A committed change therefore
 * always has its entry and a rolled-back one never does; a failing audit write rolls the change
 * back with it. `describe` names the target once the work has succeeded (e.g. the id of what it
 * created), or returns null for a success that changed no state worth an entry (a routine
 * heartbeat or lease renewal; see docs/security.md).
 *
 * Refused and failed attempts are recorded after the rollback, best-effort, in a transaction of
 * their own: a failure to record one is logged and never changes the caller's answer.
 */
export async function audited<T>(
  ctx: ServiceContext,
  action: string,
  target: AuditTarget,
  work: (em: Em) => Promise<T>,
  describe?: (result: T) => AuditTarget | null,
): Promise<T> {
  let result: T;
  try {
    result = await inTransaction(
      ctx.em,
      async (tx) => {
        const done = await work(tx);
        const described = describe ? describe(done) : {};
        if (described !== null) {
          tx.persist(auditEntry(tx, ctx, action, { ...target, ...described }, 'ok'));
          await tx.flush();
        }
        return done;
      },
      ctx.sweep,
    );
  } catch (err) {
    await recordRefusal(ctx, action, target, err instanceof DomainError ? err.code : 'INTERNAL');
    throw err;
  }
  ctx.bus.committed();
  return result;
}

function auditEntry(em: Em, ctx: ServiceContext, action: string, target: AuditTarget, outcome: string): AuditEntry {
  return em.create(AuditEntry, {
    // A malformed id from the caller is kept as the target, never as a tenant reference.
    tenantId: target.tenantId && isUuid(target.tenantId) ? target.tenantId : null,
    actor: ctx.identity.subject,
    action,
    targetId: target.targetId ?? null,
    outcome,
    createdAt: ctx.clock.now(),
  });
}

async function recordRefusal(ctx: ServiceContext, action: string, target: AuditTarget, outcome: string) {
  try {
    const em = ctx.em.fork();
    em.persist(auditEntry(em, ctx, action, target, outcome));
    await em.flush();
  } catch (err) {
    ctx.logger?.warn({ err: (err as Error).message, action, outcome }, 'could not record a refused attempt');
  }
}

/**
 * Deletes audit entries created before `cutoff`, oldest first, at most `batches` statements of
 * `batchSize` rows; returns how many went. Called by the elected domain sweeper.
 */
export async function pruneAuditEntries(
  em: Em,
  cutoff: Date,
  batches: number,
  batchSize: number = AUDIT_PRUNE_BATCH,
): Promise<number> {
  let deleted = 0;
  for (let i = 0; i < batches; i++) {
    const expired = await em.find(
      AuditEntry,
      { createdAt: { $lt: cutoff } },
      { fields: ['id'], orderBy: { createdAt: 'asc' }, limit: batchSize, disableIdentityMap: true },
    );
    if (expired.length === 0) break;
    deleted += await em.nativeDelete(AuditEntry, { id: { $in: expired.map((e) => e.id) } });
    if (expired.length < batchSize) break;
  }
  return deleted;
}
