import { WITH_DELETED } from '../db/entities/base.js';
import { Lease } from '../db/entities/lease.js';
import { ACTIVE_SANDBOX, Sandbox } from '../db/entities/sandbox.js';
import { Worker } from '../db/entities/worker.js';
import { databaseKind, type Orm } from '../db/orm.js';
import type { EventBus } from '../events/bus.js';
import type { Clock } from './context.js';
import { applyTransition, HOLDING_STATUSES, isHolding, releaseFromGoneWorker } from './lifecycle.js';
import { lockedRead } from './locks.js';
import { inTransaction, recordEvent } from './outbox.js';
import { heartbeatHorizon, schedulePending } from './scheduler.js';
import { transactionNow } from './time.js';

/** How often the domain sweeper runs. */
export const DOMAIN_SWEEP_INTERVAL_MS = 1_000;
/** Advisory lock key electing the one sweeping replica on Postgres. */
export const DOMAIN_SWEEPER_LOCK = 0x666c7377; // "flsw"
/** Rows one sweep handles per step, so a backlog never makes one pass unbounded. */
export const SWEEP_BATCH = 200;

export interface SweepResult {
  workersOffline: number;
  sandboxesLost: number;
  sandboxesExpired: number;
  sandboxesPlaced: number;
}

/**
 * The singleton that moves time-driven state: workers whose heartbeat is older than the TTL
 * go OFFLINE; sandboxes whose lease expired (or whose worker went away before leasing) go
 * LOST; sandboxes past expiresAt are stopped; PENDING and LOST sandboxes are placed. On
 * Postgres only the replica holding the advisory lock sweeps; SQLite has one process.
 */
export class DomainSweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<SweepResult | null> | null = null;

  constructor(
    private readonly orm: () => Orm | null,
    private readonly clock: Clock,
    private readonly heartbeatTtlSeconds: number,
    private readonly bus: EventBus,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  start(intervalMs: number = DOMAIN_SWEEP_INTERVAL_MS): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (!this.running) void this.runOnce().catch(this.onError);
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
  }

  /** One pass; null when another replica holds the sweeper lock or the store is not ready. */
  async runOnce(): Promise<SweepResult | null> {
    while (this.running) await this.running.catch(() => undefined);
    this.running = this.sweep();
    try {
      return await this.running;
    } finally {
      this.running = null;
    }
  }

  private async sweep(): Promise<SweepResult | null> {
    const orm = this.orm();
    if (!orm) return null;
    const postgres = databaseKind(orm) === 'postgres';
    const em = orm.em.fork();
    if (postgres) {
      // A session lock on one pooled connection: take and release it in one transaction's connection.
      return em.transactional(async (tx) => {
        const [row] = (await tx
          .getConnection()
          .execute(
            'select pg_try_advisory_xact_lock(?) as ok',
            [DOMAIN_SWEEPER_LOCK],
            'all',
            tx.getTransactionContext(),
          )) as { ok: boolean }[];
        if (!row?.ok) return null;
        return this.steps(orm, await transactionNow(tx, this.clock));
      });
    }
    return this.steps(orm, await transactionNow(em, this.clock));
  }

  /** `now` is read once, on the one time source (time.ts), when the pass starts: never ahead of any step. */
  private async steps(orm: Orm, now: Date): Promise<SweepResult> {
    const result: SweepResult = {
      workersOffline: await this.markWorkersOffline(orm, now),
      sandboxesLost: await this.markSandboxesLost(orm, now),
      sandboxesExpired: await this.stopExpiredSandboxes(orm, now),
      sandboxesPlaced: 0,
    };
    result.sandboxesPlaced = await schedulePending(orm.em.fork(), now, this.heartbeatTtlSeconds);
    if (result.workersOffline + result.sandboxesLost + result.sandboxesExpired + result.sandboxesPlaced > 0)
      this.bus.committed();
    return result;
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
        const lease = await em.findOne(Lease, { sandbox: id }, { refresh: true });
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
