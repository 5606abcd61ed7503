/**
 * The Prometheus adapter of the telemetry port (issue #12): the core reports through Telemetry,
 * this turns it into prom-client metrics served as `GET /metrics`. The core never imports it.
 *
 * On the hot path every report is a few Map lookups and a number added: each label set's cell is
 * made once and kept (metric-cells.ts), so no label object is built, hashed or validated per push.
 * State that already lives elsewhere (the component's connection, providers' status) is read when
 * Prometheus scrapes, never pushed; the registration gauge is counted once at start and then kept
 * up to date from registration events, so a scrape never counts the table.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { FastCounter, FastHistogram } from './metric-cells.ts';
import type {
  Dialect, ProviderRequestOutcome, PublishResult, RegistrationAction, RegistrationDialect, RetryResult, Telemetry,
} from '../core/telemetry.ts';

export interface MetricsSources {
  componentConnected(): boolean;
  /** Every configured app and whether its provider says it is degraded. */
  appsDegraded(): Iterable<{ app: string; degraded: boolean }>;
  /** notAfter (ms since the epoch) of certificate-based apps' credentials. */
  credentialsExpiry(): Iterable<{ app: string; expiresAt: number }>;
}

const PUBLISH_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15];
const PROVIDER_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15];

const REMOVING: ReadonlySet<RegistrationAction> = new Set(['removed', 'token_dead', 'expired']);

export interface PrometheusTelemetryOptions {
  sources: MetricsSources;
  /** Node's process metrics (prom-client's defaults); on unless a test turns them off. */
  processMetrics?: boolean;
}

export class PrometheusTelemetry implements Telemetry {
  readonly registry = new Registry();
  private readonly registrationCounts = new Map<string, number>();
  private readonly publishes: FastCounter;
  private readonly publishDurations: FastHistogram;
  private readonly providerRequests: FastCounter;
  private readonly providerResponses: FastCounter;
  private readonly providerDurations: FastHistogram;
  private readonly retries: FastCounter;
  private readonly registrationChanges: FastCounter;
  private readonly retriesPendingGauge: Gauge;
  private readonly reconnects: Counter;
  private readonly statusLabels = new Map<number, string>();

