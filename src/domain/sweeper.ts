import { WITH_DELETED } from '../db/entities/base.js';
import { Lease } from '../db/entities/lease.js';
import { ACTIVE_SANDBOX, Sandbox } from '../db/entities/sandbox.js';
import { Worker } from '../db/entities/worker.js';
import { databaseKind, type Orm } from '../db/orm.js';
import type { EventBus } from '../events/bus.js';
import { pruneAuditEntries } from './audit.js';
import type { Clock } from './context.js';
import {
  DEFAULT_MESSAGE_DISPATCH_TIMEOUT_SECONDS,
  OLDEST_DISPATCH_SQL,
  reapStuckDispatches,
} from './delivery-state.js';
import {
  applyTransition,
  HOLDING_STATUSES,
  isHolding,
  PLACEMENT_BACKOFF_MAX_MS,
  releaseFromGoneWorker,
  UNPLACED_STATUSES,
} from './lifecycle.js';
import { lockedRead, runSql } from './locks.js';
import { MESSAGE_PRUNE_BATCHES_PER_SWEEP, messageExpirySql, pruneExpiredMessages } from './message-retention.js';
import { inTransaction, recordEvent } from './outbox.js';
import { heartbeatHorizon, placeWaiting } from './scheduler.js';
import type { SweepHints, SweepSignals } from './sweep-signals.js';
import { transactionNow } from './time.js';

/** How often the domain sweeper looks whether anything is due (a look costs no statement). */
export const DOMAIN_SWEEP_INTERVAL_MS = 1_000;
/** Advisory lock key electing the one sweeping replica on Postgres. */
export const DOMAIN_SWEEPER_LOCK = 0x666c7377; // "flsw"
/** Rows one sweep handles per step, so a backlog never makes one pass unbounded. */
export const SWEEP_BATCH = 200;
/**
 * Longest a sweeper trusts the due times it read: it re-reads them this often (one statement),
 * to catch changes no commit of this process told it about (another process's writes).
 */
export const DUE_RECHECK_INTERVAL_MS = 60_000;
/** A backoff retry pass also takes sandboxes due this soon, so the retries of many sandboxes share passes. */
export const PLACEMENT_RETRY_COALESCE_MS = 15_000;
/** Audit deletions (of AUDIT_PRUNE_BATCH rows each) per sweep; the rest waits for the next one. */
export const AUDIT_PRUNE_BATCHES_PER_SWEEP = 10;
/** Default audit retention, when the sweeper is not told (config: FLOTILLA_AUDIT_RETENTION_SECONDS). */
export const DEFAULT_AUDIT_RETENTION_SECONDS = 90 * 24 * 3600;

export interface SweepResult {
  workersOffline: number;
  sandboxesLost: number;
  sandboxesExpired: number;
  sandboxesPlaced: number;
  auditPruned: number;
  messagesPruned: number;
  /** Messages DISPATCHED past the timeout, put back to PENDING (delivery.ts). */
  dispatchesReaped: number;
}

export interface DomainSweeperOptions {
  auditRetentionSeconds?: number;
  /** Message retention of tenants that set none (0 or absent: their messages are kept). */
  messageRetentionSeconds?: number;
  messageDispatchTimeoutSeconds?: number;
}

const NEVER = Number.POSITIVE_INFINITY;

/**
 * The singleton that moves time-driven state: workers whose heartbeat is older than the TTL
 * go OFFLINE; sandboxes whose lease expired (or whose worker went away before leasing) go
 * LOST; sandboxes past expiresAt are stopped; audit entries past their retention are pruned, and
 * so are messages past their tenant's retention (message-retention.ts).
 * On Postgres only the replica holding the advisory lock does that; SQLite has one process.
 *
 * It works only when something is due, so an idle server issues (almost) no statements: after
 * each pass it reads, in one statement, when the next piece of time-driven work falls due and
 * when the next backoff retry of a waiting sandbox does; commits of this process move those
 * times earlier (sweep-signals.ts). Placement is driven by triggers (a commit that can let a
 * waiting sandbox be placed runs a pass over the whole backlog at once) plus each sandbox's own
 * backoff retry. Placement needs no election: every placement is row-locked and re-checked, so
 * the replica that saw the trigger places.
 */
