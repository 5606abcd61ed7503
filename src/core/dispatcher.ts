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
import type { Notification, Outcome, Summary } from '../providers/types.ts';
import type { Store, StoredRetry } from '../store/types.ts';
import type { App, AppDirectory } from './apps.ts';
import type { Resolution, ResolvedTarget, Resolver } from './pipeline.ts';
import { KeyedRateLimiter } from './rate-limit.ts';
import { RetryQueue } from './retry-queue.ts';
import { noTelemetry, type Dialect, type ProviderRequestOutcome, type PublishResult, type RetryResult, type Telemetry } from './telemetry.ts';
import { TokenGuard } from './token-guard.ts';
import type { Push2Notification } from './push2.ts';

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
  /** A Push 2.0 notification (dialect `push2`): resolved by core/push2.ts, never by node and secret. */
  push2?: Push2Notification;
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
  /** Attempts after the first; 0 turns retries off; undefined: no count limit (time decides). */
  retryMaxAttempts?: number;
  /** The longest single wait between two attempts, a provider's Retry-After included. */
  retryMaxDelayMs: number;
  /** A push is retried until this long after its first attempt (or the app's ttl, when smaller). */
  retryMaxAgeMs?: number;
  /** Our exponential backoff never waits longer than this between attempts. */
  retryMaxBackoffMs?: number;
  retryInitialBackoffMs?: number;
  /** At most one push per node per interval; later publishes merge into one push at the window's end. 0 = off. */
  minIntervalMs?: number;
  /** How long a graceful stop waits for pushes on their way before persisting them as retries. */
  shutdownTimeoutMs?: number;
  /** Distinct tokens called dead with no delivery in between that mark an app misconfigured. */
  deadTokenThreshold?: number;
  deadTokenWindowMs?: number;
  retryPollMs?: number;
  telemetry?: Telemetry;
  now?: () => number;
  random?: () => number;
}

export function domainOf(jid: string): string {
  const withoutResource = jid.split('/')[0];
  const at = withoutResource.lastIndexOf('@');
  return (at === -1 ? withoutResource : withoutResource.slice(at + 1)).toLowerCase();
}

const RETRY_BATCH = 200;
/** Throttle bookkeeping beyond this many keys is swept of entries older than the interval. */
const THROTTLE_SWEEP_AT = 50_000;
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

/** A publish for a key whose push is on its way is answered with that push's result. */
async function rideAlong(pending: Promise<DispatchResult>): Promise<DispatchResult> {
  const result = await pending;
  return result.kind === 'delivered' ? { kind: 'delivered', coalesced: true } : result;
}

function publishLabel(result: DispatchResult): PublishResult {
  return result.kind === 'delivered' && result.coalesced ? 'coalesced' : PUBLISH_LABEL[result.kind];
}

const STORE_FAILED: DispatchResult = { kind: 'temporary', reason: 'the app server cannot read its store', retryAfterMs: 1000, cause: 'store' };

function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

/** One push attempt on its way: a live publish or a leased retry. */
interface Job {
  dialect: Dialect;
  request: PushRequest;
  target: ResolvedTarget;
  resolver: Resolver;
  firstAttemptAt: number;
  /** Failed attempts before this one. */
  attempt: number;
  /** Set for a leased retry. */
  retry?: StoredRetry;
  /** Set at a graceful stop's deadline: the push was persisted as a retry and answered; ignore its outcome. */
  abandoned: boolean;
  interrupt?: (result: DispatchResult) => void;
}

interface DeferredRemoval {
  target: ResolvedTarget;
  resolver: Resolver;
  outcome: Extract<Outcome, { kind: 'token-dead' }>;
}

function storedRequest(request: PushRequest): StoredRetry['request'] {
  return { dialect: request.dialect, node: request.node, secret: request.secret, from: request.from, options: Object.fromEntries(request.options) };
}

