import { databaseKindOf, type Em } from '../db/orm.js';
import type { Clock } from '../kernel/clock.js';
import { runSql } from './locks.js';

const readIn = new WeakMap<Em, Date>();

/**
 * "Now" for lease expiry and heartbeat age, and for the times they are judged against (a lease's
 * expiry, a heartbeat, a registration). Replicas' clocks drift apart, and one whose clock runs
 * ahead would take leases over and sweep workers early, so every replica must judge on one time
 * source: on Postgres the database's clock, read once per transaction (`em`); SQLite has one
 * process, whose clock is that source. An authoritative clock (tests moving time by hand) is
 * used as is on both drivers.
 */
export async function transactionNow(em: Em, clock: Clock): Promise<Date> {
  if (clock.authoritative || databaseKindOf(em) !== 'postgres') return clock.now();
  const known = readIn.get(em);
  if (known) return known;
  const [row] = await runSql<{ now: Date | string }[]>(em, 'select clock_timestamp() as now', []);
  const now = new Date(row.now);
  readIn.set(em, now);
  offsets.set(clock, now.getTime() - clock.now().getTime());
  return now;
}

/** How far the database's clock was from each replica clock at its last read (see `estimatedNow`). */
const offsets = new WeakMap<Clock, number>();

/**
 * "Now" on the one time source without a statement, for what is only shown or filtered (a
 * worker's status as a reader sees it): this replica's clock corrected by the offset its last
 * read of the database's time measured. Decisions (expiry, sweeping) use `transactionNow`.
 */
export function estimatedNow(clock: Clock): Date {
  return new Date(clock.now().getTime() + (offsets.get(clock) ?? 0));
}
