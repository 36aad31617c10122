import pg from 'pg';
import type { Logger } from '../kernel/logger.js';
import { EVENT_CHANNEL } from './log.js';

/** Reconnect delays of the LISTEN connection (ms): doubling from `initial` up to `max`. */
export const LISTEN_BACKOFF_MS = { initial: 100, max: 5_000 };
/** Give up on one connection attempt after this long (a black-holed network must not hang it). */
export const LISTEN_CONNECT_TIMEOUT_MS = 10_000;
/** TCP keepalive idle time: a silently dead connection is noticed in about this long, not hours. */
export const LISTEN_KEEPALIVE_MS = 10_000;

export interface PgListenerOptions {
  /** The Postgres URL. It must reach Postgres directly (or a session-mode pooler): LISTEN needs a session. */
  url: string;
  logger?: Logger;
  /** A NOTIFY arrived: a transaction that appended events (its id is the payload) has committed. */
  onNotify: () => void;
  /**
   * The connection is listening (again). NOTIFYs sent while it was down are lost, so the hub
   * must read everything after its last delivered cursor now.
   */
  onListening: () => void;
  backoffMs?: { initial: number; max: number };
}

/**
 * The one dedicated LISTEN connection of a process, outside the ORM pool. NOTIFY payloads are
 * only a wake-up reference (the body is read from the events table), so events of any size flow.
 * On loss it reconnects with backoff and re-LISTENs; `ready` is false meanwhile.
 */
export class PgListener {
  private client: pg.Client | null = null;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private delay: number;
  private readonly backoff: { initial: number; max: number };
  private listening = false;
  /** Reconnect attempts since start, one per loss plus one per failed retry (a metric). */
  reconnects = 0;
  /** NOTIFYs received since start (a metric). */
  notifications = 0;
  lastError: string | null = null;

  constructor(private readonly options: PgListenerOptions) {
    this.backoff = options.backoffMs ?? LISTEN_BACKOFF_MS;
    this.delay = this.backoff.initial;
  }

  /** True while the connection is up and listening; readiness depends on it. */
  get ready(): boolean {
    return this.listening;
  }

  /** Connects once; on failure keeps retrying in the background. Resolves true when listening. */
  async start(): Promise<boolean> {
    return this.connect();
  }

  /** The backend pid of the LISTEN connection (tests terminate it to simulate a network loss). */
  get backendPid(): number | null {
    const client = this.client as (pg.Client & { processID?: number }) | null;
    return this.listening ? (client?.processID ?? null) : null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.listening = false;
    if (this.timer) clearTimeout(this.timer);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<boolean> {
    if (this.stopped) return false;
    const client = new pg.Client({
      connectionString: this.options.url,
      keepAlive: true,
      keepAliveInitialDelayMillis: LISTEN_KEEPALIVE_MS,
      connectionTimeoutMillis: LISTEN_CONNECT_TIMEOUT_MS,
      application_name: 'flotilla-listen',
    });
    this.client = client;
    let lost = false;
    const onLost = (err?: Error): void => {
      if (lost) return;
      lost = true;
      this.listening = false;
      if (err) this.lastError = err.message;
      if (this.client === client) this.client = null;
      client.removeAllListeners('notification');
      void client.end().catch(() => undefined);
      if (this.stopped) return;
      this.options.logger?.warn({ err: this.lastError }, 'event LISTEN connection lost; reconnecting');
      this.scheduleReconnect();
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    client.on('notification', (msg) => {
      if (msg.channel !== EVENT_CHANNEL) return;
      this.notifications++;
      this.options.onNotify();
    });
    try {
      await client.connect();
      await client.query(`listen ${EVENT_CHANNEL}`);
    } catch (err) {
      onLost(err as Error);
      return false;
    }
    if (lost || this.stopped) return false;
    this.listening = true;
    this.delay = this.backoff.initial;
    this.lastError = null;
    // Catch up whatever was committed while not listening (or before the first LISTEN).
    this.options.onListening();
    return true;
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.timer) return;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, this.backoff.max);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reconnects++;
      void this.connect();
    }, delay);
    this.timer.unref();
  }
}