export class Dispatcher {
  private readonly store: Store;
  readonly apps: AppDirectory;
  private readonly logger: Logger;
  private readonly options: Required<Omit<DispatcherOptions, 'retryMaxAttempts'>> & { retryMaxAttempts: number | undefined };
  private readonly telemetry: Telemetry;
  private readonly resolvers: Resolver[] = [];
  private readonly inFlight = new Map<string, Promise<DispatchResult>>();
  private readonly jobs = new Set<Job>();
  private statelessInFlight = 0;
  private readonly publishLimiter: KeyedRateLimiter;
  private readonly statelessLimiter: KeyedRateLimiter;
  private readonly limitWarnedAt = new Map<string, number>();
  private readonly lastSentAt = new Map<string, number>();
  private readonly queue: RetryQueue;
  private readonly guard: TokenGuard<DeferredRemoval>;
  private closing = false;
  private closed: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private wakeTimer: NodeJS.Timeout | undefined;
  private wakeAt = Infinity;
  private retryRunning: Promise<void> | undefined;

  constructor(store: Store, apps: AppDirectory, logger: Logger, options: DispatcherOptions) {
    this.store = store;
    this.apps = apps;
    this.logger = logger;
    this.options = {
      now: Date.now,
      random: Math.random,
      maxInFlight: 10_000,
      maxStatelessInFlight: 1000,
      maxPublishesPerDomainPerS: 0,
      publishBurstPerDomain: 0,
      maxStatelessPerDomainPerS: 0,
      statelessBurstPerDomain: 0,
      retryMaxAgeMs: 3600_000,
      retryMaxBackoffMs: 300_000,
      retryInitialBackoffMs: 1000,
      minIntervalMs: 0,
      shutdownTimeoutMs: 10_000,
      deadTokenThreshold: 5,
      deadTokenWindowMs: 60_000,
      retryPollMs: 1000,
      telemetry: noTelemetry,
      ...options,
      retryMaxAttempts: options.retryMaxAttempts,
    };
    this.telemetry = this.options.telemetry;
    const limiter = (perSecond: number, burst: number) => new KeyedRateLimiter({ perSecond, burst: burst > 0 ? burst : undefined, now: this.options.now });
    this.publishLimiter = limiter(this.options.maxPublishesPerDomainPerS, this.options.publishBurstPerDomain);
    this.statelessLimiter = limiter(this.options.maxStatelessPerDomainPerS, this.options.statelessBurstPerDomain);
    this.queue = new RetryQueue(store, logger);
    this.guard = new TokenGuard<DeferredRemoval>({ threshold: this.options.deadTokenThreshold, windowMs: this.options.deadTokenWindowMs, now: this.options.now }, logger);
  }

  /** Resolvers are asked in the order they were added; the first that answers decides. */
  addResolver(resolver: Resolver): void {
    this.resolvers.push(resolver);
  }