export class DomainSweeper implements SweepSignals {
  private timer: NodeJS.Timeout | null = null;
  private soon: NodeJS.Timeout | null = null;
  private running: Promise<SweepResult | null> | null = null;
  private readonly auditRetentionMs: number;
  private readonly messageRetentionSeconds: number;
  private readonly dispatchTimeoutSeconds: number;
  /** A trigger fired (or the process just started): the next pass tries every waiting sandbox. */
  private placementWanted = true;
  /** When time-driven work next falls due (epoch ms of the sweeper's clock). */
  private checksDueAt = 0;
  /** Hinted due times that arrived while the due times were being read. */
  private hintedDueAt = NEVER;
  /** When the oldest DISPATCHED message can have timed out (a hinted commit may bring it forward). */
  private dispatchDueAt = 0;
  /** When audit entries next pass their retention. */
  private auditDueAt = 0;
  /** When the oldest message of a tenant with a message retention passes it. */
  private messagesDueAt = 0;
  /** When the next backoff retry of a waiting sandbox falls due. */
  private retryDueAt = 0;
  /** No live worker had room at the last pass: no backoff retry before this (a trigger still places). */
  private noWorkerUntil = 0;
  /** When the due times are read again whatever happened. */
  private recheckAt = 0;

  constructor(
    private readonly orm: () => Orm | null,
    private readonly clock: Clock,
    private readonly heartbeatTtlSeconds: number,
    private readonly bus: EventBus,
    private readonly onError: (err: unknown) => void = () => undefined,
    options: DomainSweeperOptions = {},
  ) {
    this.auditRetentionMs = (options.auditRetentionSeconds ?? DEFAULT_AUDIT_RETENTION_SECONDS) * 1000;
    this.messageRetentionSeconds = options.messageRetentionSeconds ?? 0;
    this.dispatchTimeoutSeconds = options.messageDispatchTimeoutSeconds ?? DEFAULT_MESSAGE_DISPATCH_TIMEOUT_SECONDS;
  }

