import type { Identity } from '../auth/identity.js';
import { TENANT_ROLES, type TenantRole } from '../db/entities/member.js';
import type { Orm } from '../db/orm.js';
import type { Logger } from '../kernel/logger.js';
import { InvalidCursorError, SubscriberTooSlowError, SubscriptionEndedError } from './errors.js';
import {
  type EventFilter,
  encodeEventCursor,
  type LogEvent,
  type LogPosition,
  latestPosition,
  matchesFilter,
  prunedThrough,
  readLog,
  resolveCursor,
} from './reader.js';

/** Events one subscriber may have waiting; past this it is closed as too slow (memory stays bounded). */
export const SUBSCRIBER_QUEUE_LIMIT = 1000;
/** Events the hub reads per query when going live; each is read once for all subscribers. */
export const HUB_BATCH_SIZE = 500;
/** Events one replaying subscriber reads per query; at most half a queue, so replay never overflows it. */
export const REPLAY_PAGE_SIZE = 250;
/** Safety net for lost wake-ups (e.g. a NOTIFY missed between reconnects): read the log this often anyway. */
export const HUB_POLL_INTERVAL_MS = 2000;
/** After a failed read (database down), try again this soon. */
export const HUB_RETRY_DELAY_MS = 250;
/**
 * Committed events held back by an older transaction still running (Postgres) are read again
 * this soon, doubling while they stay held back (up to the poll interval): the transaction that
 * holds them may end without a NOTIFY (it wrote no event, or it belongs to another application).
 */
export const HUB_HORIZON_RECHECK_MS = 10;
/**
 * Waiting consumers woken per turn of the event loop. Each wake-up runs that subscriber's whole
 * delivery (execution result, frame, socket write) as microtasks; 50 keep a turn near a
 * millisecond, so a request (several turns: parse, auth, reads) is not held up by a large
 * fan-out. Measured at 10,000 subscribers (bench/RESULTS.md): 200 per turn delivered ~20% sooner
 * but let a concurrent query's p99 reach ~150 ms; 50 keeps it near 50 ms.
 */
export const HAND_OVER_PER_TURN = 50;

export interface EventHubOptions {
  queueLimit?: number;
  batchSize?: number;
  replayPageSize?: number;
  /** 0 disables the periodic read (tests that drive wake-ups themselves). */
  pollIntervalMs?: number;
  logger?: Logger;
  /**
   * Told of every access change (TOKEN_REVOKED, MEMBER_REMOVED, MEMBER_CHANGED) as the hub reads it,
   * before later events go out: e.g. the process's cache of verified tokens drops what it no longer grants.
   */
  onAccessChange?: (event: LogEvent) => void;
  /** Told of every event the live stream reads, in order (e.g. the channel drainer wakes on queued messages). */
  onEvent?: (event: LogEvent) => void;
}

const ACCESS_CHANGES: ReadonlySet<string> = new Set(['TOKEN_REVOKED', 'MEMBER_REMOVED', 'MEMBER_CHANGED']);

/**
 * The subject's role in the event's tenant after a removal (null) or a lowering; undefined when
 * the event takes nothing away (a raise leaves open streams as they are). A role the hub does not
 * know counts as none.
 */
function roleAfter(event: LogEvent): TenantRole | null | undefined {
  if (event.type === 'MEMBER_REMOVED') return null;
  if (event.type !== 'MEMBER_CHANGED' || event.data.lowered !== true) return undefined;
  const role = event.data.role;
  return typeof role === 'string' && (TENANT_ROLES as readonly string[]).includes(role) ? (role as TenantRole) : null;
}

/** Who holds a subscription, so the server can end a subject's streams (revoked token, removed member). */
export interface SubscriberPrincipal {
  subject: string;
  tokenId?: string | null;
  tenantIds?: readonly string[];
  /** The identity the stream acts as now: the one it subscribed with, or what an access change narrowed it to. */
  readonly identity?: Identity;
  /**
   * The subject's membership of a tenant was removed (role null) or lowered: narrows what the
   * stream may see and answers whether it may go on. Without it, a stream whose principal held
   * the tenant ends.
   */
  membershipChanged?(tenantId: string, role: TenantRole | null): boolean;
}

