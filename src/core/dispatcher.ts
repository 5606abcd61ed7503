/**
 * One push, from a verified request to a provider and back (DESIGN §2, §4, core/pipeline.ts).
 * Transports (the XEP-0357 publish handler, POST /push) build a PushRequest, await dispatch() and
 * translate the result: this module decides, they only translate.
 *
 * Every dialect enters here and is resolved by the first resolver that knows the request. What
 * follows resolution is written once: the app's allow-list, per-domain rate limits, the in-flight
 * cap, coalescing per target key, the provider call with its timeout, the outcome, bookkeeping and
 * telemetry. A resolver that throws could not read its store: the publisher is asked to wait.
 */
import type { Logger } from '../log.ts';
import type { Notification, Outcome, Summary, Urgency } from '../providers/types.ts';
import type { Store } from '../store/types.ts';
import type { App, AppDirectory } from './apps.ts';
import type { Resolution, ResolvedTarget, Resolver } from './pipeline.ts';
import { KeyedRateLimiter } from './rate-limit.ts';
import { noTelemetry, type Dialect, type ProviderRequestOutcome, type PublishResult, type Telemetry } from './telemetry.ts';

export interface PushRequest {
  /**
   * The dialect the transport saw. A publish to a node we do not store that carries `pushModule`
   * is resolved as `stateless` by the pipeline, so the XMPP handler always says `xep0357`.
   */
  dialect: Dialect;
  node: string;
  /** The publish-options secret; null when the publisher sent none. */
  secret: string | null;
  /** The publisher: the user's server domain or a bare JID; null over HTTP. */
  from: string | null;
  summary: Summary;
  /** Other publish-options fields (e.g. fpush's `pushModule`). */
  options: ReadonlyMap<string, string>;
}

export type DispatchResult =
  | { kind: 'delivered'; coalesced?: boolean }
  /** Unknown node, wrong secret or dead token: one answer, so nodes cannot be probed. */
  | { kind: 'not-found' }
  | { kind: 'forbidden'; reason: string }
  /**
   * Transient: the publisher should not give up on this registration. `cause: 'store'`: our own
   * store could not answer (XMPP `internal-server-error` rather than `resource-constraint`).
   */
  | { kind: 'temporary'; reason: string; retryAfterMs?: number; cause?: 'store' }
  /** A publisher (domain) over one of our limits: XMPP `wait`/`resource-constraint`, HTTP 429. */
  | { kind: 'limited'; reason: string; retryAfterMs: number }
  /** This notification cannot be sent, through no fault of the registration. */
  | { kind: 'rejected'; reason: string };

export interface DispatcherOptions {
  timeoutMs: number;
  /** Pushes on their way at once; beyond it publishes get a `wait` error instead of queueing without bound. */
  maxInFlight?: number;
  /** Stateless pushes on their way at once (they cost our credentials and store nothing). */
  maxStatelessInFlight?: number;
  /** Publishes per publishing domain and second, with a burst; 0 = no limit. */
  maxPublishesPerDomainPerS?: number;
  publishBurstPerDomain?: number;
  /** Stateless publishes per publishing domain and second (in addition to the limit above). */
  maxStatelessPerDomainPerS?: number;
  statelessBurstPerDomain?: number;
  retryMaxAttempts: number;
  retryMaxDelayMs: number;
  telemetry?: Telemetry;
  now?: () => number;
}

export function domainOf(jid: string): string {
  const withoutResource = jid.split('/')[0];
  const at = withoutResource.lastIndexOf('@');
  return (at === -1 ? withoutResource : withoutResource.slice(at + 1)).toLowerCase();
}

const RETRY_POLL_MS = 1000;
const RETRY_BATCH = 200;
/** One WARN per key and interval for limits hit, never a line per rejected publish. */
const LIMIT_WARN_INTERVAL_MS = 60_000;

