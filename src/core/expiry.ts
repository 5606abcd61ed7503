/**
 * Registrations neither renewed nor pushed for `registration.expire_days` are removed by a
 * background sweep in small batches (Store.removeExpired), so an abandoned device does not stay
 * forever and one sweep never holds the store for long. A full batch is followed by the next one on
 * a later turn of the event loop; otherwise the sweep sleeps until the next interval.
 */
import type { Logger } from '../log.ts';
import type { Store } from '../store/types.ts';

export interface ExpiryOptions {
  /** 0 = registrations never expire. */
  expireDays: number;
  batchSize?: number;
  intervalMs?: number;
  now?: () => number;
  /** Called after a sweep that removed registrations (the metrics recount them). */
  onRemoved?: (removed: number) => void;
}

const DAY_MS = 24 * 3600 * 1000;

export class ExpirySweeper {
  private readonly store: Store;
  private readonly logger: Logger;
  private readonly expireMs: number;
  private readonly batchSize: number;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly onRemoved: ((removed: number) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private stopped = true;

  constructor(store: Store, logger: Logger, options: ExpiryOptions) {
    this.store = store;
    this.logger = logger;
    this.expireMs = options.expireDays * DAY_MS;
    this.batchSize = options.batchSize ?? 500;
    this.intervalMs = options.intervalMs ?? 3600_000;
    this.now = options.now ?? Date.now;
    this.onRemoved = options.onRemoved;
  }

  get enabled(): boolean {
    return this.expireMs > 0;
  }

  start(): void {
    if (!this.enabled || !this.stopped) return;
    this.stopped = false;
    this.schedule(10_000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** Removes everything expired now, batch by batch; returns how many were removed. */
  sweep(): Promise<number> {
    this.running ??= this.sweepAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.sweep().then(
        () => this.schedule(this.intervalMs),
        (error) => {
          this.logger.error('expiry sweep failed', { error });
          this.schedule(this.intervalMs);
        },
      );
    }, delayMs);
    this.timer.unref();
  }

  private async sweepAll(): Promise<number> {
    if (!this.enabled) return 0;
    const before = this.now() - this.expireMs;
    let removed = 0;
    for (;;) {
      const nodes = await this.store.removeExpired(before, this.batchSize);
      removed += nodes.length;
      if (nodes.length < this.batchSize) break;
      // Let pushes through between batches.
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (removed > 0) this.logger.info('expired registrations removed', { removed, expire_days: this.expireMs / DAY_MS });
    if (removed > 0) this.onRemoved?.(removed);
    return removed;
  }
}