export interface SubscribeOptions {
  /** Which events; applied in SQL on replay and in memory when live. */
  match: EventFilter;
  /** Per-event authorization, e.g. "may this identity see this tenant?". Throwing counts as no. */
  authorize?: (event: LogEvent) => boolean;
  /** Resume after this cursor (replay from the log first); without it, only events from now on. */
  after?: string | null;
  principal?: SubscriberPrincipal;
}

/** A live stream of events; `return()` (or `break` in `for await`) unsubscribes. */
export interface EventSubscription extends AsyncIterableIterator<LogEvent> {
  /** The cursor of the last event handed out (or the starting point): where a resume continues. */
  readonly lastCursor: string;
  /** False while replaying from the log; true once the stream has joined the live feed. */
  readonly live: boolean;
  /** Events waiting for the consumer; never more than the hub's queue limit. */
  readonly queued: number;
  /** Who holds the stream (as given to `subscribe`); an access change may narrow it while it runs. */
  readonly principal: SubscriberPrincipal | undefined;
}

type Pending = { events: LogEvent[]; overflowed: boolean };

class Subscriber implements EventSubscription {
  private readonly queue: LogEvent[] = [];
  /** Consumers waiting in next(), oldest first (callers may ask again before an answer). */
  private readonly waiters: { resolve: (result: IteratorResult<LogEvent>) => void; reject: (err: Error) => void }[] =
    [];
  private spaceWaiter: (() => void) | null = null;
  private roomWanted = 0;
  private failure: Error | null = null;
  finished = false;
  /** Every matching event up to this position has been queued (or skipped as unauthorised). Compared per event per subscriber. */
  position: LogPosition;
  /** Set while replaying: live events seen by the hub since the current replay query began. */
  pending: Pending | null = null;
  lastCursor: string;

  get live(): boolean {
    return this.pending === null && !this.finished;
  }

  constructor(
    private readonly hub: Pick<EventHub, 'remove' | 'ready'>,
    readonly options: SubscribeOptions,
    start: LogPosition,
    readonly queueLimit: number,
  ) {
    this.position = start;
    this.lastCursor = encodeEventCursor(start);
  }

  get queued(): number {
    return this.queue.length;
  }

  get principal(): SubscriberPrincipal | undefined {
    return this.options.principal;
  }

  accepts(event: LogEvent): boolean {
    if (!matchesFilter(event, this.options.match)) return false;
    if (!this.options.authorize) return true;
    try {
      return this.options.authorize(event);
    } catch {
      return false; // fail closed
    }
  }

  /**
   * Queues an event; overflowing the queue closes the subscriber. A consumer already waiting is
   * woken by the hub's paced hand-over, not here: waking 10,000 at once would run all their
   * deliveries in one uninterruptible burst.
   */
  push(event: LogEvent): void {
    if (this.finished) return;
    this.position = event.position;
    this.queue.push(event);
    if (this.queue.length > this.queueLimit) {
      this.fail(new SubscriberTooSlowError(this.lastCursor, this.queueLimit));
      return;
    }
    if (this.waiters.length > 0) this.hub.ready(this);
  }

  /** Set while the hub has this subscriber in its hand-over queue. */
  awaitingHandOver = false;

  /** Gives queued events to the consumers waiting in next() (the hub calls this, HAND_OVER_PER_TURN per turn). */
  handOver(): void {
    while (this.waiters.length > 0 && this.queue.length > 0) {
      const event = this.queue.shift() as LogEvent;
      this.lastCursor = event.cursor;
      this.waiters.shift()?.resolve({ value: event, done: false });
    }
    if (this.spaceWaiter && this.queue.length + this.roomWanted <= this.queueLimit) this.wakeReplay();
  }

