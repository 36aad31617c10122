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

/**
 * Runs a mutation in one transaction (which appends the events it recorded at its end, see outbox.ts), wakes the
 * event bus after commit, and then records its audit entry in a transaction of its own, so
 * refused and failed attempts are audited too. `describe` names the target once
 * the work has succeeded (e.g. the id of what it created).
 */
export async function audited<T>(
  ctx: ServiceContext,
  action: string,
  target: AuditTarget,
  work: (em: Em) => Promise<T>,
  describe?: (result: T) => AuditTarget,
): Promise<T> {
  let outcome = 'ok';
  let finalTarget = target;
  try {
    const result = await inTransaction(ctx.em, work);
    ctx.bus.committed();
    if (describe) finalTarget = { ...target, ...describe(result) };
    return result;
  } catch (err) {
    outcome = err instanceof DomainError ? err.code : 'INTERNAL';
    throw err;
  } finally {
    const em = ctx.em.fork();
    const now = ctx.clock.now();
    em.persist(
      em.create(AuditEntry, {
        // A malformed id from the caller is kept as the target, never as a tenant reference.
        tenantId: finalTarget.tenantId && isUuid(finalTarget.tenantId) ? finalTarget.tenantId : null,
        actor: ctx.identity.subject,
        action,
        targetId: finalTarget.targetId ?? null,
        outcome,
        createdAt: now,
      }),
    );
    await em.flush();
  }
}
