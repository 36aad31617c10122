import { Event } from '../db/entities/event.js';
import type { Em, Orm } from '../db/orm.js';
import { databaseKind } from '../db/orm.js';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';

/** How often the sweeper looks for expired events. */
export const SWEEP_INTERVAL_MS = 60_000;
/** Events deleted per statement, so one sweep never holds long locks or a huge transaction. */
export const SWEEP_BATCH_SIZE = 1000;
/** Advisory lock key electing the one sweeping replica on Postgres ("swep"). */
export const SWEEPER_LOCK = 0x73776570;

export interface EventSweeperOptions {
  retentionSeconds: number;
  clock: Clock;
  logger?: Logger;
  intervalMs?: number;
  batchSize?: number;
}

export interface SweepResult {
  /** False when another replica holds the sweeper lock (Postgres). */
  elected: boolean;
  deleted: number;
}

/**
 * Prunes events older than the retention period. It always removes a prefix of the log (every
 * id up to the newest expired one), which is what lets a cursor be recognised as expired
 * (reader.ts resolveCursor). On Postgres one replica at a time sweeps, elected with
 * pg_try_advisory_xact_lock per batch; on SQLite there is one process.
 */
export class EventSweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<SweepResult> | null = null;
  private stopped = false;

  constructor(
    private readonly orm: Orm,
    private readonly options: EventSweeperOptions,
  ) {}

  start(): void {
    const interval = this.options.intervalMs ?? SWEEP_INTERVAL_MS;
    this.timer = setInterval(
      () =>
        void this.sweepOnce().catch((err: Error) =>
          this.options.logger?.warn({ err: err.message }, 'event sweep failed'),
        ),
      interval,
    );
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One sweep; concurrent calls share it. */
  sweepOnce(): Promise<SweepResult> {
    this.running ??= this.sweep().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async sweep(): Promise<SweepResult> {
    const cutoff = new Date(this.options.clock.now().getTime() - this.options.retentionSeconds * 1000);
    const batch = this.options.batchSize ?? SWEEP_BATCH_SIZE;
    const postgres = databaseKind(this.orm) === 'postgres';
    const em: Em = this.orm.em.fork();
    const knex = em.getKnex();
    // Prune by id up to the newest expired event, so what remains is always a suffix of the log.
    const newest = await em.findOne(
      Event,
      { createdAt: { $lt: cutoff } },
      { orderBy: { id: 'desc' }, fields: ['id'], disableIdentityMap: true },
    );
    if (!newest) return { elected: true, deleted: 0 };
    const through = newest.id;
    let deleted = 0;
    while (!this.stopped) {
      // One short transaction per batch. On Postgres each takes the transaction-scoped form of the
      // sweeper lock (pool-safe: it cannot leak onto a pooled connection); a replica that fails to
      // get it stops, leaving the sweep to the one that holds it.
      const count = await knex.transaction(async (trx): Promise<number | null> => {
        if (postgres) {
          const result = (await trx.raw('select pg_try_advisory_xact_lock(?) as ok', [SWEEPER_LOCK])) as {
            rows: { ok: boolean }[];
          };
          if (!result.rows[0]?.ok) return null;
        }
        const ids = trx('events').select('id').where('id', '<=', through).orderBy('id').limit(batch);
        return (await trx('events').whereIn('id', ids).delete()) as number;
      });
      if (count === null) return { elected: false, deleted };
      deleted += count;
      if (count < batch) break;
    }
    if (deleted > 0) this.options.logger?.info({ deleted, through: String(through) }, 'pruned expired events');
    return { elected: true, deleted };
  }
}
