/**
 * Push 2.0 (`urn:xmpp:push2:0`, PUSH2.md): the user's server encrypts each notification for the
 * device (RFC 8291) and signs a JWT (RFC 8292 style); we relay the ciphertext unchanged. This is
 * the dialect's Resolver: everything after resolution (limits, throttle, provider, retries,
 * telemetry) is the one dispatch pipeline's (pipeline.ts).
 *
 * - Routing by `<client>`: a registration's node is its client string; the bare node and any URL
 *   whose last path segment is the node both reach it.
 * - Authentication: the JWT verifies with the notification's `key` (ES256), its `aud` is ours, its
 *   `exp` is in the future and at most 24 h ahead. The key must be the registration's; a
 *   registration without one pins the first key that verifies (Store.setPush2Key: first wins).
 *   The JWT replaces the XEP-0357 secret; domain binding applies unchanged.
 * - Stateless, snikket-apns compatible (apps with `push2_stateless = true`): a `<client>` URL
 *   `…/<APNS token>#<topic>` (optionally `#<topic>&<VoIP token>`) is delivered with nothing
 *   stored, after the same JWT checks, and a dead token goes on the fpush dialect's block list.
 *
 * - Notify-only (no ciphertext, no JWT) proves nothing about its sender: `not-authorized`, always.
 *
 * Answers (DESIGN §4 as Push 2.0 message errors, see xmpp/handlers/push2.ts): unknown client or
 * dead token → not-found; foreign domain → forbidden; a JWT that fails → forbidden with condition
 * `not-authorized`; no ciphertext → rejected.
 */
import type { Logger } from '../log.ts';
import type { Notification, Outcome, Push2Payload, Push2Priority } from '../providers/types.ts';
import type { Registration, Store } from '../store/types.ts';
import type { App, AppDirectory } from './apps.ts';
import { domainOf, type DispatchResult, type PushRequest } from './dispatcher.ts';
import { canonicalP256Key, decodeBase64Any, p256KeyOf, verifyEs256Jwt } from './jwt-verify.ts';
import type { Resolution, ResolvedTarget, Resolver } from './pipeline.ts';
import { registrationOrigin } from './registrations.ts';
import { DEFAULT_BLOCK_MS } from './stateless.ts';
import type { Telemetry } from './telemetry.ts';

export const PUSH2_NS = 'urn:xmpp:push2:0';

/** A `<client>` longer than this is no client of ours (tokens are ≤ 4096, URLs add little). */
export const MAX_CLIENT_LENGTH = 8192;

/** The `<notification xmlns='urn:xmpp:push2:0'>` as the transport parsed it (well-formed, not yet verified). */
export interface Push2Notification {
  client: string;
  priority: Push2Priority;
  voip: boolean;
  /** The decoded `<encrypted><payload>`; null when the notification carries none (notify-only). */
  payload: Buffer | null;
  /** `<jwt key='…'>`: the token and the key attribute as sent; null when absent. */
  jwt: { token: string; key: string } | null;
}

export interface Push2Options {
  /** Accepted JWT `aud` values (`push2.audiences`). */
  audiences: readonly string[];
  clockSkewS: number;
  /** How long a stateless token the provider called dead stays blocked. */
  blockForMs?: number;
  now?: () => number;
  /** A registration removed for a dead token is reported (the registration gauge follows it). */
  telemetry?: Telemetry;
}

type Route =
  | { kind: 'registered'; registration: Registration }
  | { kind: 'stateless'; app: App; token: string; voipToken: string | undefined };

/**
 * A dispatch result that may say a `forbidden` is about the proof (the JWT), not the publisher:
 * the transport answers that one auth/not-authorized instead of auth/forbidden.
 */
export type Push2Result = DispatchResult & { condition?: 'not-authorized' };

export function notAuthorized(reason: string): Push2Result {
  return { kind: 'forbidden', reason, condition: 'not-authorized' };
}

function shortToken(token: string): string {
  return token.length > 16 ? `${token.slice(0, 8)}…${token.slice(-4)}` : token;
}

/** A client that is a URL (scheme first), parsed; undefined for a bare node. */
function urlOf(client: string): URL | undefined {
  if (!/^[a-z][a-z0-9+.-]*:/i.test(client)) return undefined;
  try {
    return new URL(client);
  } catch {
    return undefined;
  }
}

