/**
 * One push, from a verified request to a provider and back (DESIGN §2, §4). Transports (the XEP-0357
 * publish handler, POST /push) build a PushRequest, await dispatch() and translate the result:
 * this module decides, they only translate.
 */
import type { Logger } from '../log.ts';
import type { Notification, Outcome, Summary, Urgency } from '../providers/types.ts';
import type { Registration, Store } from '../store/types.ts';
import type { App, AppDirectory } from './apps.ts';
import { secretsEqual } from './secrets.ts';
import type { Push2Notification } from './push2.ts';
import type { Dialect } from './telemetry.ts';
import { urgencyOf } from './summary.ts';

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
  /** Transient: the publisher should not give up on this registration. */
  | { kind: 'temporary'; reason: string; retryAfterMs?: number }
  /** This notification cannot be sent, through no fault of the registration. */
  | { kind: 'rejected'; reason: string };

export interface DispatcherOptions {
  timeoutMs: number;
  /** Pushes on their way at once; beyond it publishes get a `wait` error instead of queueing without bound. */
  maxInFlight?: number;
  retryMaxAttempts: number;
  retryMaxDelayMs: number;
  now?: () => number;
}

/** Resolves a publish for a node we do not store (the stateless dialect, issue #5). */
export interface UnregisteredNodeHandler {
  dispatch(request: PushRequest, notification: Notification): Promise<DispatchResult | undefined>;
}

export function domainOf(jid: string): string {
  const withoutResource = jid.split('/')[0];
  const at = withoutResource.lastIndexOf('@');
  return (at === -1 ? withoutResource : withoutResource.slice(at + 1)).toLowerCase();
}

const RETRY_POLL_MS = 1000;
const RETRY_BATCH = 200;

export class Dispatcher {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly logger: Logger;
  private readonly options: Required<DispatcherOptions>;
  private readonly inFlight = new Map<string, Promise<DispatchResult>>();
  private retryTimer: NodeJS.Timeout | undefined;
  private retryRunning: Promise<void> | undefined;
  unregisteredNodes: UnregisteredNodeHandler | undefined;

  constructor(store: Store, apps: AppDirectory, logger: Logger, options: DispatcherOptions) {
    this.store = store;
    this.apps = apps;
    this.logger = logger;
    this.options = { now: Date.now, maxInFlight: 10_000, ...options };
  }

  async dispatch(request: PushRequest): Promise<DispatchResult> {
    const registration = await this.store.getByNode(request.node);
    const notification: Notification = { summary: request.summary, urgency: urgencyOf(request.summary) };
    if (!registration) {
      const handled = await this.unregisteredNodes?.dispatch(request, notification);
      return handled ?? { kind: 'not-found' };
    }
    if (request.secret === null || !secretsEqual(registration.secret, request.secret)) return { kind: 'not-found' };
    if (registration.boundDomain !== null && (request.from === null || domainOf(request.from) !== registration.boundDomain)) {
      return { kind: 'forbidden', reason: `this node accepts publishes only from ${registration.boundDomain}` };
    }

    // A device needs one wake-up: a publish arriving while one for its node is on the way rides along.
    const pending = this.inFlight.get(registration.node);
    if (pending) {
      const result = await pending;
      return result.kind === 'delivered' ? { kind: 'delivered', coalesced: true } : result;
    }
    if (this.inFlight.size >= this.options.maxInFlight) {
      this.logger.warn('overloaded: too many pushes on their way', { in_flight: this.inFlight.size, node: registration.node });
      return { kind: 'temporary', reason: 'the app server is overloaded', retryAfterMs: 1000 };
    }
    const sending = this.push(registration, notification, 0);
    this.inFlight.set(registration.node, sending);
    try {
      return await sending;
    } finally {
      this.inFlight.delete(registration.node);
    }
  }

  /** Sends to an app's provider with the configured timeout; a throw or a timeout is a value here. */
  async send(app: App, target: { node: string; token: string }, notification: Notification): Promise<Outcome> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'retry-after', ms: 0, reason: `no answer from the provider within ${this.options.timeoutMs} ms` }), this.options.timeoutMs);
    });
    try {
      return await Promise.race([app.provider.send({ app: app.name, node: target.node, token: target.token }, notification), timeout]);
    } catch (error) {
      this.logger.error('provider failed unexpectedly', { app: app.name, node: target.node, error });
      return { kind: 'retry-after', ms: 0, reason: `provider error: ${(error as Error).message}` };
    } finally {
      clearTimeout(timer);
    }
  }

  private async push(registration: Registration, notification: Notification, attempt: number): Promise<DispatchResult> {
    const app = this.apps.get(registration.app);
    if (!app) {
      this.logger.error('registration names an app that is not configured', { node: registration.node, app: registration.app });
      return { kind: 'temporary', reason: `app "${registration.app}" is not configured` };
    }
    const outcome = await this.send(app, registration, notification);
    const now = this.options.now();
    const fields = { app: app.name, node: registration.node };
    switch (outcome.kind) {
      case 'delivered':
        this.store.recordDelivery(registration.node, now);
        this.logger.debug('pushed', { ...fields, id: outcome.id });
        return { kind: 'delivered' };
      case 'token-dead': {
        const removed = await this.store.removeIfNotRenewedSince(registration.node, outcome.since ?? now);
        this.logger.info(removed ? 'token is dead, registration removed' : 'token reported dead, but the device re-registered since', { ...fields, reason: outcome.reason });
        return removed ? { kind: 'not-found' } : { kind: 'temporary', reason: outcome.reason };
      }
      case 'retry-after': {
        this.store.recordFailure(registration.node, now, outcome.reason);
        await this.scheduleRetry(registration.node, notification.urgency, attempt + 1, outcome);
        return { kind: 'temporary', reason: outcome.reason, retryAfterMs: outcome.ms };
      }
      case 'credentials-rejected':
        this.store.recordFailure(registration.node, now, outcome.reason);
        this.logger.error('the push service rejected OUR credentials: check the app configuration', { ...fields, reason: outcome.reason });
        return { kind: 'temporary', reason: 'the app server cannot authenticate to the push service' };
      case 'rejected':
        this.store.recordFailure(registration.node, now, outcome.reason);
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
      const result = await this.push(registration, { summary: {}, urgency: retry.urgency }, retry.attempt);
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
