import type { Clock } from '../kernel/clock.js';
import { limitError } from './errors.js';

/** Forget idle buckets beyond this many, so memory stays bounded under many tokens. */
const MAX_TRACKED_BUCKETS = 50_000;

/** A token bucket per key: `perMinute` operations, refilled continuously, bursting up to `perMinute`. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly clock: Clock,
  ) {}

  /** Takes one operation from the key's bucket; returns the seconds to wait when it is empty. */
  take(key: string): { allowed: true } | { allowed: false; retryAfterSeconds: number } {
    if (this.perMinute <= 0) return { allowed: true };
    const now = this.clock.now().getTime();
    const ratePerMs = this.perMinute / 60_000;
    const bucket = this.buckets.get(key) ?? { tokens: this.perMinute, at: now };
    bucket.tokens = Math.min(this.perMinute, bucket.tokens + Math.max(0, now - bucket.at) * ratePerMs);
    bucket.at = now;
    if (this.buckets.size >= MAX_TRACKED_BUCKETS && !this.buckets.has(key)) this.prune(now, ratePerMs);
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1)
      return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / ratePerMs / 1000)) };
    bucket.tokens -= 1;
    return { allowed: true };
  }

  /** Throws the RATE_LIMITED error (HTTP 429) when the key's bucket is empty. */
  enforce(key: string): void {
    const result = this.take(key);
    if (!result.allowed) {
      throw limitError(
        'RATE_LIMITED',
        `rate limit of ${this.perMinute} operations per minute exceeded; retry in ${result.retryAfterSeconds}s`,
        429,
        {
          'retry-after': String(result.retryAfterSeconds),
        },
      );
    }
  }

  private prune(now: number, ratePerMs: number): void {
    for (const [key, b] of this.buckets)
      if (b.tokens + (now - b.at) * ratePerMs >= this.perMinute) this.buckets.delete(key);
  }
}