/** The last path segment, percent-decoded; undefined when empty or not decodable. */
function lastSegmentOf(url: URL): string | undefined {
  const segment = url.pathname.split('/').pop();
  if (!segment) return undefined;
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

/**
 * The pipeline's key (coalescing, throttle, retry row) for a Push 2.0 target. Not the bare node:
 * each Push 2.0 notification carries its own encrypted message, so it must never ride along with
 * a XEP-0357 wake-up for the same device (which would drop the message), nor merge into its retry.
 */
export function push2TargetKey(target: string): string {
  return `${target}\u0000push2`;
}

/** The request option that marks a `<voip/>` notification, so a stored retry finds the VoIP token again. */
const VOIP_OPTION = 'push2-voip';

/**
 * The options of a Push 2.0 request: the stored retry keeps a request's options but not its
 * notification, and a stateless client with a VoIP token must be retried on the token it used.
 */
export function push2RequestOptions(notification: Push2Notification): ReadonlyMap<string, string> {
  return notification.voip ? new Map([[VOIP_OPTION, '1']]) : new Map();
}

/** The JWT replaces the XEP-0357 secret: without one, nothing says the notification is the client's. */
const NOTIFY_ONLY_REFUSED = 'a notification without a JWT (the notify-only profile) is not accepted: the JWT is what authenticates it';

/** PUSH2.md: the notify-only profile sends neither a ciphertext nor a JWT. */
function isNotifyOnly(notification: Push2Notification): boolean {
  return notification.jwt === null && notification.payload === null;
}

/** Notification urgency from `<priority>`: `low` is a silent wake-up, anything else is for a person. */
export function urgencyOfPriority(priority: Push2Priority): Notification['urgency'] {
  return priority === 'low' ? 'normal' : 'high';
}

export class Push2Resolver implements Resolver {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly logger: Logger;
  private readonly options: Push2Options;
  private readonly now: () => number;

  constructor(store: Store, apps: AppDirectory, logger: Logger, options: Push2Options) {
    this.store = store;
    this.apps = apps;
    this.logger = logger;
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  async resolve(request: PushRequest): Promise<Resolution | undefined> {
    if (request.dialect !== 'push2') return undefined;
    const notification = request.push2;
    if (!notification) return this.resolveRetry(request);
    const answer = (app: string, result: DispatchResult): Resolution => ({ kind: 'answer', dialect: 'push2', app, result });
    const route = await this.route(notification.client);
    if (!route) {
      this.logger.debug('Push 2.0 notification for an unknown client', { from: request.from ?? undefined });
      return answer('', { kind: 'not-found' });
    }
    const publisherDomain = request.from === null ? null : domainOf(request.from);

    if (route.kind === 'registered') {
      const { registration } = route;
      const app = this.apps.get(registration.app);
      if (!app) {
        this.logger.error('registration names an app that is not configured', { node: registration.node, app: registration.app });
        return answer(registration.app, { kind: 'temporary', reason: `app "${registration.app}" is not configured` });
      }
      if (registration.boundDomain !== null && publisherDomain !== registration.boundDomain) {
        return answer(app.name, { kind: 'forbidden', reason: `this client accepts notifications only from ${registration.boundDomain}` });
      }
      if (isNotifyOnly(notification)) return answer(app.name, notAuthorized(NOTIFY_ONLY_REFUSED));
      const verified = this.verify(notification);
      if (!verified.ok) return answer(app.name, notAuthorized(verified.reason));
      const pinned = registration.push2Key ?? null;
      if (pinned !== null && pinned !== verified.key) return answer(app.name, notAuthorized('the JWT is signed with another key than this client\'s'));
      if (pinned === null) {
        if (!(await this.store.setPush2Key(registration.node, verified.key))) {
          return answer(app.name, notAuthorized('the JWT is signed with another key than this client\'s'));
        }
        this.logger.info('Push 2.0 key pinned', { app: app.name, node: registration.node });
      }
      if (!verified.payload.ok) return answer(app.name, { kind: 'rejected', reason: verified.payload.reason });
      return {
        kind: 'target',
        dialect: 'push2',
        target: {
          app,
          key: push2TargetKey(registration.node),
          node: registration.node,
          token: registration.token,
          registration: { ...registration, push2Key: verified.key },
          notification: { summary: {}, urgency: urgencyOfPriority(notification.priority), push2: verified.payload.push2 },
          publisherDomain,
        },
      };
    }

    const { app } = route;
    if (isNotifyOnly(notification)) return answer(app.name, notAuthorized(NOTIFY_ONLY_REFUSED));
    const token = notification.voip && route.voipToken !== undefined ? route.voipToken : route.token;
    const invalid = app.provider.validateToken(token);
    if (invalid) {
      this.logger.info('stateless Push 2.0 notification with an invalid token', { app: app.name, reason: invalid });
      return answer(app.name, { kind: 'not-found' });
    }
    const verified = this.verify(notification);
    if (!verified.ok) return answer(app.name, notAuthorized(verified.reason));
    if (await this.store.isTokenBlocked(app.name, token, this.now())) return answer(app.name, { kind: 'not-found' });
    if (!verified.payload.ok) return answer(app.name, { kind: 'rejected', reason: verified.payload.reason });
    return {
      kind: 'target',
      dialect: 'push2',
      target: {
        app,
        key: push2TargetKey(`${app.name}\u0000${token}`),
        node: token,
        token,
        notification: { summary: {}, urgency: urgencyOfPriority(notification.priority), push2: verified.payload.push2 },
        publisherDomain,
      },
    };
  }

  async tokenDead(target: ResolvedTarget, outcome: Extract<Outcome, { kind: 'token-dead' }>): Promise<DispatchResult> {
    const fields = { app: target.app.name, reason: outcome.reason };
    if (target.registration) {
      const removed = await this.store.removeIfNotRenewedSince(target.node, outcome.since ?? this.now());
      if (removed) this.options.telemetry?.registrationChanged(target.app.name, registrationOrigin(target.registration), 'token_dead');
      this.logger.info(removed ? 'token is dead, registration removed' : 'token reported dead, but the device re-registered since', { ...fields, node: target.node });
      return removed ? { kind: 'not-found' } : { kind: 'temporary', reason: outcome.reason };
    }
    await this.store.blockToken(target.app.name, target.token, this.now() + (this.options.blockForMs ?? DEFAULT_BLOCK_MS));
    this.logger.info('stateless Push 2.0 token is dead, blocked', { ...fields, token: shortToken(target.token) });
    return { kind: 'not-found' };
  }

  /**
   * A stored retry comes back as the request minus its notification (the dispatcher persists the
   * payload it had resolved): only a notification that passed every check above was ever stored,
   * so finding the target again is enough; domain binding is checked again all the same.
   */
  private async resolveRetry(request: PushRequest): Promise<Resolution | undefined> {
    const answer = (app: string, result: DispatchResult): Resolution => ({ kind: 'answer', dialect: 'push2', app, result });
    const route = await this.route(request.node);
    if (!route) return answer('', { kind: 'not-found' });
    const publisherDomain = request.from === null ? null : domainOf(request.from);
    const notification: Notification = { summary: {}, urgency: 'high' };
    if (route.kind === 'stateless') {
      // The request's options say whether the first attempt went to the VoIP token (push2RequestOptions).
      const token = request.options.get(VOIP_OPTION) === '1' && route.voipToken !== undefined ? route.voipToken : route.token;
      return { kind: 'target', dialect: 'push2', target: { app: route.app, key: push2TargetKey(`${route.app.name}\u0000${token}`), node: token, token, notification, publisherDomain } };
    }
    const { registration } = route;
    const app = this.apps.get(registration.app);
    if (!app) return answer(registration.app, { kind: 'temporary', reason: `app "${registration.app}" is not configured` });
    if (registration.boundDomain !== null && publisherDomain !== registration.boundDomain) return answer(app.name, { kind: 'forbidden', reason: `this client accepts notifications only from ${registration.boundDomain}` });
    return { kind: 'target', dialect: 'push2', target: { app, key: push2TargetKey(registration.node), node: registration.node, token: registration.token, registration, notification, publisherDomain } };
  }

  private async route(client: string): Promise<Route | undefined> {
    if (client === '' || client.length > MAX_CLIENT_LENGTH) return undefined;
    const direct = await this.store.getByNode(client);
    if (direct) return { kind: 'registered', registration: direct };
    const url = urlOf(client);
    if (!url) return undefined;
    const segment = lastSegmentOf(url);
    if (segment === undefined) return undefined;
    const registration = await this.store.getByNode(segment);
    if (registration) return { kind: 'registered', registration };
    if (url.hash.length <= 1) return undefined;
    let fragment: string;
    try {
      fragment = decodeURIComponent(url.hash.slice(1));
    } catch {
      return undefined;
    }
    const [topic, voipToken] = fragment.split('&');
    const app = this.apps.all().find((candidate) => candidate.push2Stateless === true && candidate.apnsTopic === topic);
    return app ? { kind: 'stateless', app, token: segment, voipToken: voipToken || undefined } : undefined;
  }

  /** The JWT checks, then the payload as providers get it. */
  private verify(notification: Push2Notification):
    | { ok: true; key: string; payload: { ok: true; push2: Push2Payload } | { ok: false; reason: string } }
    | { ok: false; reason: string } {
    if (!notification.jwt) return { ok: false, reason: 'the notification carries a ciphertext but no JWT' };
    const key = canonicalP256Key(notification.jwt.key);
    const keyObject = key === null ? null : p256KeyOf(decodeBase64Any(notification.jwt.key)!);
    if (key === null || keyObject === null) return { ok: false, reason: 'the jwt key is not a P-256 public key' };
    const verdict = verifyEs256Jwt(notification.jwt.token, keyObject, { audiences: this.options.audiences, nowMs: this.now(), skewS: this.options.clockSkewS });
    if (!verdict.ok) return verdict;
    if (notification.payload === null) return { ok: true, key, payload: { ok: false, reason: 'the notification carries no encrypted payload' } };
    return {
      ok: true,
      key,
      payload: {
        ok: true,
        push2: {
          ciphertext: notification.payload,
          priority: notification.priority,
          voip: notification.voip,
          jwt: notification.jwt.token.trim(),
          jwtKey: key,
          audience: verdict.claims.aud,
        },
      },
    };
  }
}
