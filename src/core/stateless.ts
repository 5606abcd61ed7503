/**
 * Monal's stateless dialect (fpush, DESIGN §6.4): no registration at all. The pubsub node IS the
 * device token and the publish-option `pushModule` names the app, which must opt in with
 * `stateless = true`. Nothing is stored per device, so there is no secret and no domain binding;
 * what keeps dead tokens from being hammered is a bounded, persisted block list with expiry
 * (Store.blockToken): a token the push service called dead is refused for `blockForMs`.
 *
 * Answers follow DESIGN §4 like every other publish: an unknown or non-stateless app, an invalid
 * or blocked token → not-found (`cancel`/`item-not-found`, so the user's server disables push for
 * it); transient trouble → temporary (`wait`).
 */
import type { Logger } from '../log.ts';
import type { Notification, Outcome } from '../providers/types.ts';
import type { Store } from '../store/types.ts';
import type { App, AppDirectory } from './apps.ts';
import type { DispatchResult, PushRequest, UnregisteredNodeHandler } from './dispatcher.ts';

/** The publish-options field naming the app (fpush's spelling). */
export const PUSH_MODULE_OPTION = 'pushModule';

/** A dead token stays blocked this long: APNS/FCM never revive a token, but a store must not grow forever. */
export const DEFAULT_BLOCK_MS = 30 * 24 * 3600 * 1000;

export interface StatelessSender {
  send(app: App, target: { node: string; token: string }, notification: Notification): Promise<Outcome>;
}

export interface StatelessOptions {
  blockForMs?: number;
  now?: () => number;
}

function shortToken(token: string): string {
  return token.length > 16 ? `${token.slice(0, 8)}…${token.slice(-4)}` : token;
}

export class StatelessDialect implements UnregisteredNodeHandler {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly sender: StatelessSender;
  private readonly logger: Logger;
  private readonly blockForMs: number;
  private readonly now: () => number;
  /** One wake-up per device: a publish arriving while one for the same token is on the way rides along. */
  private readonly inFlight = new Map<string, Promise<DispatchResult>>();

  constructor(store: Store, apps: AppDirectory, sender: StatelessSender, logger: Logger, options: StatelessOptions = {}) {
    this.store = store;
    this.apps = apps;
    this.sender = sender;
    this.logger = logger;
    this.blockForMs = options.blockForMs ?? DEFAULT_BLOCK_MS;
    this.now = options.now ?? Date.now;
  }

  /** undefined: not a stateless publish (no pushModule), left to the dispatcher's not-found. */
  async dispatch(request: PushRequest, notification: Notification): Promise<DispatchResult | undefined> {
    const appName = request.options.get(PUSH_MODULE_OPTION)?.trim();
    if (appName === undefined || appName === '') return undefined;
    const app = this.apps.get(appName);
    if (!app || !app.stateless) {
      this.logger.info('stateless publish for an app that is not configured as stateless', { push_module: appName.slice(0, 64), from: request.from ?? undefined });
      return { kind: 'not-found' };
    }
    const token = request.node;
    const invalid = app.provider.validateToken(token);
    if (invalid) {
      this.logger.info('stateless publish with an invalid token', { app: app.name, reason: invalid });
      return { kind: 'not-found' };
    }
    if (await this.store.isTokenBlocked(app.name, token, this.now())) return { kind: 'not-found' };

    const key = `${app.name}\u0000${token}`;
    const pending = this.inFlight.get(key);
    if (pending) {
      const result = await pending;
      return result.kind === 'delivered' ? { kind: 'delivered', coalesced: true } : result;
    }
    const sending = this.send(app, token, notification);
    this.inFlight.set(key, sending);
    try {
      return await sending;
    } finally {
      this.inFlight.delete(key);
    }
  }

  private async send(app: App, token: string, notification: Notification): Promise<DispatchResult> {
    const outcome = await this.sender.send(app, { node: token, token }, notification);
    const fields = { app: app.name, token: shortToken(token) };
    switch (outcome.kind) {
      case 'delivered':
        this.logger.debug('stateless push delivered', { ...fields, id: outcome.id });
        return { kind: 'delivered' };
      case 'token-dead':
        await this.store.blockToken(app.name, token, this.now() + this.blockForMs);
        this.logger.info('stateless token is dead, blocked', { ...fields, reason: outcome.reason });
        return { kind: 'not-found' };
      case 'retry-after':
        // Nothing is stored for a stateless device, so there is nothing to retry from: the user's
        // server keeps the registration (wait) and the next message brings the next publish.
        this.logger.info('stateless push not delivered, try later', { ...fields, reason: outcome.reason });
        return { kind: 'temporary', reason: outcome.reason, retryAfterMs: outcome.ms };
      case 'credentials-rejected':
        this.logger.error('the push service rejected OUR credentials: check the app configuration', { ...fields, reason: outcome.reason });
        return { kind: 'temporary', reason: 'the app server cannot authenticate to the push service' };
      case 'rejected':
        this.logger.warn('stateless push rejected', { ...fields, reason: outcome.reason });
        return { kind: 'rejected', reason: outcome.reason };
    }
  }
}
