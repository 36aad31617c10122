import type { Em, Orm } from '../db/orm.js';
import { databaseKind } from '../db/orm.js';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import {
  afterPositionSql,
  encodeEventCursor,
  eventIdOf,
  logPosition,
  POSTGRES_HORIZON_SQL,
  sqlInteger,
  txIdOf,
} from './reader.js';

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
 * Prunes events older than the retention period. It always removes a prefix of the log in
 * position order (every event up to the newest expired one that readers can already see) and,
 * in the same transaction as each delete, moves the log's pruned-through mark (event_log_state)
 * to the last position removed. That mark is what makes a cursor expired, exactly (reader.ts
 * resolveCursor), and what a replay checks after each page. On Postgres one replica at a time
 * sweeps, elected with pg_try_advisory_xact_lock per batch; on SQLite there is one process.
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
    // Only below the horizon: an event a running transaction may still precede is not prunable yet,
    // so nothing can ever commit at or before the pruned-through mark.
    const newest = (await em.getConnection().execute(
      `select "tx_id", "id" from "events" where "created_at" < ?${postgres ? ` and "tx_id" < ${POSTGRES_HORIZON_SQL}` : ''} order by "tx_id" desc, "id" desc limit 1`,
      // SQLite stores timestamps as epoch milliseconds.
      [postgres ? cutoff : cutoff.getTime()],
    )) as { tx_id: string | number; id: string | number }[];
    if (!newest[0]) return { elected: true, deleted: 0 };
    const through = logPosition(newest[0].tx_id, newest[0].id);
    let deleted = 0;
    while (!this.stopped) {
      // One short transaction per batch. On Postgres each takes the transaction-scoped form of the
      // sweeper lock (pool-safe: it cannot leak onto a pooled connection); a replica that fails to
      // get it stops, leaving the sweep to the one that holds it.
      const count = await em.transactional(async (tx): Promise<number | null> => {
        const conn = tx.getConnection();
        const ctx = tx.getTransactionContext();
        if (postgres) {
          const [lock] = (await conn.execute(
            'select pg_try_advisory_xact_lock(?) as ok',
            [SWEEPER_LOCK],
            'all',
            ctx,
          )) as {
            ok: boolean;
          }[];
          if (!lock?.ok) return null;
        }
        const upTo = afterPositionSql(tx, '"tx_id", "id"', through);
        const rows = (await conn.execute(
          `select "tx_id", "id" from "events" where not ${upTo.sql} order by "tx_id", "id" limit ?`,
          [...upTo.params, batch],
          'all',
          ctx,
        )) as { tx_id: string | number; id: string | number }[];
        const last = rows.at(-1);
        if (!last) return 0;
        await conn.execute(
          `delete from "events" where "id" in (${rows.map(() => '?').join(', ')})`,
          rows.map((r) => r.id),
          'run',
          ctx,
        );
        // Positions only grow: a mark already further (another sweeper's) stays.
        const mark = logPosition(last.tx_id, last.id);
        const ahead = afterPositionSql(tx, '"pruned_tx_id", "pruned_id"', mark);
        await conn.execute(
          `update "event_log_state" set "pruned_tx_id" = ?, "pruned_id" = ? where not ${ahead.sql}`,
          [sqlInteger(tx, txIdOf(mark)), sqlInteger(tx, eventIdOf(mark)), ...ahead.params],
          'run',
          ctx,
        );
        return rows.length;
      });
      if (count === null) return { elected: false, deleted };
      deleted += count;
      if (count < batch) break;
    }
    if (deleted > 0)
      this.options.logger?.info({ deleted, through: encodeEventCursor(through) }, 'pruned expired events');
    return { elected: true, deleted };
  }
}
