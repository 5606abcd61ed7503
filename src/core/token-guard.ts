/**
 * Guards registrations against our own misconfiguration (issue #11). A wrong APNS topic or
 * environment, or the wrong Firebase project, makes the push service call EVERY token dead; taken
 * at its word, the server would delete every registration as pushes arrive. So when `threshold`
 * distinct tokens are called dead within the window with no delivery in between, the app is marked
 * degraded with a loud ERROR naming the likely cause, the registrations removed since the last
 * delivery are restored, and further removals are deferred (registrations kept). The next delivery
 * ends it: the deferred removals are dropped (those tokens are simply tried again).
 */
import type { Logger } from '../log.ts';
import type { Registration } from '../store/types.ts';

export interface TokenGuardOptions {
  /** Distinct tokens called dead, with no delivery in between, that mark the app degraded. */
  threshold: number;
  windowMs: number;
  now: () => number;
}

interface AppState<T> {
  lastDeliveryAt: number | undefined;
  /** Distinct tokens called dead since the last delivery → when. */
  deadSinceDelivery: Map<string, number>;
  deferred: T[];
  /** Registrations removed since the last delivery (and when), to restore when the app turns out misconfigured. */
  removed: Array<{ at: number; registration: Registration }>;
  degradedSince: number | undefined;
}

const DEFERRED_LIMIT = 10_000;
const REMOVED_LIMIT = 1000;

export function likelyCause(providerKind: string): string {
  if (providerKind === 'apns') return 'check the app\'s topic (the iOS bundle id) and environment (sandbox vs production): they must match the tokens';
  if (providerKind === 'fcm') return 'check the app\'s Firebase project (service account): the tokens belong to another project';
  return 'check the app\'s push service settings';
}

export class TokenGuard<T> {
  private readonly options: TokenGuardOptions;
  private readonly logger: Logger;
  private readonly apps = new Map<string, AppState<T>>();

  constructor(options: TokenGuardOptions, logger: Logger) {
    this.options = options;
    this.logger = logger;
  }

  private state(app: string): AppState<T> {
    let state = this.apps.get(app);
    if (!state) {
      state = { lastDeliveryAt: undefined, deadSinceDelivery: new Map(), deferred: [], removed: [], degradedSince: undefined };
      this.apps.set(app, state);
    }
    return state;
  }

  /**
   * A token was called dead. `defer`: keep the registration (the app has not proven itself);
   * `restore`: registrations removed earlier that should come back (the app just turned degraded).
   */
  tokenDead(app: string, providerKind: string, token: string, deferred: T): { defer: boolean; restore: Registration[] } {
    const state = this.state(app);
    const now = this.options.now();
    for (const [seen, at] of state.deadSinceDelivery) {
      if (now - at <= this.options.windowMs) break;
      state.deadSinceDelivery.delete(seen);
    }
    state.deadSinceDelivery.delete(token);
    state.deadSinceDelivery.set(token, now);
    let restore: Registration[] = [];
    if (state.degradedSince === undefined && state.deadSinceDelivery.size >= this.options.threshold) {
      state.degradedSince = now;
      restore = state.removed.splice(0).filter((entry) => now - entry.at <= this.options.windowMs).map((entry) => entry.registration);
      this.logger.error(`app "${app}": the push service called ${state.deadSinceDelivery.size} different tokens dead without a single delivery in between; registrations are KEPT, not removed. This is almost always our configuration: ${likelyCause(providerKind)}. Fix it and restart; cleanup resumes after a push succeeds again`, { app, provider: providerKind, restored: restore.length });
    }
    if (state.degradedSince === undefined) return { defer: false, restore };
    if (state.deferred.length < DEFERRED_LIMIT) state.deferred.push(deferred);
    return { defer: true, restore };
  }

  /** A registration was removed for a dead token (kept to restore if the app turns out misconfigured). */
  removed(app: string, registration: Registration): void {
    const state = this.state(app);
    if (state.removed.length >= REMOVED_LIMIT) state.removed.shift();
    state.removed.push({ at: this.options.now(), registration });
  }

  /** A push was delivered: the app works; returns removals to carry out now (none: deferred deaths are not believed). */
  delivered(app: string): T[] {
    const state = this.state(app);
    state.lastDeliveryAt = this.options.now();
    if (state.deadSinceDelivery.size > 0) state.deadSinceDelivery.clear();
    if (state.removed.length > 0) state.removed = [];
    const deferred = state.deferred.splice(0);
    if (state.degradedSince !== undefined) {
      this.logger.warn(`app "${app}": a push was delivered again; dead-token cleanup resumes`, { app, deferred_dropped: deferred.length });
      state.degradedSince = undefined;
    }
    // Deaths reported while the app looked misconfigured are not believed: those tokens are tried again.
    return [];
  }

  status(app: string): { state: 'degraded'; detail: string } | undefined {
    const state = this.apps.get(app);
    if (state?.degradedSince === undefined) return undefined;
    return { state: 'degraded', detail: `every recent push was answered with a dead token since ${new Date(state.degradedSince).toISOString()}: registrations kept; likely our configuration` };
  }
}