const PUBLISH_LABEL: Record<DispatchResult['kind'], PublishResult> = {
  delivered: 'delivered',
  'not-found': 'not_found',
  forbidden: 'forbidden',
  temporary: 'temporary',
  limited: 'limited',
  rejected: 'rejected',
};

const OUTCOME_LABEL: Record<Outcome['kind'], ProviderRequestOutcome> = {
  delivered: 'delivered',
  'token-dead': 'token_dead',
  'retry-after': 'retry',
  'credentials-rejected': 'credentials_rejected',
  rejected: 'rejected',
};

function publishLabel(result: DispatchResult): PublishResult {
  return result.kind === 'delivered' && result.coalesced ? 'coalesced' : PUBLISH_LABEL[result.kind];
}

function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

export class Dispatcher {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly logger: Logger;
  private readonly options: Required<DispatcherOptions>;
  private readonly telemetry: Telemetry;
  private readonly resolvers: Resolver[] = [];
  private readonly inFlight = new Map<string, Promise<DispatchResult>>();
  private statelessInFlight = 0;
  private readonly publishLimiter: KeyedRateLimiter;
  private readonly statelessLimiter: KeyedRateLimiter;
  private readonly limitWarnedAt = new Map<string, number>();
  private retryTimer: NodeJS.Timeout | undefined;
  private retryRunning: Promise<void> | undefined;

  constructor(store: Store, apps: AppDirectory, logger: Logger, options: DispatcherOptions) {
    this.store = store;
    this.apps = apps;
    this.logger = logger;
    this.options = {
      now: Date.now,
      maxInFlight: 10_000,
      maxStatelessInFlight: 1000,
      maxPublishesPerDomainPerS: 0,
      publishBurstPerDomain: 0,
      maxStatelessPerDomainPerS: 0,
      statelessBurstPerDomain: 0,
      telemetry: noTelemetry,
      ...options,
    };
    this.telemetry = this.options.telemetry;
    const limiter = (perSecond: number, burst: number) => new KeyedRateLimiter({ perSecond, burst: burst > 0 ? burst : undefined, now: this.options.now });
    this.publishLimiter = limiter(this.options.maxPublishesPerDomainPerS, this.options.publishBurstPerDomain);
    this.statelessLimiter = limiter(this.options.maxStatelessPerDomainPerS, this.options.statelessBurstPerDomain);
  }

  /** Resolvers are asked in the order they were added; the first that answers decides. */
  addResolver(resolver: Resolver): void {
    this.resolvers.push(resolver);
  }

  async dispatch(request: PushRequest): Promise<DispatchResult> {
    const started = performance.now();
    const resolved = await this.resolve(request);
    let result: DispatchResult;
    let app: string;
    if (resolved.resolution.kind === 'answer') {
      result = resolved.resolution.result;
      app = resolved.resolution.app;
    } else {
      result = await this.pipeline(resolved.resolution.dialect, resolved.resolution.target, resolved.resolver!);
      app = resolved.resolution.target.app.name;
    }
    this.telemetry.publishAnswered(app, resolved.resolution.dialect, publishLabel(result), seconds(started));
    return result;
  }

  private async resolve(request: PushRequest): Promise<{ resolution: Resolution; resolver?: Resolver }> {
    for (const resolver of this.resolvers) {
      let resolution: Resolution | undefined;
      try {
        resolution = await resolver.resolve(request);
      } catch (error) {
        this.logger.warn('cannot look up the publish target: the store failed', { node: request.node, error: (error as Error).message });
        return { resolution: { kind: 'answer', dialect: request.dialect, app: '', result: { kind: 'temporary', reason: 'the app server cannot read its store', retryAfterMs: 1000, cause: 'store' } } };
      }
      if (resolution) return { resolution, resolver };
    }
    return { resolution: { kind: 'answer', dialect: request.dialect, app: '', result: { kind: 'not-found' } } };
  }

