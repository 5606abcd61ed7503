/**
 * What the admin page shows of the last hour, per app: pushes delivered and errors in one-minute
 * buckets (exact at any rate, bounded memory: 60 buckets per app), and the last few failed
 * provider requests. Fed through the telemetry port like the metrics.
 */
import type { Dialect, ProviderRequestOutcome, PublishResult, RegistrationAction, RegistrationDialect, RetryResult, Telemetry } from '../core/telemetry.ts';

const MINUTE_MS = 60_000;
const BUCKETS = 60;
const FAILURES_KEPT = 20;

export interface RecentFailure {
  at: number;
  outcome: ProviderRequestOutcome;
  status: number | undefined;
}

interface AppActivity {
  /** Minute number (ms / 60,000) of each bucket; a bucket from another hour is stale. */
  minute: Int32Array;
  delivered: Uint32Array;
  errors: Uint32Array;
  failures: RecentFailure[];
}

export interface HourSummary {
  delivered: number;
  errors: number;
  failures: RecentFailure[];
}

export class RecentActivity implements Telemetry {
  private readonly apps = new Map<string, AppActivity>();
  private readonly now: () => number;
  pendingRetries = 0;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  private activity(app: string): AppActivity {
    let activity = this.apps.get(app);
    if (!activity) {
      activity = { minute: new Int32Array(BUCKETS).fill(-1), delivered: new Uint32Array(BUCKETS), errors: new Uint32Array(BUCKETS), failures: [] };
      this.apps.set(app, activity);
    }
    return activity;
  }

  private count(app: string, delivered: boolean): void {
    const activity = this.activity(app);
    const minute = Math.floor(this.now() / MINUTE_MS);
    const slot = minute % BUCKETS;
    if (activity.minute[slot] !== minute) {
      activity.minute[slot] = minute;
      activity.delivered[slot] = 0;
      activity.errors[slot] = 0;
    }
    if (delivered) activity.delivered[slot] += 1;
    else activity.errors[slot] += 1;
  }

  publishAnswered(_app: string, _dialect: Dialect, _result: PublishResult, _seconds: number): void {}

  providerRequest(app: string, _provider: string, outcome: ProviderRequestOutcome, status: number | undefined, _seconds: number): void {
    const delivered = outcome === 'delivered';
    this.count(app, delivered);
    if (!delivered) {
      const { failures } = this.activity(app);
      failures.push({ at: this.now(), outcome, status });
      if (failures.length > FAILURES_KEPT) failures.shift();
    }
  }

  retryFinished(_app: string, _result: RetryResult): void {}

  retriesPending(count: number): void {
    this.pendingRetries = count;
  }

  registrationChanged(_app: string, _dialect: RegistrationDialect, _action: RegistrationAction): void {}

  /** Pushes delivered and failed in the last 60 minutes (this minute included). */
  lastHour(app: string): HourSummary {
    const activity = this.apps.get(app);
    if (!activity) return { delivered: 0, errors: 0, failures: [] };
    const current = Math.floor(this.now() / MINUTE_MS);
    let delivered = 0;
    let errors = 0;
    for (let slot = 0; slot < BUCKETS; slot++) {
      if (current - activity.minute[slot] < BUCKETS) {
        delivered += activity.delivered[slot];
        errors += activity.errors[slot];
      }
    }
    const since = this.now() - BUCKETS * MINUTE_MS;
    return { delivered, errors, failures: activity.failures.filter((failure) => failure.at > since).reverse() };
  }
}
