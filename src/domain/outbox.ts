import type { Em } from '../db/orm.js';
import { appendEvent, type NewEvent } from '../events/log.js';
import { type SweepHints, type SweepSignals, takeHints } from './sweep-signals.js';

/**
 * Events a transaction records as it goes, appended to the log when its work is done, in the
 * order recorded. Appending takes no lock (the log orders by writing transaction, see
 * events/log.ts), so where in the transaction it happens only decides the events' order.
 */
const pending = new WeakMap<Em, { event: NewEvent; at: Date }[]>();

export function recordEvent(em: Em, event: NewEvent, at: Date): void {
  const list = pending.get(em) ?? [];
  list.push({ event, at });
  pending.set(em, list);
}

/** Appends what `em`'s transaction recorded, in order. */
export async function flushEvents(em: Em): Promise<void> {
  const list = pending.get(em);
  pending.delete(em);
  for (const { event, at } of list ?? []) await appendEvent(em, event, at);
}

/**
 * A transaction whose recorded events are appended at its end, in it. After it commits, what it
 * noted for the domain sweeper (sweep-signals.ts) goes to `signals`; a rolled-back one tells nothing.
 */
export async function inTransaction<T>(em: Em, work: (tx: Em) => Promise<T>, signals?: SweepSignals): Promise<T> {
  const noted: { hints: SweepHints | null } = { hints: null };
  const result = await em.transactional(async (tx) => {
    const result = await work(tx);
    await flushEvents(tx);
    noted.hints = takeHints(tx);
    return result;
  });
  if (noted.hints && signals) signals.committed(noted.hints);
  return result;
}
