import type { DatabaseTarget } from '../config/index.js';
import type { Orm } from '../db/orm.js';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import type { EventBus } from './bus.js';
import { EventHub, type EventHubOptions } from './hub.js';
import { PgListener } from './pg-listener.js';
import { EventSweeper } from './sweeper.js';

export interface EventStreamOptions {
  target: DatabaseTarget;
  /** Postgres: a direct URL for the LISTEN connection when `target` goes through a transaction pooler. */
  listenTarget?: DatabaseTarget;
  /** The process's in-process bus: services tell it after each commit. */
  bus: EventBus;
  clock: Clock;
  retentionSeconds: number;
  logger?: Logger;
  hub?: EventHubOptions;
  sweepIntervalMs?: number;
}

/**
 * A process's event machinery, started once the database is ready: the hub, woken by the
 * in-process bus after local commits and, on Postgres, by the LISTEN connection (NOTIFY from
 * every replica, and a catch-up read after each reconnect); plus the retention sweeper.
 */
export class EventStream {
  private constructor(
    readonly hub: EventHub,
    readonly listener: PgListener | null,
    readonly sweeper: EventSweeper,
    private readonly unsubscribeBus: () => void,
  ) {}

  static async start(orm: Orm, options: EventStreamOptions): Promise<EventStream> {
    const hub = new EventHub(orm, { logger: options.logger, ...options.hub });
    await hub.start();
    const unsubscribeBus = options.bus.onCommitted(() => hub.wake());
    let listener: PgListener | null = null;
    if (options.target.kind === 'postgres') {
      listener = new PgListener({
        url: (options.listenTarget ?? options.target).location,
        logger: options.logger,
        onNotify: () => hub.wake(),
        onListening: () => hub.wake(),
      });
      // When it fails now it keeps retrying; readiness reports it meanwhile.
      await listener.start();
    }
    const sweeper = new EventSweeper(orm, {
      retentionSeconds: options.retentionSeconds,
      clock: options.clock,
      logger: options.logger,
      intervalMs: options.sweepIntervalMs,
    });
    sweeper.start();
    return new EventStream(hub, listener, sweeper, unsubscribeBus);
  }

  /** Ready when live events can flow: always on SQLite, while LISTENing on Postgres. */
  readiness(): { ok: boolean; reason?: string } {
    if (!this.listener || this.listener.ready) return { ok: true };
    return {
      ok: false,
      reason: `event LISTEN connection is down${this.listener.lastError ? `: ${this.listener.lastError}` : ''}`,
    };
  }

  stats(): { listenerReady: boolean; listenerReconnects: number; subscribers: number; slowClosed: number } {
    return {
      listenerReady: this.listener ? this.listener.ready : true,
      listenerReconnects: this.listener?.reconnects ?? 0,
      subscribers: this.hub.subscriberCount,
      slowClosed: this.hub.slowClosed,
    };
  }

  async close(): Promise<void> {
    this.unsubscribeBus();
    await this.sweeper.stop();
    await this.hub.close();
    await this.listener?.stop();
  }
}
