import type { Em } from '../db/orm.js';

/**
 * What a committed transaction tells this process's domain sweeper, so the sweeper works only
 * when something happened instead of polling: `placement` when the change can let a waiting
 * sandbox be placed (a worker registered or back online or undrained, capacity released, a
 * sandbox waiting again, a quota raised); `dueAt` when it makes time-driven work fall due at
 * that moment (a lease's expiry, a new worker's heartbeat deadline, a sandbox's TTL).
 */
export interface SweepHints {
  placement: boolean;
  dueAt: Date | null;
}

/** The receiver of those hints (the domain sweeper); told after commit only. */
export interface SweepSignals {
  committed(hints: SweepHints): void;
}

const noted = new WeakMap<Em, SweepHints>();

function hintsOf(em: Em): SweepHints {
  let hints = noted.get(em);
  if (!hints) {
    hints = { placement: false, dueAt: null };
    noted.set(em, hints);
  }
  return hints;
}

/** In a transaction: once it commits, waiting sandboxes should be tried again. */
export function wantPlacement(em: Em): void {
  hintsOf(em).placement = true;
}

/** In a transaction: once it commits, time-driven work falls due no later than `at`. */
export function dueBy(em: Em, at: Date): void {
  const hints = hintsOf(em);
  if (!hints.dueAt || at.getTime() < hints.dueAt.getTime()) hints.dueAt = at;
}

/** What the transaction on `em` noted (and forgets it). */
export function takeHints(em: Em): SweepHints | null {
  const hints = noted.get(em) ?? null;
  noted.delete(em);
  return hints;
}
