/** The time source; injected so tests can move time by hand. */
export interface Clock {
  now(): Date;
  /**
   * True for a clock every replica shares (a test clock moved by hand): it is then the one time
   * source for lease expiry and heartbeat age, and the database's clock is not read
   * (src/domain/time.ts).
   */
  readonly authoritative?: boolean;
}

export const systemClock: Clock = { now: () => new Date() };
