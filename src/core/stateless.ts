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
import type { Outcome } from '../providers/types.ts';
import type { Store } from '../store/types.ts';
import type { AppDirectory } from './apps.ts';
import { domainOf, type DispatchResult, type PushRequest } from './dispatcher.ts';
import type { Resolution, ResolvedTarget, Resolver } from './pipeline.ts';
import { urgencyOf } from './summary.ts';

/** The publish-options field naming the app (fpush's spelling). */
export const PUSH_MODULE_OPTION = 'pushModule';

/** A dead token stays blocked this long: APNS/FCM never revive a token, but a store must not grow forever. */
export const DEFAULT_BLOCK_MS = 30 * 24 * 3600 * 1000;

export interface StatelessOptions {
  blockForMs?: number;
  now?: () => number;
}

function shortToken(token: string): string {
  return token.length > 16 ? `${token.slice(0, 8)}…${token.slice(-4)}` : token;
}

/**
 * A resolver after the registered-node one: it sees only XEP-0357 publishes to nodes we do not
 * store. Limits, the in-flight cap, coalescing (per app and token) and the provider call are the
 * dispatcher's, as for every dialect.
 */
export class StatelessDialect implements Resolver {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly logger: Logger;
  private readonly blockForMs: number;
  private readonly now: () => number;

  constructor(store: Store, apps: AppDirectory, logger: Logger, options: StatelessOptions = {}) {
    this.store = store;
    this.apps = apps;
    this.logger = logger;
    this.blockForMs = options.blockForMs ?? DEFAULT_BLOCK_MS;
    this.now = options.now ?? Date.now;
  }

  /** undefined: not a stateless publish (no pushModule), left to the dispatcher's not-found. */
  async resolve(request: PushRequest): Promise<Resolution | undefined> {
    if (request.dialect !== 'xep0357') return undefined;
    const appName = request.options.get(PUSH_MODULE_OPTION)?.trim();
    if (appName === undefined || appName === '') return undefined;
    const notFound = (app: string): Resolution => ({ kind: 'answer', dialect: 'stateless', app, result: { kind: 'not-found' } });
    const app = this.apps.get(appName);
    if (!app || !app.stateless) {
      this.logger.info('stateless publish for an app that is not configured as stateless', { push_module: appName.slice(0, 64), from: request.from ?? undefined });
      return notFound('');
    }
    const token = request.node;
    const invalid = app.provider.validateToken(token);
    if (invalid) {
      this.logger.info('stateless publish with an invalid token', { app: app.name, reason: invalid });
      return notFound(app.name);
    }
    if (await this.store.isTokenBlocked(app.name, token, this.now())) return notFound(app.name);
    const target: ResolvedTarget = {
      app,
      key: `${app.name}\u0000${token}`,
      node: token,
      token,
      notification: { summary: request.summary, urgency: urgencyOf(request.summary) },
      publisherDomain: request.from === null ? null : domainOf(request.from),
    };
    return { kind: 'target', dialect: 'stateless', target };
  }

  async tokenDead(target: ResolvedTarget, outcome: Extract<Outcome, { kind: 'token-dead' }>): Promise<DispatchResult> {
    await this.store.blockToken(target.app.name, target.token, this.now() + this.blockForMs);
    this.logger.info('stateless token is dead, blocked', { app: target.app.name, token: shortToken(target.token), reason: outcome.reason });
    return { kind: 'not-found' };
  }
}