  private async pipeline(dialect: Dialect, target: ResolvedTarget, resolver: Resolver): Promise<DispatchResult> {
    const { app, publisherDomain } = target;
    if (publisherDomain !== null) {
      if (app.allowedDomains !== undefined && !app.allowedDomains.includes(publisherDomain)) {
        this.warnLimited(`allow:${app.name}:${publisherDomain}`, 'publish from a domain not in the app\'s allowed_domains', { app: app.name, domain: publisherDomain });
        return { kind: 'forbidden', reason: `${publisherDomain} may not publish for this app` };
      }
      const limited = this.overDomainLimit(dialect, publisherDomain);
      if (limited) return limited;
    }

    // A device needs one wake-up: a publish arriving while one for its key is on the way rides along.
    const pending = this.inFlight.get(target.key);
    if (pending) {
      const result = await pending;
      return result.kind === 'delivered' ? { kind: 'delivered', coalesced: true } : result;
    }
    if (this.inFlight.size >= this.options.maxInFlight) {
      this.warnLimited('in-flight', 'overloaded: too many pushes on their way', { in_flight: this.inFlight.size });
      return { kind: 'temporary', reason: 'the app server is overloaded', retryAfterMs: 1000 };
    }
    const stateless = dialect === 'stateless';
    if (stateless && this.statelessInFlight >= this.options.maxStatelessInFlight) {
      this.warnLimited('stateless-in-flight', 'too many stateless pushes on their way', { in_flight: this.statelessInFlight });
      return { kind: 'limited', reason: 'too many stateless pushes on their way', retryAfterMs: 1000 };
    }
    const sending = this.push(target, resolver, 0);
    this.inFlight.set(target.key, sending);
    if (stateless) this.statelessInFlight += 1;
    try {
      return await sending;
    } finally {
      this.inFlight.delete(target.key);
      if (stateless) this.statelessInFlight -= 1;
    }
  }

  private overDomainLimit(dialect: Dialect, domain: string): DispatchResult | undefined {
    const checks: Array<[KeyedRateLimiter, string]> = [[this.publishLimiter, 'publishes']];
    if (dialect === 'stateless') checks.push([this.statelessLimiter, 'stateless publishes']);
    for (const [limiter, what] of checks) {
      const decision = limiter.take(domain);
      if (!decision.allowed) {
        this.warnLimited(`${what}:${domain}`, `${what} from one domain over the limit`, { domain });
        return { kind: 'limited', reason: `too many ${what} from ${domain}`, retryAfterMs: decision.retryAfterMs };
      }
    }
    return undefined;
  }

  private warnLimited(key: string, message: string, fields: Record<string, unknown>): void {
    const now = this.options.now();
    const last = this.limitWarnedAt.get(key);
    if (last !== undefined && now - last < LIMIT_WARN_INTERVAL_MS) return;
    if (this.limitWarnedAt.size > 10_000) this.limitWarnedAt.clear();
    this.limitWarnedAt.set(key, now);
    this.logger.warn(message, { ...fields, note: 'logged once a minute' });
  }

