import { Message } from '../db/entities/message.js';
import { Tenant } from '../db/entities/tenant.js';
import { databaseKind, type Em, type Orm } from '../db/orm.js';
import { InvalidCursorError } from '../events/errors.js';
import { encodeEventCursor, type LogPosition, logPosition } from '../events/reader.js';
import { ValidationError } from './errors.js';

/**
 * Message retention, per tenant and off by default: a tenant ADMIN sets `messageRetentionDays`
 * (updateTenant); tenants that set none follow the platform's FLOTILLA_MESSAGE_RETENTION_SECONDS
 * (0, the default: kept forever). The elected domain sweeper deletes messages older than that,
 * in bounded batches. Each batch also moves the tenant's pruned-through mark (the log position of
 * the newest message deleted), so a message cursor from before it is refused as expired instead
 * of silently skipping what was deleted, as event cursors are past the event retention.
 */

/** Longest retention a tenant may set. */
export const MAX_MESSAGE_RETENTION_DAYS = 3650;
/** Messages deleted by one statement. */
export const MESSAGE_PRUNE_BATCH = 500;
/** Message deletions (of MESSAGE_PRUNE_BATCH rows each) per sweep, all tenants together; the rest waits. */
export const MESSAGE_PRUNE_BATCHES_PER_SWEEP = 10;

const DAY_MS = 24 * 3600 * 1000;

/** A retention as updateTenant takes it: whole days from 1 to the maximum, or null for none. */
export function validateMessageRetention(days: number | null): number | null {
  if (days === null) return null;
  if (!Number.isInteger(days) || days < 1 || days > MAX_MESSAGE_RETENTION_DAYS)
    throw new ValidationError(
      `messageRetentionDays must be 1 to ${MAX_MESSAGE_RETENTION_DAYS} days, or null for the platform's message retention`,
      'input.messageRetentionDays',
    );
  return days;
}

/**
 * A SQL expression (for the sweeper's one due-time statement): when the oldest message of any
 * tenant with a retention (its own, or the platform's `defaultSeconds`) passes it. Uses
 * messages_tenant_created_index per such tenant.
 */
export function messageExpirySql(orm: Orm, defaultSeconds: number): string {
  const fallback = Math.trunc(defaultSeconds); // a validated integer, written inline
  const shift =
    databaseKind(orm) === 'postgres'
      ? `coalesce(t.message_retention_days * interval '1 day', ${fallback} * interval '1 second')`
      : `coalesce(t.message_retention_days * ${DAY_MS}, ${fallback * 1000})`;
  const retained =
    fallback > 0
      ? '(t.message_retention_days > 0 or t.message_retention_days is null)'
      : 't.message_retention_days > 0';
  return `(select min((select min(m.created_at) from messages m where m.tenant_id = t.id) + ${shift})
          from tenants t where ${retained})`;
}

/**
 * Deletes messages past their tenant's retention (its own, or `defaultSeconds` when it set none;
 * 0: none), oldest first, at most `batches` statements of `batchSize` rows over all tenants;
 * returns how many went. Called by the elected domain sweeper.
 */
export async function pruneExpiredMessages(
  orm: Orm,
  now: Date,
  batches: number,
  defaultSeconds = 0,
  batchSize: number = MESSAGE_PRUNE_BATCH,
): Promise<number> {
  const tenants = await orm.em
    .fork()
    .find(
      Tenant,
      defaultSeconds > 0
        ? { $or: [{ messageRetentionDays: { $gt: 0 } }, { messageRetentionDays: null }] }
        : { messageRetentionDays: { $gt: 0 } },
      { fields: ['id', 'messageRetentionDays'], orderBy: { id: 'asc' }, disableIdentityMap: true },
    );
  let deleted = 0;
  let left = batches;
  for (const tenant of tenants) {
    const retentionMs =
      tenant.messageRetentionDays !== null ? tenant.messageRetentionDays * DAY_MS : defaultSeconds * 1000;
    const cutoff = new Date(now.getTime() - retentionMs);
    while (left > 0) {
      left -= 1;
      const count = await pruneBatch(orm.em.fork(), tenant.id, cutoff, batchSize);
      deleted += count;
      if (count < batchSize) break;
    }
    if (left === 0) break;
  }
  return deleted;
}

/** One batch in one transaction: the delete and the tenant's pruned-through mark commit together. */
async function pruneBatch(em: Em, tenantId: string, cutoff: Date, batchSize: number): Promise<number> {
  return em.transactional(async (tx) => {
    const expired = await tx.find(
      Message,
      { tenant: tenantId, createdAt: { $lt: cutoff } },
      {
        fields: ['id', 'eventTxId', 'eventId'],
        orderBy: { createdAt: 'asc' },
        limit: batchSize,
        disableIdentityMap: true,
      },
    );
    if (expired.length === 0) return 0;
    const [tenant] = await tx.find(
      Tenant,
      { id: tenantId },
      { fields: ['messagesPrunedTxId', 'messagesPrunedId'], disableIdentityMap: true },
    );
    let mark = tenant ? logPosition(tenant.messagesPrunedTxId, tenant.messagesPrunedId) : 0n;
    let markTx = tenant?.messagesPrunedTxId ?? '0';
    let markId = tenant?.messagesPrunedId ?? '0';
    for (const m of expired) {
      const position = logPosition(m.eventTxId, m.eventId);
      if (position > mark) {
        mark = position;
        markTx = m.eventTxId;
        markId = m.eventId;
      }
    }
    const count = await tx.nativeDelete(Message, { id: { $in: expired.map((m) => m.id) } });
    await tx.nativeUpdate(Tenant, { id: tenantId }, { messagesPrunedTxId: markTx, messagesPrunedId: markId });
    return count;
  });
}

/** Refuses a message cursor of the tenant when messages after it were pruned (INVALID_CURSOR, EXPIRED). */
export async function requireUnprunedMessageCursor(em: Em, tenantId: string, after: LogPosition): Promise<void> {
  const [tenant] = await em.find(
    Tenant,
    { id: tenantId },
    { fields: ['messagesPrunedTxId', 'messagesPrunedId'], disableIdentityMap: true },
  );
  if (tenant && logPosition(tenant.messagesPrunedTxId, tenant.messagesPrunedId) > after)
    throw new InvalidCursorError(encodeEventCursor(after), 'EXPIRED');
}
