import type { SecretKeyring } from '../auth/secret-keys.js';
import { type Channel, ChannelDelivery, ChannelThread, type DeliveryAttempt } from '../db/entities/channel.js';
import type { Message } from '../db/entities/message.js';
import { databaseKind, type Em, type Orm } from '../db/orm.js';
import type { Clock } from '../kernel/clock.js';
import { DomainError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import {
  DELIVERY_HEADER,
  openChannelSecret,
  SIGNATURE_HEADER,
  signParts,
  TIMESTAMP_HEADER,
} from './channel-signing.js';
import { runSql } from './locks.js';
import { inTransaction } from './outbox.js';

/** Advisory lock key serialising the claim of due deliveries across replicas on Postgres. */
export const CHANNEL_DRAINER_LOCK = 0x666c6368; // "flch"
/** Deliveries one claim takes (each of a different thread), sent in parallel. */
export const CHANNEL_CLAIM_BATCH = 50;
/** Pending deliveries one claim looks at to find each thread's next one. */
export const CHANNEL_SCAN_LIMIT = 1000;
/** A retry never waits longer than this, however many attempts failed. */
export const CHANNEL_RETRY_MAX_DELAY_MS = 10 * 60 * 1000;
/** A claimed delivery is held this long beyond the request timeout before another pass may retake it. */
export const CHANNEL_CLAIM_MARGIN_MS = 5_000;
/** When another replica was claiming, try again after this long. */
export const CHANNEL_CLAIM_RETRY_MS = 500;
/** The longest error text kept per attempt. */
const ERROR_MAX_LENGTH = 500;
/** Event data flag on MESSAGE_POSTED when the message was queued for a channel: it wakes the drainer. */
export const OUTBOUND_FLAG = 'outbound';

export interface ChannelDeliverySettings {
  /** The first retry waits this long; each further one twice as long (up to CHANNEL_RETRY_MAX_DELAY_MS). */
  retryBaseMs: number;
  /** Attempts before a delivery is FAILED for good. */
  maxAttempts: number;
  /** How long one POST may take. */
  timeoutMs: number;
}

export const DEFAULT_CHANNEL_DELIVERY: ChannelDeliverySettings = {
  retryBaseMs: 2_000,
  maxAttempts: 8,
  timeoutMs: 10_000,
};

/** The channel a sandbox's thread came in through, if any: where the agent's messages on it go out. */
export async function channelRouteOf(em: Em, sandboxId: string, threadId: string): Promise<Channel | null> {
  const bound = await em.findOne(ChannelThread, { sandbox: sandboxId, threadId }, { populate: ['channel'] });
  return bound?.channel ?? null;
}

/** What the receiver gets, as JSON. */
export interface OutboundPayload {
  [field: string]: unknown;
  id: string;
  channel: string;
  threadId: string;
  sandboxId: string;
  kind: string;
  body: string;
  createdAt: string;
}

/**
 * Queues `message` for `channel`, in the message's transaction (the drainer POSTs it after commit).
 * `extra` adds fields to the payload (e.g. a question's options), never replacing the common ones.
 */
export function enqueueDelivery(
  em: Em,
  channel: Channel,
  message: Message,
  kind: string,
  now: Date,
  extra: Record<string, unknown> = {},
): ChannelDelivery {
  const payload: OutboundPayload = {
    ...extra,
    id: message.id,
    channel: channel.name,
    threadId: message.threadId,
    sandboxId: message.sandbox.id,
    kind,
    body: message.body,
    createdAt: message.createdAt.toISOString(),
  };
  return em.create(ChannelDelivery, {
    channel: channel.id,
    message: message.id,
    threadId: message.threadId,
    payload: JSON.stringify(payload),
    nextAttemptAt: now,
    createdAt: now,
    eventTxId: message.eventTxId,
    eventId: message.eventId,
  });
}

/** The delay before attempt `failed + 1`, after `failed` failed ones. */
export function retryDelayMs(settings: ChannelDeliverySettings, failed: number): number {
  return Math.min(settings.retryBaseMs * 2 ** Math.max(0, failed - 1), CHANNEL_RETRY_MAX_DELAY_MS);
}

interface Claimed {
  id: string;
  url: string;
  /** Null when the channel's secret could not be opened: the attempt fails with `unsignable`. */
  secret: string | null;
  unsignable: string | null;
  payload: string;
}

/**
 * Drains the channel outbox: POSTs each due delivery, signed, and records the attempt. Per thread
 * of a channel, a delivery goes only once every earlier one succeeded or failed for good. It works
 * when told (a committed MESSAGE_POSTED carrying the outbound flag, read from the event log, so a
 * commit on any replica wakes it) and when the next retry falls due; with nothing pending it sets
 * no timer and issues no statement. On Postgres the claim of due deliveries is serialised by an
 * advisory lock, and a claimed delivery is held (its next attempt moved past the request timeout)
 * so no other replica sends it meanwhile; a replica that dies mid-send leaves it to be retaken.
 */
export class ChannelDrainer {
  private running: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Number.POSITIVE_INFINITY;
  private stopped = false;
  private started = false;
  private readonly stopping = new AbortController();

  constructor(
    private readonly orm: () => Orm | null,
    private readonly clock: Clock,
    private readonly settings: ChannelDeliverySettings = DEFAULT_CHANNEL_DELIVERY,
    private readonly logger?: Logger,
    /** The keyring channel secrets are sealed with (the server's). */
    private readonly secrets?: SecretKeyring,
  ) {}

  /**
   * Starts working on signals and due times. Reads (one statement) when the earliest delivery left
   * from before a restart is due, so a start with nothing pending does nothing more.
   */
  async start(orm: Orm): Promise<void> {
    this.started = true;
    const earliest = await orm.em
      .fork()
      .findOne(
        ChannelDelivery,
        { status: 'PENDING' },
        { orderBy: { nextAttemptAt: 'asc' }, fields: ['nextAttemptAt'] },
      );
    if (earliest) this.schedule(earliest.nextAttemptAt.getTime());
  }

  /** Stops: POSTs in flight are cut off unrecorded (their claim lapses and they are sent again later). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
  }

  /** An event read from the log: a message queued for a channel wakes the drainer. */
  noticed(event: { type: string; data: Record<string, unknown> }): void {
    if (event.type === 'MESSAGE_POSTED' && event.data[OUTBOUND_FLAG] === true) this.wake();
  }

  /** Runs a pass now (or right after the one in flight). */
  wake(): void {
    if (this.stopped || !this.started) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .catch((err: Error) => {
        this.logger?.error({ err: err.message }, 'channel delivery pass failed');
        this.schedule(this.clock.now().getTime() + CHANNEL_CLAIM_RETRY_MS * 4);
      })
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.wake();
        }
      });
  }

  /** Resolves once the pass in flight (if any) is done. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    const orm = this.orm();
    if (!orm) return;
    for (;;) {
      this.again = false;
      const claim = await this.claim(orm);
      if (claim === null) {
        this.schedule(this.clock.now().getTime() + CHANNEL_CLAIM_RETRY_MS);
        return;
      }
      if (claim.claimed.length === 0) {
        this.schedule(claim.nextDueAt);
        return;
      }
      await Promise.all(claim.claimed.map((d) => this.attempt(orm, d)));
      if (this.stopped) return;
    }
  }

  /** Claims due deliveries (each its thread's next); null when another replica is claiming. */
  private async claim(orm: Orm): Promise<{ claimed: Claimed[]; nextDueAt: number } | null> {
    return orm.em.fork().transactional(async (tx) => {
      if (databaseKind(orm) === 'postgres') {
        const [row] = await runSql<{ ok: boolean }[]>(tx, 'select pg_try_advisory_xact_lock(?) as ok', [
          CHANNEL_DRAINER_LOCK,
        ]);
        if (!row?.ok) return null;
      }
      const now = this.clock.now().getTime();
      const pending = await tx.find(
        ChannelDelivery,
        { status: 'PENDING' },
        {
          populate: ['channel'],
          orderBy: { eventTxId: 'asc', eventId: 'asc', id: 'asc' },
          limit: CHANNEL_SCAN_LIMIT,
        },
      );
      const seen = new Set<string>();
      const claimed: ChannelDelivery[] = [];
      let nextDueAt = pending.length === CHANNEL_SCAN_LIMIT ? now : Number.POSITIVE_INFINITY;
      for (const delivery of pending) {
        const thread = `${delivery.channel.id}\u0000${delivery.threadId}`;
        if (seen.has(thread)) continue; // waits for the thread's earlier delivery
        seen.add(thread);
        const due = delivery.nextAttemptAt.getTime();
        if (due <= now && claimed.length < CHANNEL_CLAIM_BATCH) claimed.push(delivery);
        else nextDueAt = Math.min(nextDueAt, due);
      }
      const holdUntil = new Date(now + this.settings.timeoutMs + CHANNEL_CLAIM_MARGIN_MS);
      for (const delivery of claimed) delivery.nextAttemptAt = holdUntil;
      await tx.flush();
      return {
        claimed: claimed.map((d) => ({
          id: d.id,
          url: d.channel.outboundUrl,
          payload: d.payload,
          ...this.secretOf(d),
        })),
        nextDueAt,
      };
    });
  }

  /**
   * The channel's secret to sign with. One that cannot be opened (its key is missing from this
   * server, or the row does not decrypt) fails the attempt with the reason, which names the key id.
   */
  private secretOf(delivery: ChannelDelivery): { secret: string | null; unsignable: string | null } {
    try {
      return { secret: openChannelSecret(this.secrets, delivery.channel), unsignable: null };
    } catch (err) {
      if (!(err instanceof DomainError)) throw err;
      this.logger?.warn({ channelId: delivery.channel.id, err: err.message }, 'cannot sign a channel delivery');
      return { secret: null, unsignable: `not sent: ${err.message}` };
    }
  }

  /** One POST of a claimed delivery, then its record: success, a retry at the backoff, or FAILED. */
  private async attempt(orm: Orm, delivery: Claimed): Promise<void> {
    const timestamp = String(Math.floor(this.clock.now().getTime() / 1000));
    const started = performance.now();
    let statusCode: number | null = null;
    let error: string | null = delivery.unsignable;
    if (delivery.secret !== null)
      try {
        const res = await fetch(delivery.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'flotilla-channels/1',
            [TIMESTAMP_HEADER]: timestamp,
            [SIGNATURE_HEADER]: signParts(delivery.secret, [timestamp, delivery.payload]),
            [DELIVERY_HEADER]: delivery.id,
          },
          body: delivery.payload,
          redirect: 'manual',
          signal: AbortSignal.any([AbortSignal.timeout(this.settings.timeoutMs), this.stopping.signal]),
        });
        statusCode = res.status;
        await res.body?.cancel();
        if (res.status < 200 || res.status > 299) error = `the receiver answered ${res.status}`;
      } catch (err) {
        const e = err as Error;
        error =
          e.name === 'TimeoutError'
            ? `no answer within ${this.settings.timeoutMs} ms`
            : `${e.message}${e.cause instanceof Error ? `: ${e.cause.message}` : ''}`;
      }
    const durationMs = Math.round(performance.now() - started);
    if (this.stopped) return;
    await inTransaction(orm.em.fork(), async (em) => {
      const row = await em.findOne(ChannelDelivery, { id: delivery.id });
      if (row?.status !== 'PENDING') return;
      const now = this.clock.now();
      const record: DeliveryAttempt = {
        number: row.attemptCount + 1,
        at: now.toISOString(),
        statusCode,
        error: error?.slice(0, ERROR_MAX_LENGTH) ?? null,
        durationMs,
      };
      row.attempts = [...row.attempts, record];
      row.attemptCount = record.number;
      if (error === null) {
        row.status = 'SUCCEEDED';
        row.completedAt = now;
      } else if (record.number >= this.settings.maxAttempts) {
        row.status = 'FAILED';
        row.completedAt = now;
      } else {
        row.nextAttemptAt = new Date(now.getTime() + retryDelayMs(this.settings, record.number));
      }
      await em.flush();
    });
  }

  private schedule(at: number): void {
    if (this.stopped || !Number.isFinite(at)) return;
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.min(Math.max(0, at - this.clock.now().getTime()), 2 ** 31 - 1);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.wake();
    }, delay);
    this.timer.unref();
  }
}