  /** Resolves once `room` more events fit in the queue (replay paces itself to the consumer). */
  waitForRoom(room: number): Promise<void> {
    if (this.finished || this.queue.length + room <= this.queueLimit) return Promise.resolve();
    return new Promise((resolve) => {
      this.roomWanted = room;
      this.spaceWaiter = resolve;
    });
  }

  fail(error: Error): void {
    if (this.finished) return;
    this.failure = error;
    this.end();
  }

  next(): Promise<IteratorResult<LogEvent>> {
    // Earlier callers still waiting for the hand-over come first: events go out in order.
    const event = this.waiters.length === 0 ? this.queue.shift() : undefined;
    if (event) {
      this.lastCursor = event.cursor;
      if (this.spaceWaiter && this.queue.length + this.roomWanted <= this.queueLimit) this.wakeReplay();
      return Promise.resolve({ value: event, done: false });
    }
    if (this.failure) {
      const err = this.failure;
      this.failure = null;
      return Promise.reject(err);
    }
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (this.queue.length > 0) this.hub.ready(this);
      // Replay waits for room; the consumer asking for more is room.
      this.wakeReplay();
    });
  }

  return(): Promise<IteratorResult<LogEvent>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(err?: unknown): Promise<IteratorResult<LogEvent>> {
    this.end();
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private end(): void {
    if (this.finished) return;
    this.finished = true;
    this.queue.length = 0;
    this.pending = null;
    this.hub.remove(this);
    const waiters = this.waiters.splice(0);
    const first = waiters.shift();
    if (first && this.failure) {
      // The error is reported once; later calls see the end of the stream.
      first.reject(this.failure);
      this.failure = null;
    } else first?.resolve({ value: undefined, done: true });
    for (const waiter of waiters) waiter.resolve({ value: undefined, done: true });
    this.wakeReplay();
  }

  private wakeReplay(): void {
    const resume = this.spaceWaiter;
    this.spaceWaiter = null;
    resume?.();
  }
}

/**
 * The subscription hub, one per process. Each wake-up (bus after a local commit, NOTIFY from
 * another replica, reconnect, or the periodic safety read) reads the new events ONCE, in
 * batches, and fans them out in memory to every matching subscriber. A subscriber that asks for
 * `after` first replays from the log with its own paged reads and then joins the live stream at
 * an exact position, without a gap or a duplicate.
 */
export class EventHub {
  private readonly subscribers = new Set<Subscriber>();
  /** Subscribers by the tenant they filter on (most do), so an event only visits its tenant's. */
  private readonly byTenant = new Map<string, Set<Subscriber>>();
  /** Subscribers without a tenant filter (platform-wide or worker streams): they see every event. */
  private readonly anyTenant = new Set<Subscriber>();
  private head: LogPosition | null = null;
  /** Subscribers with events for a waiting consumer, woken HAND_OVER_PER_TURN at a time (see `ready`). */
  private readonly handOverQueue: Subscriber[] = [];
  private handOverScheduled = false;
  private pumping: Promise<void> | null = null;
  private dirty = false;
  private closed = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private recheckTimer: NodeJS.Timeout | null = null;
  private recheckDelayMs = HUB_HORIZON_RECHECK_MS;
  /** The last live read found committed events held back by an older running transaction. */
  private heldBack = false;
  readonly queueLimit: number;
  readonly batchSize: number;
  readonly replayPageSize: number;
  private readonly pollIntervalMs: number;
  /** Subscribers closed for falling behind, since start (a metric). */
  slowClosed = 0;
  /** Batches read from the log by the live pump, since start (a metric: one per batch, not per subscriber). */
  batchesRead = 0;
  /** Reads started by a horizon re-check (held-back events), not by a wake-up, since start (a metric). */
  horizonRechecks = 0;
  /** Which read (live batch or replay page) each handed-out event came from; see `batchOf`. */
  private readonly batches = new WeakMap<LogEvent, number>();
  private batchSeq = 0;