  constructor(options: PrometheusTelemetryOptions) {
    const registers = [this.registry];
    const registry = this.registry;
    const { sources } = options;
    const registrationCounts = this.registrationCounts;

    this.publishes = new FastCounter(registry, {
      name: 'push_appserver_publishes_total', labelNames: ['app', 'dialect', 'result'],
      help: 'Publishes (XEP-0357, stateless) and HTTP pushes answered, by how they were answered; app="" for an unknown node.',
    });
    this.publishDurations = new FastHistogram(registry, {
      name: 'push_appserver_publish_duration_seconds', labelNames: ['dialect'], buckets: PUBLISH_BUCKETS,
      help: 'From a publish received to its answer.',
    });
    this.providerRequests = new FastCounter(registry, {
      name: 'push_appserver_provider_requests_total', labelNames: ['app', 'provider', 'outcome'],
      help: 'Requests to APNS, FCM, WebPush and UnifiedPush, by what they came to (error: no answer).',
    });
    this.providerResponses = new FastCounter(registry, {
      name: 'push_appserver_provider_responses_total', labelNames: ['app', 'provider', 'status'],
      help: 'Answers of the push services by HTTP status.',
    });
    this.providerDurations = new FastHistogram(registry, {
      name: 'push_appserver_provider_request_duration_seconds', labelNames: ['app', 'provider'], buckets: PROVIDER_BUCKETS,
      help: 'How long one request to a push service took.',
    });
    this.retriesPendingGauge = new Gauge({ name: 'push_appserver_retries_pending', registers, help: 'Pushes waiting to be retried.' });
    this.retries = new FastCounter(registry, {
      name: 'push_appserver_retries_total', labelNames: ['app', 'result'],
      help: 'Retried pushes by what the retry came to.',
    });
    new Gauge({
      name: 'push_appserver_registrations', registers, labelNames: ['app'],
      help: 'Registrations per app (counted in the store every metrics.registrations_recount_s, kept up to date from the registration events of this instance in between).',
      collect() {
        for (const [app, count] of registrationCounts) this.set({ app }, count);
      },
    });
    this.registrationChanges = new FastCounter(registry, {
      name: 'push_appserver_registrations_total', labelNames: ['app', 'dialect', 'action'],
      help: 'Registrations created, renewed, removed, removed for a dead token, expired.',
    });
    new Gauge({
      name: 'push_appserver_component_connected', registers,
      help: '1 while the XEP-0114 component is connected to the XMPP server.',
      collect() {
        this.set(sources.componentConnected() ? 1 : 0);
      },
    });
    this.reconnects = new Counter({
      name: 'push_appserver_component_reconnects_total', registers,
      help: 'Times the component connection was re-established after it had been online.',
    });
    new Gauge({
      name: 'push_appserver_app_degraded', registers, labelNames: ['app'],
      help: '1 while an app\'s provider is degraded (e.g. its credentials were rejected); the reason is in /ready.',
      collect() {
        for (const { app, degraded } of sources.appsDegraded()) this.set({ app }, degraded ? 1 : 0);
      },
    });
    new Gauge({
      name: 'push_appserver_credentials_expiry_timestamp_seconds', registers, labelNames: ['app'],
      help: 'When the client certificate of a certificate-based APNS app expires (Unix time).',
      collect() {
        for (const { app, expiresAt } of sources.credentialsExpiry()) this.set({ app }, Math.floor(expiresAt / 1000));
      },
    });
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });

  }

  publishAnswered(app: string, dialect: Dialect, result: PublishResult, seconds: number): void {
    this.publishes.cell(app, dialect, result).value += 1;
    this.publishDurations.observe(this.publishDurations.cell(dialect), seconds);
  }

  providerRequest(app: string, provider: string, outcome: ProviderRequestOutcome, status: number | undefined, seconds: number): void {
    this.providerRequests.cell(app, provider, outcome).value += 1;
    if (status !== undefined) this.providerResponses.cell(app, provider, this.statusLabel(status)).value += 1;
    this.providerDurations.observe(this.providerDurations.cell(app, provider), seconds);
  }

  retryFinished(app: string, result: RetryResult): void {
    this.retries.cell(app, result).value += 1;
  }

  retriesPending(count: number): void {
    this.retriesPendingGauge.set(count);
  }

  registrationChanged(app: string, dialect: RegistrationDialect, action: RegistrationAction): void {
    this.registrationChanges.cell(app, dialect, action).value += 1;
    if (action === 'created') this.registrationCounts.set(app, (this.registrationCounts.get(app) ?? 0) + 1);
    else if (REMOVING.has(action)) this.registrationCounts.set(app, Math.max(0, (this.registrationCounts.get(app) ?? 0) - 1));
  }

  /** The counts from the store (at start, then every metrics.registrations_recount_s); events change them in between. */
  setRegistrationCounts(counts: ReadonlyMap<string, number>, apps: Iterable<string> = []): void {
    for (const app of apps) this.registrationCounts.set(app, 0);
    for (const [app, count] of counts) this.registrationCounts.set(app, count);
  }

  /**
   * After an expiry sweep (which reports only how many it removed): the gauge takes the new counts
   * and the drop per app is counted as `expired` under `dialect="expiry"` (the sweep removed them;
   * which API made them is not known any more, and counting them as `http` would be a lie).
   */
  registrationsExpired(counts: ReadonlyMap<string, number>): void {
    for (const [app, before] of this.registrationCounts) {
      const after = counts.get(app) ?? 0;
      if (before > after) this.registrationChanges.cell(app, 'expiry', 'expired').value += before - after;
      this.registrationCounts.set(app, after);
    }
    for (const [app, count] of counts) if (!this.registrationCounts.has(app)) this.registrationCounts.set(app, count);
  }

  componentReconnected(): void {
    this.reconnects.inc();
  }

  /** The Prometheus text exposition. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private statusLabel(status: number): string {
    // A status outside 100-599 is no HTTP status: one label for all of them keeps series bounded.
    if (!Number.isInteger(status) || status < 100 || status > 599) return 'other';
    let label = this.statusLabels.get(status);
    if (label === undefined) {
      label = String(status);
      this.statusLabels.set(status, label);
    }
    return label;
  }
}

/** Reports to several adapters (the metrics and the admin page's recent activity). */
export function fanOut(...targets: Telemetry[]): Telemetry {
  if (targets.length === 1) return targets[0];
  return {
    publishAnswered: (...args) => { for (const target of targets) target.publishAnswered(...args); },
    providerRequest: (...args) => { for (const target of targets) target.providerRequest(...args); },
    retryFinished: (...args) => { for (const target of targets) target.retryFinished(...args); },
    retriesPending: (...args) => { for (const target of targets) target.retriesPending(...args); },
    registrationChanged: (...args) => { for (const target of targets) target.registrationChanged(...args); },
  };
}
