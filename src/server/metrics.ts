import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { LiveExecutionStats } from './live-execution.js';

export interface EventStreamStats {
  listenerReady: boolean;
  listenerReconnects: number;
  subscribers: number;
  slowClosed: number;
}

/** The server's Prometheus metrics, on a registry of its own (several servers may share a process in tests). */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({
    name: 'flotilla_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: 'flotilla_http_request_duration_seconds',
    help: 'HTTP request duration by route',
    labelNames: ['route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly wsConnections = new Gauge({
    name: 'flotilla_websocket_connections',
    help: 'Open graphql-ws connections',
    registers: [this.registry],
  });
  readonly dbStatements = new Counter({
    name: 'flotilla_db_statements_total',
    help: 'SQL statements sent to the database since start',
    registers: [this.registry],
  });
  readonly databaseReady = new Gauge({
    name: 'flotilla_database_ready',
    help: '1 when the database is connected and migrated',
    registers: [this.registry],
  });

  private eventStats: (() => EventStreamStats) | null = null;
  readonly eventListenerReady = this.scrapedGauge(
    () => this.eventStats?.() ?? null,
    'flotilla_event_listener_ready',
    '1 while the event stream is fed: the Postgres LISTEN connection is up (always 1 on SQLite once started)',
    (stats) => (stats.listenerReady ? 1 : 0),
  );
  readonly eventListenerReconnects = this.scrapedGauge(
    () => this.eventStats?.() ?? null,
    'flotilla_event_listener_reconnects',
    'Times the Postgres LISTEN connection was lost and a reconnect attempted since start',
    (stats) => stats.listenerReconnects,
  );
  readonly eventSubscribers = this.scrapedGauge(
    () => this.eventStats?.() ?? null,
    'flotilla_event_subscribers',
    'Open event subscriptions in this process',
    (stats) => stats.subscribers,
  );
  readonly eventSubscribersClosedSlow = this.scrapedGauge(
    () => this.eventStats?.() ?? null,
    'flotilla_event_subscribers_closed_slow',
    'Event subscriptions closed since start because their client fell too far behind',
    (stats) => stats.slowClosed,
  );

  private liveStats: (() => LiveExecutionStats) | null = null;
  readonly liveGroups = this.scrapedGauge(
    () => this.liveStats?.() ?? null,
    'flotilla_live_groups',
    'Groups of live subscriptions that share one execution per event',
    (stats) => stats.groups,
  );
  readonly liveExecutions = this.scrapedGauge(
    () => this.liveStats?.() ?? null,
    'flotilla_live_executions',
    'Selections executed for live subscriptions since start (once per event per group)',
    (stats) => stats.executions,
  );
  readonly liveDeliveries = this.scrapedGauge(
    () => this.liveStats?.() ?? null,
    'flotilla_live_deliveries',
    'Results handed to live subscribers since start',
    (stats) => stats.deliveries,
  );

  /** Reads the shared execution's figures at scrape time. */
  watchLiveExecution(stats: () => LiveExecutionStats): void {
    this.liveStats = stats;
  }

  /** Reads the event stream's figures at scrape time. */
  watchEvents(stats: () => EventStreamStats): void {
    this.eventStats = stats;
  }

  /** A gauge read at scrape time from a source that may not be running yet (0 until it is). */
  private scrapedGauge<S>(source: () => S | null, name: string, help: string, pick: (stats: S) => number): Gauge {
    return new Gauge({
      name,
      help,
      registers: [this.registry],
      collect(this: Gauge) {
        const stats = source();
        this.set(stats ? pick(stats) : 0);
      },
    });
  }

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'flotilla_' });
  }
}