  start(intervalMs: number = DOMAIN_SWEEP_INTERVAL_MS): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (!this.running) void this.runIfDue().catch(this.onError);
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.soon) clearTimeout(this.soon);
    this.timer = null;
    this.soon = null;
    await this.running?.catch(() => undefined);
  }

  /** Told after a commit of this process: what it may have made possible or due. */
  committed(hints: SweepHints): void {
    if (hints.dueAt) {
      this.checksDueAt = Math.min(this.checksDueAt, hints.dueAt.getTime());
      this.hintedDueAt = Math.min(this.hintedDueAt, hints.dueAt.getTime());
      this.dispatchDueAt = Math.min(this.dispatchDueAt, hints.dueAt.getTime());
    }
    if (hints.placement) {
      this.placementWanted = true;
      // Place promptly rather than on the next tick (only when running on the timer).
      if (this.timer && !this.soon) {
        this.soon = setTimeout(() => {
          this.soon = null;
          void this.runIfDue().catch(this.onError);
        }, 0);
        this.soon.unref();
      }
    }
  }

  /**
   * A full pass: every check, and placement of every waiting sandbox. Null when the store is not
   * ready, or when another replica holds the sweeper lock (placement still runs: it needs no election).
   */
  async runOnce(): Promise<SweepResult | null> {
    return this.exclusive(() => this.sweep(true));
  }

  /** What the timer runs: only the work that is due or was triggered; null (and no statement) when none is. */
  async runIfDue(): Promise<SweepResult | null> {
    return this.exclusive(() => this.sweep(false));
  }

  private async exclusive(pass: () => Promise<SweepResult | null>): Promise<SweepResult | null> {
    while (this.running) await this.running.catch(() => undefined);
    this.running = pass();
    try {
      return await this.running;
    } finally {
      this.running = null;
    }
  }

  private async sweep(force: boolean): Promise<SweepResult | null> {
    const orm = this.orm();
    if (!orm) return null;
    const now = this.clock.now();
    const t = now.getTime();
    const checks = force || t >= this.checksDueAt;
    const triggered = force || this.placementWanted;
    const retry = t >= Math.max(this.retryDueAt, this.noWorkerUntil);
    if (!checks && !triggered && !retry && t < this.recheckAt) return null;

    const result: SweepResult = {
      workersOffline: 0,
      sandboxesLost: 0,
      sandboxesExpired: 0,
      sandboxesPlaced: 0,
      auditPruned: 0,
      messagesPruned: 0,
      dispatchesReaped: 0,
    };
    // Not elected: another replica is sweeping now; the checks stay due and are tried next tick.
    // The checks judge heartbeat age and lease expiry on the one time source (time.ts), read in the lock's transaction.
    const elected = !checks || (await this.elected(orm, (checkNow) => this.checks(orm, checkNow, force, result)));
    const changed =
      result.workersOffline + result.sandboxesLost + result.sandboxesExpired + result.dispatchesReaped > 0;
    // Sandboxes that went LOST wait to be placed again; stopped ones released capacity.
    const released = result.sandboxesLost + result.sandboxesExpired > 0;
    if (triggered || released || retry) {
      const wholeBacklog = triggered || released;
      if (wholeBacklog) this.placementWanted = false;
      const pass = await placeWaiting(
        () => orm.em.fork(),
        // Which workers are alive is judged on the one time source, like the checks.
        await transactionNow(orm.em.fork(), this.clock),
        this.heartbeatTtlSeconds,
        wholeBacklog ? 'all' : { dueBy: new Date(t + PLACEMENT_RETRY_COALESCE_MS) },
      );
      result.sandboxesPlaced = pass.placed;
      this.noWorkerUntil = pass.anyWorker ? 0 : t + PLACEMENT_BACKOFF_MAX_MS;
    }
    if (elected) await this.readDueTimes(orm, now);
    if (changed || result.sandboxesPlaced > 0) this.bus.committed();
    return elected ? result : null;
  }

  /** Runs `work` on the one elected replica (Postgres) with the database's now; false when another replica holds the lock. */
  private async elected(orm: Orm, work: (now: Date) => Promise<void>): Promise<boolean> {
    if (databaseKind(orm) !== 'postgres') {
      await work(await transactionNow(orm.em.fork(), this.clock));
      return true;
    }
    // A transaction-scoped lock on one pooled connection, held while the checks run on others.
    return orm.em.fork().transactional(async (tx) => {
      const [row] = await runSql<{ ok: boolean }[]>(tx, 'select pg_try_advisory_xact_lock(?) as ok', [
        DOMAIN_SWEEPER_LOCK,
      ]);
      if (!row?.ok) return false;
      await work(await transactionNow(tx, this.clock));
      return true;
    });
  }

  private async checks(orm: Orm, now: Date, force: boolean, result: SweepResult): Promise<void> {
    result.workersOffline = await this.markWorkersOffline(orm, now);
    result.sandboxesLost = await this.markSandboxesLost(orm, now);
    result.sandboxesExpired = await this.stopExpiredSandboxes(orm, now);
    if (force || now.getTime() >= this.auditDueAt) {
      const cutoff = new Date(now.getTime() - this.auditRetentionMs);
      result.auditPruned = await pruneAuditEntries(orm.em.fork(), cutoff, AUDIT_PRUNE_BATCHES_PER_SWEEP);
    }
    if (force || now.getTime() >= this.messagesDueAt)
      result.messagesPruned = await pruneExpiredMessages(
        orm,
        now,
        MESSAGE_PRUNE_BATCHES_PER_SWEEP,
        this.messageRetentionSeconds,
      );
    if (force || now.getTime() >= this.dispatchDueAt)
      result.dispatchesReaped = await reapStuckDispatches(orm, now, this.dispatchTimeoutSeconds);
  }

  /**
   * One statement: when the next worker passes its heartbeat TTL, lease or sandbox TTL expires,
   * orphaned sandbox waits, audit entry or message passes its retention, and backoff retry falls due.
   */
  private async readDueTimes(orm: Orm, now: Date): Promise<void> {
    const holding = HOLDING_STATUSES.map((s) => `'${s}'`).join(', ');
    const expiring = ['PENDING', 'LOST', 'SCHEDULED', 'STARTING', 'RUNNING'].map((s) => `'${s}'`).join(', ');
    const waiting = UNPLACED_STATUSES.map((s) => `'${s}'`).join(', ');
    this.hintedDueAt = NEVER;
    const [row] = await runSql<Record<string, unknown>[]>(
      orm.em.fork(),
      `select
        (select min(coalesce(w.last_heartbeat_at, w.created_at)) from workers w
          where w.status <> 'OFFLINE' and w.deleted_at is null) as worker_sign,
        (select min(l.expires_at) from leases l join sandboxes s on s.id = l.sandbox_id
          where s.status in (${holding}) and s.deleted_at is null and not (${STALE_LEASE_SQL})) as lease_expiry,
        (select min(s.expires_at) from sandboxes s
          where s.status in (${expiring}) and s.deleted_at is null) as sandbox_expiry,
        (select count(*) from sandboxes s join workers w on w.id = s.worker_id
          where s.status in (${holding}) and s.deleted_at is null
            and (w.status = 'OFFLINE' or w.deleted_at is not null)
            and not exists (select 1 from leases l where l.sandbox_id = s.id and not (${STALE_LEASE_SQL}))) as orphaned,
        (select min(a.created_at) from audit_entries a) as oldest_audit,
        ${messageExpirySql(orm, this.messageRetentionSeconds)} as message_expiry,
        ${OLDEST_DISPATCH_SQL} as oldest_dispatch,
        (select min(s.next_placement_at) from sandboxes s
          where s.status in (${waiting}) and s.deleted_at is null) as next_retry`,
      [],
    );
    const t = now.getTime();
    const workerSign = epochMs(row?.worker_sign);
    const oldestAudit = epochMs(row?.oldest_audit);
    const oldestDispatch = epochMs(row?.oldest_dispatch);
    this.auditDueAt = oldestAudit === null ? NEVER : oldestAudit + this.auditRetentionMs + 1;
    const messageExpiry = epochMs(row?.message_expiry);
    this.messagesDueAt = messageExpiry === null ? NEVER : messageExpiry + 1;
    this.dispatchDueAt = oldestDispatch === null ? NEVER : oldestDispatch + this.dispatchTimeoutSeconds * 1000 + 1;
    this.checksDueAt = Math.min(
      workerSign === null ? NEVER : workerSign + this.heartbeatTtlSeconds * 1000 + 1,
      epochMs(row?.lease_expiry) ?? NEVER,
      epochMs(row?.sandbox_expiry) ?? NEVER,
      Number(row?.orphaned ?? 0) > 0 ? t : NEVER,
      this.auditDueAt,
      this.messagesDueAt,
      this.dispatchDueAt,
      this.hintedDueAt,
    );
    this.retryDueAt = epochMs(row?.next_retry) ?? NEVER;
    this.recheckAt = t + DUE_RECHECK_INTERVAL_MS;
  }

  private async markWorkersOffline(orm: Orm, now: Date): Promise<number> {
    const horizon = heartbeatHorizon(now, this.heartbeatTtlSeconds);
    const stale = await orm.em.fork().find(
      Worker,
      {
        status: { $ne: 'OFFLINE' },
        $or: [{ lastHeartbeatAt: { $lt: horizon } }, { lastHeartbeatAt: null, createdAt: { $lt: horizon } }],
      },
      { fields: ['id'], limit: SWEEP_BATCH },
    );
    let changed = 0;
    for (const { id } of stale) {
      const done = await inTransaction(orm.em.fork(), async (em) => {
        const worker = await em.findOne(Worker, id, lockedRead(em));
        const lastSign = worker ? (worker.lastHeartbeatAt ?? worker.createdAt) : null;
        if (!worker || worker.status === 'OFFLINE' || !lastSign || lastSign.getTime() >= horizon.getTime())
          return false;
        const from = worker.status;
        worker.status = 'OFFLINE';
        await em.flush();
        recordEvent(
          em,
          {
            type: 'WORKER_STATUS_CHANGED',
            tenantId: worker.tenant?.id ?? null,
            workerId: id,
            data: { from, to: 'OFFLINE' },
          },
          now,
        );
        return true;
      });
      if (done) changed += 1;
    }
    return changed;
  }

  /** Placed sandboxes whose lease expired, or whose worker is OFFLINE and never leased them. */
  private async markSandboxesLost(orm: Orm, now: Date): Promise<number> {
    const read = orm.em.fork();
    const expiredLeases = await read.find(
      Lease,
      { expiresAt: { $lte: now }, sandbox: { status: { $in: [...HOLDING_STATUSES] } } },
      { fields: ['sandbox'], limit: SWEEP_BATCH },
    );
    const orphaned = await read.find(
      Sandbox,
      {
        ...ACTIVE_SANDBOX,
        status: { $in: [...HOLDING_STATUSES] },
        worker: { $or: [{ status: 'OFFLINE' }, { deletedAt: { $ne: null } }] },
      },
      // The filter would hide deleted workers from the join; the sandbox side is written out above.
      { fields: ['id'], limit: SWEEP_BATCH, ...WITH_DELETED },
    );
    const ids = new Set([...expiredLeases.map((l) => l.sandbox.id), ...orphaned.map((s) => s.id)]);
    let changed = 0;
    for (const id of ids) {
      const done = await inTransaction(orm.em.fork(), async (em) => {
        const sandbox = await em.findOne(Sandbox, id, lockedRead(em));
        if (!sandbox || !isHolding(sandbox.status)) return false;
        const found = await em.findOne(Lease, { sandbox: id }, { refresh: true });
        const lease = found && !staleLease(sandbox, found) ? found : null;
        if (lease && lease.expiresAt.getTime() > now.getTime()) return false;
        if (!lease) {
          const worker = sandbox.worker
            ? await em.findOne(Worker, sandbox.worker.id, { refresh: true, ...WITH_DELETED })
            : null;
          if (worker && worker.status !== 'OFFLINE' && !worker.deletedAt) return false;
        }
        await releaseFromGoneWorker(em, sandbox, now, lease ? 'lease expired' : 'worker offline');
        return true;
      });
      if (done) changed += 1;
    }
    return changed;
  }

  private async stopExpiredSandboxes(orm: Orm, now: Date): Promise<number> {
    const expired = await orm.em.fork().find(
      Sandbox,
      {
        expiresAt: { $lte: now },
        status: { $in: ['PENDING', 'LOST', 'SCHEDULED', 'STARTING', 'RUNNING'] },
      },
      { fields: ['id'], limit: SWEEP_BATCH },
    );
    let changed = 0;
    for (const { id } of expired) {
      const done = await inTransaction(orm.em.fork(), async (em) => {
        const sandbox = await em.findOne(Sandbox, id, lockedRead(em));
        if (!sandbox?.expiresAt || sandbox.expiresAt.getTime() > now.getTime()) return false;
        if (isHolding(sandbox.status) && sandbox.status !== 'STOPPING') {
          await applyTransition(em, sandbox, 'STOPPING', now, { reason: 'ttl expired' });
          recordEvent(
            em,
            {
              type: 'SANDBOX_STOP_REQUESTED',
              tenantId: sandbox.tenant.id,
              sandboxId: id,
              workerId: sandbox.worker?.id ?? null,
              data: { workerId: sandbox.worker?.id ?? null, reason: 'ttl expired' },
            },
            now,
          );
          return true;
        }
        if (sandbox.status === 'PENDING' || sandbox.status === 'LOST') {
          await applyTransition(em, sandbox, 'STOPPED', now, { reason: 'ttl expired' });
          return true;
        }
        return false;
      });
      if (done) changed += 1;
    }
    return changed;
  }
}

/** A timestamp as a raw query returns it: a Date (Postgres) or epoch milliseconds (SQLite). */
function epochMs(value: unknown): number | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return value.getTime();
  if (typeof value === 'number') return value;
  const text = String(value);
  return /^\d+$/.test(text) ? Number(text) : Date.parse(text);
}

/**
 * A lease that ended before the sandbox's current placement (it went LOST and was placed again,
 * on the same worker or another) says nothing about that placement: until the placed worker
 * acquires, only the worker's liveness counts. Placement leaves a sandbox SCHEDULED and stamps
 * its updatedAt, and nothing else changes a SCHEDULED sandbox before its worker acquires.
 */
function staleLease(sandbox: Sandbox, lease: Lease): boolean {
  return sandbox.status === 'SCHEDULED' && lease.expiresAt.getTime() <= sandbox.updatedAt.getTime();
}
const STALE_LEASE_SQL = `s.status = 'SCHEDULED' and l.expires_at <= s.updated_at`;