  /** Sends to an app's provider with the configured timeout; a throw or a timeout is a value here. */
  async send(app: App, target: { node: string; token: string }, notification: Notification): Promise<Outcome> {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    let answered = true;
    const timeout = new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => {
        answered = false;
        resolve({ kind: 'retry-after', ms: 0, reason: `no answer from the provider within ${this.options.timeoutMs} ms` });
      }, this.options.timeoutMs);
    });
    let outcome: Outcome;
    try {
      outcome = await Promise.race([app.provider.send({ app: app.name, node: target.node, token: target.token }, notification), timeout]);
    } catch (error) {
      this.logger.error('provider failed unexpectedly', { app: app.name, node: target.node, error });
      answered = false;
      outcome = { kind: 'retry-after', ms: 0, reason: `provider error: ${(error as Error).message}` };
    } finally {
      clearTimeout(timer);
    }
    this.telemetry.providerRequest(app.name, app.providerKind, answered ? OUTCOME_LABEL[outcome.kind] : 'error', outcome.status, seconds(started));
    return outcome;
  }

  private async push(target: ResolvedTarget, resolver: Resolver, attempt: number): Promise<DispatchResult> {
    const { app, notification } = target;
    const outcome = await this.send(app, target, notification);
    const now = this.options.now();
    const registered = target.registration !== undefined;
    const fields = { app: app.name, node: target.node };
    switch (outcome.kind) {
      case 'delivered':
        if (registered) this.store.recordDelivery(target.node, now);
        await resolver.delivered?.(target);
        this.logger.debug('pushed', { ...fields, id: outcome.id });
        return { kind: 'delivered' };
      case 'token-dead':
        return resolver.tokenDead(target, outcome);
      case 'retry-after': {
        if (registered) {
          this.store.recordFailure(target.node, now, outcome.reason);
          await this.scheduleRetry(target.node, notification.urgency, attempt + 1, outcome);
        }
        return { kind: 'temporary', reason: outcome.reason, retryAfterMs: outcome.ms };
      }
      case 'credentials-rejected':
        if (registered) this.store.recordFailure(target.node, now, outcome.reason);
        this.logger.error('the push service rejected OUR credentials: check the app configuration', { ...fields, reason: outcome.reason });
        return { kind: 'temporary', reason: 'the app server cannot authenticate to the push service' };
      case 'rejected':
        if (registered) this.store.recordFailure(target.node, now, outcome.reason);
        this.logger.warn('push rejected', { ...fields, reason: outcome.reason });
        return { kind: 'rejected', reason: outcome.reason };
    }
  }

  private async scheduleRetry(node: string, urgency: Urgency, attempt: number, outcome: { ms: number; reason: string }): Promise<void> {
    if (attempt > this.options.retryMaxAttempts) {
      this.logger.warn('giving up on push after retries', { node, attempts: attempt, reason: outcome.reason });
      return;
    }
    // Exponential backoff unless the service named its own delay; never sooner than one second.
    const delay = Math.max(outcome.ms, 1000 * 2 ** (attempt - 1));
    if (delay > this.options.retryMaxDelayMs) {
      this.logger.warn('provider asked for a retry later than retry_max_delay_s; dropping', { node, delay_ms: delay });
      return;
    }
    const scheduled = await this.store.scheduleRetry({ node, dueAt: this.options.now() + delay, attempt, urgency, reason: outcome.reason });
    this.logger.info(scheduled ? 'push will be retried' : 'push retry already pending', { node, in_ms: delay, attempt, reason: outcome.reason });
  }

  /** Sends the retries that are due; called by the retry loop and by tests. */
  async runDueRetries(): Promise<number> {
    const due = await this.store.takeDueRetries(this.options.now(), RETRY_BATCH);
    await Promise.all(due.map(async (retry) => {
      const registration = await this.store.getByNode(retry.node);
      if (!registration) return;
      const app = this.apps.get(registration.app);
      const resolver = this.resolvers[0];
      if (!app || !resolver) return;
      const target: ResolvedTarget = { app, key: registration.node, node: registration.node, token: registration.token, registration, notification: { summary: {}, urgency: retry.urgency }, publisherDomain: null };
      const result = await this.push(target, resolver, retry.attempt);
      this.logger.info('retried push', { node: retry.node, attempt: retry.attempt, result: result.kind });
    }));
    return due.length;
  }

  startRetryLoop(): void {
    if (this.retryTimer || this.options.retryMaxAttempts === 0) return;
    this.retryTimer = setInterval(() => {
      if (this.retryRunning) return;
      this.retryRunning = this.runDueRetries()
        .then(() => undefined, (error) => this.logger.error('retry loop failed', { error }))
        .finally(() => { this.retryRunning = undefined; });
    }, RETRY_POLL_MS);
    this.retryTimer.unref();
  }

  /** Stops taking retries and waits for pushes on the way. */
  async drain(): Promise<void> {
    if (this.retryTimer) clearInterval(this.retryTimer);
    this.retryTimer = undefined;
    await this.retryRunning;
    await Promise.allSettled([...this.inFlight.values()]);
  }
}
