/**
 * The one dispatch pipeline every dialect enters (DESIGN §2, issue #10):
 *
 *   resolve the target → authorise the publisher → limits and throttle → provider → outcome
 *
 * Each dialect (registered XEP-0357 publishes, HTTP /push, the stateless fpush dialect, Push 2.0)
 * brings only a Resolver: it finds the target and checks the publisher's proof (a secret, a JWT,
 * an app that opted in). Everything after resolution — allow-lists, per-domain limits, the
 * in-flight cap, coalescing, the per-node throttle, the provider call with its timeout, retries,
 * bookkeeping, telemetry — is the dispatcher's, written once, so it holds for every dialect.
 */
import type { Notification, Outcome } from '../providers/types.ts';
import type { Registration } from '../store/types.ts';
import type { App } from './apps.ts';
import type { DispatchResult, PushRequest } from './dispatcher.ts';
import type { Dialect } from './telemetry.ts';

/** Where one push goes, as a resolver found it. */
export interface ResolvedTarget {
  app: App;
  /** Coalescing, throttling and retries are per key: the node, or `app\0token` when nothing is stored. */
  key: string;
  node: string;
  token: string;
  /** Absent when the dialect stores nothing per device (stateless). */
  registration?: Registration;
  notification: Notification;
  /** The publishing domain (lower case), for allow-lists and per-domain limits; null over HTTP. */
  publisherDomain: string | null;
}

export type Resolution =
  /** The pipeline takes it from here. */
  | { kind: 'target'; dialect: Dialect; target: ResolvedTarget }
  /** Answered by the resolver itself (unknown node, wrong proof …); `app` labels the metric ("" when unknown). */
  | { kind: 'answer'; dialect: Dialect; app: string; result: DispatchResult };

export interface Resolver {
  /**
   * undefined: not this resolver's request; the next one is asked. Resolvers are asked in the
   * order they were added, so the registered-node resolver comes first.
   */
  resolve(request: PushRequest): Promise<Resolution | undefined>;
  /** The provider called the token dead: remove the registration, block the token … */
  tokenDead(target: ResolvedTarget, outcome: Extract<Outcome, { kind: 'token-dead' }>): Promise<DispatchResult>;
  /** Called after a delivery, when the dialect has something to remember (e.g. Push 2.0 pins a key). */
  delivered?(target: ResolvedTarget): Promise<void>;
}
