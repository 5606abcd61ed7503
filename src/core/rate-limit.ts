/**
 * Per-key token buckets with bounded memory, for the abuse limits (issue #10): publishes per
 * publishing domain, registrations per client IP, per JID, per domain.
 *
 * A bucket holds `burst` tokens and refills at `perSecond`. The table never holds more than
 * `maxKeys` keys: when it is full, the least recently used key is dropped (its next request starts
 * with a full bucket, which errs on the side of serving). So a flood of distinct keys costs bounded
 * memory and O(1) per call.
 */

export interface RateLimitOptions {
  /** Sustained rate per key; 0 turns the limit off. */
  perSecond: number;
  /** How many may come at once after a quiet period; defaults to one second's worth (at least 1). */
  burst?: number;
  maxKeys?: number;
  now?: () => number;
}

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

interface Bucket {
  tokens: number;
  at: number;
}

const ALLOWED: RateDecision = { allowed: true };

export class KeyedRateLimiter {
  private readonly perMs: number;
  private readonly burst: number;
  private readonly maxKeys: number;
  private readonly now: () => number;
  /** Map order is recency order: a key is re-inserted on each use. */
  private readonly buckets = new Map<string, Bucket>();

  constructor(options: RateLimitOptions) {
    this.perMs = options.perSecond / 1000;
    this.burst = Math.max(1, options.burst ?? Math.ceil(options.perSecond));
    this.maxKeys = options.maxKeys ?? 100_000;
    this.now = options.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.perMs > 0;
  }

  /** Takes `cost` tokens from the key's bucket when it has them. */
  take(key: string, cost = 1): RateDecision {
    if (this.perMs <= 0) return ALLOWED;
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket) {
      this.buckets.delete(key);
      bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.at) * this.perMs);
      bucket.at = now;
    } else {
      bucket = { tokens: this.burst, at: now };
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
    }
    this.buckets.set(key, bucket);
    if (bucket.tokens >= cost) {
      bucket.tokens -= cost;
      return ALLOWED;
    }
    return { allowed: false, retryAfterMs: Math.ceil((cost - bucket.tokens) / this.perMs) };
  }

  /** Keys currently tracked (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }
}