  constructor(
    private readonly orm: Orm,
    private readonly options: EventHubOptions = {},
  ) {
    this.queueLimit = options.queueLimit ?? SUBSCRIBER_QUEUE_LIMIT;
    this.batchSize = options.batchSize ?? HUB_BATCH_SIZE;
    this.replayPageSize = Math.max(
      1,
      Math.min(options.replayPageSize ?? REPLAY_PAGE_SIZE, Math.floor(this.queueLimit / 2)),
    );
    this.pollIntervalMs = options.pollIntervalMs ?? HUB_POLL_INTERVAL_MS;
  }

  /** Positions the live stream at the end of the log. Call once before subscribing. */
  async start(): Promise<void> {
    this.head = await latestPosition(this.orm.em.fork());
    if (this.pollIntervalMs > 0) {
      this.pollTimer = setInterval(() => this.wake(), this.pollIntervalMs);
      this.pollTimer.unref();
    }
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** The position of the newest event the hub has fanned out: a stream starting now continues after it. */
  get position(): LogPosition {
    return this.requireHead();
  }

  /** The cursor a subscription without `after` starts from if it subscribes now. */
  startCursor(): string {
    return encodeEventCursor(this.requireHead());
  }

  /**
   * The read an event came from: every event of one live batch (or of one replay page) shares the
   * number, so consumers can share one data source per batch. Undefined for events not from this hub.
   */
  batchOf(event: LogEvent): number | undefined {
    return this.batches.get(event);
  }

  private tagBatch(events: readonly LogEvent[]): void {
    const batch = ++this.batchSeq;
    for (const event of events) this.batches.set(event, batch);
  }

  /** There may be new committed events: read them (coalesced; at most one read in flight). */
  wake(): void {
    if (this.closed) return;
    this.dirty = true;
    this.pumping ??= this.pump().finally(() => {
      this.pumping = null;
      if (this.dirty && !this.closed) this.wake();
    });
  }

  /**
   * Resolves once everything committed before the call has been fanned out (tests, shutdown),
   * including events an older running transaction held back: it waits for that one to end.
   */
  async settle(): Promise<void> {
    this.wake();
    for (;;) {
      while (this.pumping) await this.pumping;
      if (!this.heldBack || this.closed) return;
      await new Promise((resolve) => setTimeout(resolve, this.recheckDelayMs));
      this.wake();
    }
  }

  /**
   * Subscribes. Rejects with InvalidCursorError when `after` is malformed, unknown or expired.
   * The stream ends with SubscriberTooSlowError when the consumer falls behind, and with
   * SubscriptionEndedError when `endWhere` or `close` ends it; both carry the resume cursor.
   */
  async subscribe(options: SubscribeOptions): Promise<EventSubscription> {
    const head = this.requireHead();
    if (this.closed)
      throw new SubscriptionEndedError('the server is shutting down', options.after ?? encodeEventCursor(head));
    if (options.after === undefined || options.after === null) {
      const sub = new Subscriber(this, options, head, this.queueLimit);
      this.add(sub);
      return sub;
    }
    const after = await resolveCursor(this.orm.em.fork(), options.after);
    if (this.closed) throw new SubscriptionEndedError('the server is shutting down', options.after);
    const sub = new Subscriber(this, options, after, this.queueLimit);
    sub.pending = { events: [], overflowed: false };
    this.add(sub);
    void this.replay(sub).catch((err: Error) => {
      // The database went away mid-replay: end the stream resumably rather than leak the cause.
      this.options.logger?.warn({ err: err.message }, 'event replay failed');
      sub.fail(new SubscriptionEndedError('the event log could not be read; resume later', sub.lastCursor));
    });
    return sub;
  }

  /** Ends every subscription whose principal matches (e.g. a revoked token); returns how many. */
  endWhere(predicate: (principal: SubscriberPrincipal | undefined) => boolean, reason: string): number {
    let ended = 0;
    for (const sub of [...this.subscribers]) {
      if (!predicate(sub.options.principal)) continue;
      sub.fail(new SubscriptionEndedError(reason, sub.lastCursor));
      ended++;
    }
    return ended;
  }

  /** Stops reading and ends every subscription with SubscriptionEndedError (clients resume elsewhere). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.recheckTimer) clearTimeout(this.recheckTimer);
    this.endWhere(() => true, 'the server is shutting down');
    await this.pumping?.catch(() => undefined);
  }

  /** Called by a subscriber that has events queued and a consumer waiting: wakes it on a coming turn. */
  ready(sub: Subscriber): void {
    if (sub.awaitingHandOver) return;
    sub.awaitingHandOver = true;
    this.handOverQueue.push(sub);
    if (!this.handOverScheduled) {
      this.handOverScheduled = true;
      setImmediate(() => this.handOver());
    }
  }

  private handOver(): void {
    this.handOverScheduled = false;
    const turn = this.handOverQueue.splice(0, HAND_OVER_PER_TURN);
    for (const sub of turn) {
      sub.awaitingHandOver = false;
      sub.handOver();
    }
    if (this.handOverQueue.length > 0) {
      this.handOverScheduled = true;
      setImmediate(() => this.handOver());
    }
  }

  /** Called by a subscriber when it ends. */
  remove(sub: Subscriber): void {
    this.subscribers.delete(sub);
    const tenantId = sub.options.match.tenantId;
    if (tenantId === undefined) this.anyTenant.delete(sub);
    else {
      const set = this.byTenant.get(tenantId);
      set?.delete(sub);
      if (set?.size === 0) this.byTenant.delete(tenantId);
    }
  }

  private add(sub: Subscriber): void {
    this.subscribers.add(sub);
    const tenantId = sub.options.match.tenantId;
    if (tenantId === undefined) this.anyTenant.add(sub);
    else {
      let set = this.byTenant.get(tenantId);
      if (!set) {
        set = new Set();
        this.byTenant.set(tenantId, set);
      }
      set.add(sub);
    }
  }

  private requireHead(): LogPosition {
    if (this.head === null) throw new Error('EventHub.start() must be awaited before use');
    return this.head;
  }

  private async pump(): Promise<void> {
    try {
      while (this.dirty && !this.closed) {
        this.dirty = false;
        for (;;) {
          const read = await readLog(this.orm.em.fork(), this.requireHead(), this.batchSize);
          this.batchesRead++;
          if (this.closed) return;
          this.fanOut(read.events);
          this.heldBack = read.heldBack;
          if (read.events.length < this.batchSize) break;
        }
      }
      this.scheduleRecheck();
    } catch (err) {
      // The database is unreachable: keep the head and try again; nothing is skipped.
      this.options.logger?.warn({ err: (err as Error).message }, 'reading new events failed; retrying');
      if (!this.closed && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.wake();
        }, HUB_RETRY_DELAY_MS);
        this.retryTimer.unref();
      }
    }
  }

  /**
   * Held-back events become readable when the older transaction ends. Its own NOTIFY (if it wrote
   * events) wakes the hub then; this timer covers a transaction that ends silently.
   */
  private scheduleRecheck(): void {
    if (!this.heldBack) {
      this.recheckDelayMs = HUB_HORIZON_RECHECK_MS;
      return;
    }
    if (this.recheckTimer || this.closed) return;
    const delay = this.recheckDelayMs;
    this.recheckDelayMs = Math.min(delay * 2, this.pollIntervalMs || HUB_POLL_INTERVAL_MS);
    this.recheckTimer = setTimeout(() => {
      this.recheckTimer = null;
      this.horizonRechecks++;
      this.wake();
    }, delay);
    this.recheckTimer.unref();
  }

  /**
   * Synchronous, so a subscriber registers either wholly before or wholly after a batch. Events
   * go out in order; each visits only the subscribers of its tenant plus the tenant-agnostic ones.
   */
  private fanOut(batch: LogEvent[]): void {
    if (batch.length === 0) return;
    this.tagBatch(batch);
    for (const event of batch) {
      this.applyAccessChange(event);
      this.options.onEvent?.(event);
      const position = event.position;
      const tenantSubs = event.tenantId === null ? undefined : this.byTenant.get(event.tenantId);
      if (tenantSubs) for (const sub of tenantSubs) this.offer(sub, event, position);
      for (const sub of this.anyTenant) this.offer(sub, event, position);
    }
    this.head = batch[batch.length - 1].position;
  }

  /**
   * Access changes travel through the log, so every replica hears them: a revoked token's streams
   * and a removed (or lowered) member's streams that lost their access end here, and the member's
   * other streams are narrowed, before later events go out.
   */
  private applyAccessChange(event: LogEvent): void {
    if (!ACCESS_CHANGES.has(event.type)) return;
    this.options.onAccessChange?.(event);
    const { subject, tokenId } = event.data;
    if (event.type === 'TOKEN_REVOKED' && typeof tokenId === 'string') {
      this.endWhere((p) => p?.tokenId === tokenId, 'the token was revoked');
    } else if (event.tenantId !== null && typeof subject === 'string') {
      const role = roleAfter(event);
      if (role === undefined) return;
      const tenantId = event.tenantId;
      // Only the streams that lost what they follow end. Each other stream of the subject goes on
      // with the narrowed identity its principal now holds: its next authorization and execution
      // use that (resolvers/event-stream.ts, src/server/live-execution.ts), so a role it lost can
      // no longer reach that tenant's data through its selection (e.g. a shared worker's sandboxes).
      this.endWhere(
        (p) =>
          p?.subject === subject &&
          (p.membershipChanged ? !p.membershipChanged(tenantId, role) : (p.tenantIds ?? []).includes(tenantId)),
        event.type === 'MEMBER_REMOVED'
          ? 'your membership of a tenant was removed; subscribe again'
          : 'your role in a tenant was lowered; subscribe again',
      );
    }
  }

  private offer(sub: Subscriber, event: LogEvent, position: LogPosition): void {
    if (sub.finished || position <= sub.position || !sub.accepts(event)) return;
    if (sub.pending) {
      const pending = sub.pending;
      if (pending.overflowed) return;
      // Bounded: past a queue's worth, drop them and let the next replay query read them.
      if (pending.events.length >= this.queueLimit) {
        pending.events = [];
        pending.overflowed = true;
      } else pending.events.push(event);
      return;
    }
    sub.push(event);
    if (sub.finished) this.slowClosed++;
  }

  /**
   * Replays from the log, then joins the live stream. The hub collects live events in `pending`
   * from the start of each replay query; a short page means the query saw everything committed
   * before it began, and `pending` holds everything the hub read since, so appending `pending`
   * (minus what the query already returned, by position) and going live at once leaves no gap.
   * After each page it checks the sweeper's pruned-through mark: a replay the sweeper overtook
   * ends with InvalidCursorError(EXPIRED) rather than skip what was pruned.
   */
  private async replay(sub: Subscriber): Promise<void> {
    let room = this.replayPageSize;
    for (;;) {
      await sub.waitForRoom(room);
      room = this.replayPageSize;
      if (sub.finished) return;
      sub.pending = { events: [], overflowed: false };
      const from = sub.position;
      const em = this.orm.em.fork();
      const { events: page } = await readLog(em, from, this.replayPageSize, sub.options.match);
      // Checked after the read: a prune that removed events after `from` before it moved the mark first.
      const pruned = await prunedThrough(em);
      if (sub.finished) return;
      if (pruned > from) {
        sub.fail(new InvalidCursorError(encodeEventCursor(from), 'EXPIRED'));
        return;
      }
      this.tagBatch(page);
      for (const event of page) {
        if (sub.accepts(event)) sub.push(event);
        else sub.position = event.position;
      }
      if (page.length === this.replayPageSize) continue;
      const pending: Pending = sub.pending ?? { events: [], overflowed: true };
      // Too much arrived meanwhile: read it from the log instead, once the consumer made room.
      if (pending.overflowed || sub.queued + pending.events.length > this.queueLimit) {
        room = this.queueLimit - this.replayPageSize;
        continue;
      }
      sub.pending = null;
      for (const event of pending.events) if (event.position > sub.position) sub.push(event);
      // Later batches reach this subscriber live; fanOut skips what replay already queued (by position).
      return;
    }
  }
}