  /** Degraded when the app's pushes all come back with dead tokens (likely our configuration). */
  appStatus(app: string): { state: 'degraded'; detail: string } | undefined {
    return this.guard.status(app);
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
      result = await this.pipeline(resolved.resolution.dialect, request, resolved.resolution.target, resolved.resolver!);
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
        this.warnLimited('store-lookup', 'cannot look up the publish target: the store failed', { node: request.node, error: (error as Error).message });
        return { resolution: { kind: 'answer', dialect: request.dialect, app: '', result: STORE_FAILED } };
      }
      if (resolution) return { resolution, resolver };
    }
    return { resolution: { kind: 'answer', dialect: request.dialect, app: '', result: { kind: 'not-found' } } };
  }

  private async pipeline(dialect: Dialect, request: PushRequest, target: ResolvedTarget, resolver: Resolver): Promise<DispatchResult> {
    const { app, publisherDomain } = target;
    // Every target with nothing stored (fpush, Push 2.0's snikket-apns mode) is under the stateless limits.
    const stateless = dialect === 'stateless' || target.registration === undefined;
    if (publisherDomain !== null) {
      if (app.allowedDomains !== undefined && !app.allowedDomains.includes(publisherDomain)) {
        this.warnLimited(`allow:${app.name}:${publisherDomain}`, 'publish from a domain not in the app\'s allowed_domains', { app: app.name, domain: publisherDomain });
        return { kind: 'forbidden', reason: `${publisherDomain} may not publish for this app` };
      }
      const limited = this.overDomainLimit(stateless ? 'stateless' : dialect, publisherDomain);
      if (limited) return limited;
    }

    // A device needs one wake-up: a publish arriving while one for its key is on the way rides along.
    const pending = this.inFlight.get(target.key);
    if (pending) return rideAlong(pending);
    const now = this.options.now();
    // Resolvers build a fresh target per request (pipeline.ts), so it is the job's own to stamp.
    const notification = target.notification;
    notification.firstAttemptAt = now;
    if (this.closing) {
      await this.persist(dialect, request, target, notification, { dueAt: now, attempt: 0, reason: 'the app server was stopping', firstAttemptAt: now });
      return { kind: 'temporary', reason: 'the app server is stopping', retryAfterMs: 1000 };
    }
    if (this.inFlight.size >= this.options.maxInFlight) {
      this.warnLimited('in-flight', 'overloaded: too many pushes on their way; publishes are queued as retries', { in_flight: this.inFlight.size });
      await this.persist(dialect, request, target, notification, { dueAt: now + 1000, attempt: 0, reason: 'the app server was overloaded', firstAttemptAt: now });
      return { kind: 'temporary', reason: 'the app server is overloaded', retryAfterMs: 1000 };
    }
    if (stateless && this.statelessInFlight >= this.options.maxStatelessInFlight) {
      this.warnLimited('stateless-in-flight', 'too many stateless pushes on their way', { in_flight: this.statelessInFlight });
      return { kind: 'limited', reason: 'too many stateless pushes on their way', retryAfterMs: 1000 };
    }
    // Only a throttle asks the store here: without one, nothing yields between the in-flight check
    // above and run() below, so publishes for one key can never both start a push.
    if (this.options.minIntervalMs > 0) {
      const windowEnd = await this.throttledUntil(target, now);
      if (windowEnd !== undefined) {
        // Merged into one push at the window's end (crash-safe: it is a retry row like any other).
        await this.persist(dialect, request, target, notification, { dueAt: windowEnd, attempt: 0, reason: 'throttled (push.min_interval_ms)', firstAttemptAt: now });
        return { kind: 'delivered', coalesced: true };
      }
      const raced = this.inFlight.get(target.key);
      if (raced) return rideAlong(raced);
    }
    const job: Job = { dialect, request, target, resolver, firstAttemptAt: now, attempt: 0, abandoned: false };
    if (stateless) this.statelessInFlight += 1;
    try {
      return await this.run(job);
    } finally {
      if (stateless) this.statelessInFlight -= 1;
    }
  }

  /** Sends a job with coalescing by key; a graceful stop may answer it before the provider does. */
  private run(job: Job): Promise<DispatchResult> {
    const sending = this.attempt(job);
    // One promise per push: the attempt's end and a graceful stop's interrupt both settle it, the first wins.
    let settle!: (result: DispatchResult) => void;
    let fail!: (error: unknown) => void;
    const answer: Promise<DispatchResult> = new Promise((resolve, reject) => {
      settle = (result) => { this.forget(job, answer); resolve(result); };
      fail = (error) => { this.forget(job, answer); reject(error); };
    });
    job.interrupt = settle;
    this.inFlight.set(job.target.key, answer);
    this.jobs.add(job);
    sending.then(settle, fail);
    return answer;
  }

  private forget(job: Job, answer: Promise<DispatchResult>): void {
    this.jobs.delete(job);
    if (this.inFlight.get(job.target.key) === answer) this.inFlight.delete(job.target.key);
  }

  /**
   * The end of the key's throttle window, or undefined to send now. The window lives in the store,
   * so instances sharing it send a node one push per window; what this process sent itself decides
   * without asking. A store that cannot answer leaves the decision to what this process knows.
   */
  private async throttledUntil(target: ResolvedTarget, now: number): Promise<number | undefined> {
    const interval = this.options.minIntervalMs;
    if (interval <= 0) return undefined;
    const last = this.lastSentAt.get(target.key);
    if (last !== undefined && now - last < interval) return last + interval;
    try {
      const windowEnd = await this.store.claimThrottleWindow(target.key, now, interval);
      return windowEnd === 0 ? undefined : windowEnd;
    } catch (error) {
      this.warnLimited('store-throttle', 'cannot read the shared throttle window: the store failed; this instance alone decides', { node: target.key, error: (error as Error).message });
      return undefined;
    }
  }

  private noteSent(key: string, now: number): void {
    if (this.options.minIntervalMs <= 0) return;
    if (this.lastSentAt.size >= THROTTLE_SWEEP_AT) {
      for (const [seen, at] of this.lastSentAt) if (now - at >= this.options.minIntervalMs) this.lastSentAt.delete(seen);
    }
    this.lastSentAt.delete(key);
    this.lastSentAt.set(key, now);
  }

  private async persist(dialect: Dialect, request: PushRequest, target: ResolvedTarget, notification: Notification, when: { dueAt: number; attempt: number; reason: string; firstAttemptAt: number }): Promise<void> {
    await this.queue.save({
      key: target.key,
      dialect,
      app: target.app.name,
      request: storedRequest(request),
      notification: { ...notification, summary: this.persistableSummary(target.app, notification.summary) },
      ...when,
    });
    this.wake(when.dueAt);
  }

  /** The message body is persisted only when the app sends it (include_body = true). */
  private persistableSummary(app: App, summary: Summary): Summary {
    if (app.includeBody || summary.lastMessageBody === undefined) return summary;
    const { lastMessageBody: _body, ...rest } = summary;
    return rest;
  }

  private overDomainLimit(dialect: Dialect, domain: string): DispatchResult | undefined {
    return this.overLimit(this.publishLimiter, 'publishes', domain)
      ?? (dialect === 'stateless' ? this.overLimit(this.statelessLimiter, 'stateless publishes', domain) : undefined);
  }

  private overLimit(limiter: KeyedRateLimiter, what: string, domain: string): DispatchResult | undefined {
    const decision = limiter.take(domain);
    if (decision.allowed) return undefined;
    this.warnLimited(`${what}:${domain}`, `${what} from one domain over the limit`, { domain });
    return { kind: 'limited', reason: `too many ${what} from ${domain}`, retryAfterMs: decision.retryAfterMs };
  }

  private warnLimited(key: string, message: string, fields: Record<string, unknown>): void {
    const now = this.options.now();
    const last = this.limitWarnedAt.get(key);
    if (last !== undefined && now - last < LIMIT_WARN_INTERVAL_MS) return;
    if (this.limitWarnedAt.size > 10_000) this.limitWarnedAt.clear();
    this.limitWarnedAt.set(key, now);
    this.logger.warn(message, { ...fields, note: 'logged at most once a minute' });
  }

  /** Sends to an app's provider with the configured timeout; a throw or a timeout is a value here. */
  send(app: App, target: { node: string; token: string }, notification: Notification): Promise<Outcome> {
    const started = performance.now();
    const timeoutMs = this.options.timeoutMs;
    // One promise and one timer per push: whichever of the provider and the timer comes first answers.
    return new Promise<Outcome>((resolve) => {
      let pending = true;
      const answer = (outcome: Outcome, label: ProviderRequestOutcome) => {
        if (!pending) return;
        pending = false;
        clearTimeout(timer);
        this.telemetry.providerRequest(app.name, app.providerKind, label, outcome.status, seconds(started));
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        answer({ kind: 'retry-after', ms: 0, reason: `no answer from the provider within ${timeoutMs} ms` }, 'error');
      }, timeoutMs);
      // A provider that never answers must not keep a stopping process alive.
      timer.unref();
      let sending: Promise<Outcome>;
      try {
        sending = app.provider.send({ app: app.name, node: target.node, token: target.token }, notification);
      } catch (error) {
        sending = Promise.reject(error);
      }
      sending.then(
        (outcome) => answer(outcome, OUTCOME_LABEL[outcome.kind]),
        (error: unknown) => {
          if (pending) this.logger.error('provider failed unexpectedly', { app: app.name, node: target.node, error });
          answer({ kind: 'retry-after', ms: 0, reason: `provider error: ${(error as Error).message}` }, 'error');
        },
      );
    });
  }

  private async attempt(job: Job): Promise<DispatchResult> {
    this.noteSent(job.target.key, this.options.now());
    const outcome = await this.send(job.target.app, job.target, job.target.notification);
    if (job.abandoned) return { kind: 'temporary', reason: 'the app server is stopping' };
    try {
      return await this.settle(job, outcome);
    } catch (error) {
      this.warnLimited('store-settle', 'cannot record a push outcome: the store failed', { node: job.target.node, error: (error as Error).message });
      return STORE_FAILED;
    }
  }

  private async settle(job: Job, outcome: Outcome): Promise<DispatchResult> {
    const { target, resolver } = job;
    const { app } = target;
    const now = this.options.now();
    const registered = target.registration !== undefined;
    const fields = { app: app.name, node: target.node };
    switch (outcome.kind) {
      case 'delivered': {
        if (registered) this.store.recordDelivery(target.node, now);
        try {
          await resolver.delivered?.(target);
        } catch (error) {
          this.warnLimited(`delivered:${job.dialect}`, 'a resolver could not note a delivery', { app: app.name, dialect: job.dialect, error: (error as Error).message });
        }
        await this.finish(job, 'delivered');
        for (const deferred of this.guard.delivered(app.name)) {
          await deferred.resolver.tokenDead(deferred.target, deferred.outcome).catch(() => undefined);
        }
        this.logger.debug('pushed', { ...fields, id: outcome.id, attempt: job.attempt });
        return { kind: 'delivered' };
      }
      case 'token-dead': {
        const { defer, restore } = this.guard.tokenDead(app.name, app.providerKind, target.token, { target, resolver, outcome });
        for (const registration of restore) {
          await this.store.insert(registration).catch((error) => this.logger.warn('cannot restore a registration', { node: registration.node, error: (error as Error).message }));
        }
        await this.finish(job, 'token_dead');
        if (defer) {
          if (registered) this.store.recordFailure(target.node, now, outcome.reason);
          this.logger.info('token reported dead while the app has not proven its configuration: registration kept', { ...fields, reason: outcome.reason });
          return { kind: 'temporary', reason: `${outcome.reason} (kept: the app looks misconfigured)` };
        }
        const result = await resolver.tokenDead(target, outcome);
        if (result.kind === 'not-found' && target.registration) this.guard.removed(app.name, target.registration);
        return result;
      }
      case 'retry-after':
      case 'credentials-rejected': {
        if (registered) this.store.recordFailure(target.node, now, outcome.reason);
        if (outcome.kind === 'credentials-rejected') {
          this.warnLimited(`credentials:${app.name}`, 'the push service rejected OUR credentials: check the app configuration; pushes are kept and retried', { ...fields, reason: outcome.reason });
        }
        const retryAfterMs = outcome.kind === 'retry-after' ? outcome.ms : 0;
        await this.retryLater(job, outcome.reason, retryAfterMs);
        return outcome.kind === 'retry-after'
          ? { kind: 'temporary', reason: outcome.reason, retryAfterMs: outcome.ms }
          : { kind: 'temporary', reason: 'the app server cannot authenticate to the push service' };
      }
      case 'rejected':
        if (registered) this.store.recordFailure(target.node, now, outcome.reason);
        this.logger.warn('push rejected', { ...fields, reason: outcome.reason });
        await this.finish(job, 'dropped');
        return { kind: 'rejected', reason: outcome.reason };
    }
  }

  private async finish(job: Job, result: RetryResult): Promise<void> {
    if (!job.retry) return;
    await this.queue.finish(job.retry);
    this.telemetry.retryFinished(job.target.app.name, result);
  }

  /** The deadline of a push: retry_max_age_s after its first attempt, or the app's ttl when smaller. */
  private deadlineOf(app: App, firstAttemptAt: number): number {
    const ttlMs = app.ttlSeconds !== undefined ? app.ttlSeconds * 1000 : Infinity;
    return firstAttemptAt + Math.min(this.options.retryMaxAgeMs, ttlMs);
  }

  /** Capped exponential backoff with jitter, never shorter than the service's Retry-After, never past the deadline. */
  private async retryLater(job: Job, reason: string, retryAfterMs: number): Promise<void> {
    const { app } = job.target;
    const now = this.options.now();
    const attempt = job.attempt + 1;
    const max = this.options.retryMaxAttempts;
    const deadline = this.deadlineOf(app, job.firstAttemptAt);
    let giveUp: string | undefined;
    if (max === 0) giveUp = 'retries are off (push.retry_max_attempts = 0)';
    else if (max !== undefined && attempt > max) giveUp = `after ${max} retries (push.retry_max_attempts)`;
    else if (now >= deadline) giveUp = 'its time ran out (push.retry_max_age_s or the app\'s ttl)';
    if (giveUp !== undefined) {
      this.logger.warn(`giving up on a push: ${giveUp}`, { app: app.name, node: job.target.node, attempts: attempt, reason });
      await this.finish(job, max !== undefined && attempt > max ? 'dropped' : 'expired');
      return;
    }
    const backoff = Math.min(this.options.retryMaxBackoffMs, this.options.retryInitialBackoffMs * 2 ** Math.min(job.attempt, 30));
    const jittered = backoff / 2 + this.options.random() * (backoff / 2);
    const delay = Math.min(this.options.retryMaxDelayMs, Math.max(jittered, retryAfterMs));
    // Whole milliseconds: every store keeps times as integers.
    const dueAt = Math.ceil(Math.min(now + delay, deadline));
    if (job.retry) {
      await this.queue.reschedule(job.retry, dueAt, attempt, reason);
      this.telemetry.retryFinished(app.name, 'rescheduled');
      this.wake(dueAt);
    } else {
      await this.persist(job.dialect, job.request, job.target, job.target.notification, { dueAt, attempt, reason, firstAttemptAt: job.firstAttemptAt });
    }
    this.logger.info('push will be retried', { node: job.target.node, in_ms: Math.round(dueAt - now), attempt, reason, app: app.name });
  }

  /** Sends the retries that are due; called by the retry loop and by tests. Returns how many were due. */
  async runDueRetries(): Promise<number> {
    if (this.closing) return 0;
    const now = this.options.now();
    const leaseUntil = now + 2 * this.options.timeoutMs + 5000;
    const due = await this.queue.lease(now, RETRY_BATCH, leaseUntil);
    await Promise.all(due.map((retry) => this.runRetry(retry, now)));
    return due.length;
  }

  private async runRetry(retry: StoredRetry, now: number): Promise<void> {
    // A push for this key is on its way and carries the news: when it is delivered, so is this one.
    // When it fails, it merged into this row (a newer revision), which its lease brings back.
    const pending = this.inFlight.get(retry.key);
    if (pending) {
      if ((await pending).kind === 'delivered') await this.queue.finish(retry);
      return;
    }
    const request: PushRequest = {
      dialect: retry.request.dialect as Dialect,
      node: retry.request.node,
      secret: retry.request.secret,
      from: retry.request.from,
      summary: retry.notification.summary,
      options: new Map(Object.entries(retry.request.options ?? {})),
    };
    const resolved = await this.resolve(request);
    if (resolved.resolution.kind === 'answer') {
      const result = resolved.resolution.result;
      if (result.kind === 'temporary' && result.cause === 'store') return;
      // The registration is gone or changed its secret: nothing is owed to it any more.
      await this.queue.finish(retry);
      this.telemetry.retryFinished(retry.app, 'dropped');
      this.logger.info('pending retry dropped: its target is gone', { node: retry.key, result: result.kind });
      return;
    }
    const target: ResolvedTarget = { ...resolved.resolution.target, notification: { ...retry.notification, firstAttemptAt: retry.firstAttemptAt } };
    if (now >= this.deadlineOf(target.app, retry.firstAttemptAt)) {
      await this.queue.finish(retry);
      this.telemetry.retryFinished(target.app.name, 'expired');
      this.logger.warn('giving up on a push: its time ran out (push.retry_max_age_s or the app\'s ttl)', { app: target.app.name, node: target.node, attempts: retry.attempt });
      return;
    }
    const windowEnd = await this.throttledUntil(target, now);
    if (windowEnd !== undefined) {
      await this.queue.reschedule(retry, windowEnd, retry.attempt, retry.reason);
      this.wake(windowEnd);
      return;
    }
    const job: Job = { dialect: resolved.resolution.dialect, request, target, resolver: resolved.resolver!, firstAttemptAt: retry.firstAttemptAt, attempt: retry.attempt, retry, abandoned: false };
    const result = await this.run(job);
    this.logger.info('retried push', { node: target.node, attempt: retry.attempt, result: result.kind, app: target.app.name });
  }

  private tick(): void {
    if (this.retryRunning || this.closing) return;
    this.retryRunning = (async () => {
      // A full batch means more may be due: keep going.
      while (!this.closing && (await this.runDueRetries()) === RETRY_BATCH);
      this.telemetry.retriesPending(await this.queue.count());
    })()
      .then(() => undefined, (error) => this.logger.error('retry loop failed', { error }))
      .finally(() => { this.retryRunning = undefined; });
  }

  /** Brings the retry loop forward to `dueAt` when that is sooner than its next turn. */
  private wake(dueAt: number): void {
    if (!this.retryTimer || this.closing || dueAt >= this.wakeAt) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeAt = dueAt;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined;
      this.wakeAt = Infinity;
      if (this.retryRunning) void this.retryRunning.then(() => this.tick());
      else this.tick();
    }, Math.max(0, dueAt - this.options.now()) + 5);
    this.wakeTimer.unref();
  }

  startRetryLoop(): void {
    if (this.retryTimer) return;
    this.retryTimer = setInterval(() => this.tick(), this.options.retryPollMs);
    this.retryTimer.unref();
    this.tick();
  }

  /**
   * Graceful stop: publishes from now on are persisted and answered `wait`; pushes on their way may
   * finish within `timeoutMs`; what is still on its way then is persisted as a retry and answered
   * `wait`. Leased retries still on their way are due again at once (sent twice at worst, never lost).
   */
  close(timeoutMs = this.options.shutdownTimeoutMs): Promise<void> {
    this.closed ??= (async () => {
      this.closing = true;
      if (this.retryTimer) clearInterval(this.retryTimer);
      if (this.wakeTimer) clearTimeout(this.wakeTimer);
      this.retryTimer = undefined;
      this.wakeTimer = undefined;
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs); });
      await Promise.race([Promise.allSettled([this.retryRunning, ...this.inFlight.values()]), deadline]);
      clearTimeout(timer);
      const unfinished = [...this.jobs];
      for (const job of unfinished) {
        job.abandoned = true;
        const stopped = { dueAt: this.options.now(), reason: 'on its way when the app server stopped' };
        if (!job.retry) {
          await this.persist(job.dialect, job.request, job.target, job.target.notification, { ...stopped, attempt: job.attempt, firstAttemptAt: job.firstAttemptAt });
        } else {
          // Nobody will finish this lease: due now, for the next start or another instance, not at the lease's end.
          await this.queue.reschedule(job.retry, stopped.dueAt, job.retry.attempt, stopped.reason);
        }
        job.interrupt?.({ kind: 'temporary', reason: 'the app server is stopping', retryAfterMs: 1000 });
      }
      if (unfinished.length > 0) this.logger.info('pushes still on their way at the stop were kept as retries', { count: unfinished.length });
    })();
    return this.closed;
  }

  /** Kept for callers of the previous API: the graceful stop with the configured timeout. */
  drain(): Promise<void> {
    return this.close();
  }
}
