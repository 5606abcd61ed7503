/**
 * Registering and unregistering devices (DESIGN §5). Every dialect (HTTP, ad-hoc commands) calls
 * this one module, so the security rules live in one place. Identity is proven or absent: an ad-hoc
 * command's `from` is a proven bare JID (`scope`), HTTP proves nothing.
 * - the same device with the same token gets the same node and secret back (idempotent);
 * - a device is identified within a scope, so equal device ids of two users never collide; a group
 *   chat (p2's `muc`) is a registration of its own for the device;
 * - XMPP-made registrations are keyed `<bare JID>|<device id>`; HTTP-made ones have a scope of
 *   their own (`|<device id>`, or `|jid=<named JID>|<device id>` when the caller names a JID), so an
 *   HTTP caller can never reach one made over XMPP, whatever JID it names;
 * - a proven JID that registers its device with another token replaces its registration (new node
 *   and secret, the old node stops working);
 * - an HTTP caller that does so without the registration's `secret` gets a NEW node and secret
 *   beside it, and the old node keeps working until its token is reported dead or it expires:
 *   knowing a device id never lets anyone knock out or take over someone else's pushes. The new
 *   token never receives the old secret;
 * - "no such registration" and "not yours" are one answer, so nodes and domains cannot be probed.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../log.ts';
import type { Registration, Store } from '../store/types.ts';
import type { AppDirectory } from './apps.ts';
import { canonicalP256Key } from './jwt-verify.ts';
import { newNode, newSecret, secretsEqual } from './secrets.ts';
import { noTelemetry, type RegistrationDialect, type Telemetry } from './telemetry.ts';
import { ThrottledWarning } from './throttled-warning.ts';

export const LIMITS = { app: 64, deviceId: 256, token: 4096, scope: 3071 } as const;

export type RegistrationFailure =
  | { code: 'bad-request'; field: string; message: string }
  | { code: 'unknown-app'; field: 'type'; message: string }
  | { code: 'not-found'; message: string }
  | { code: 'forbidden'; message: string }
  /** A limit (registrations per JID) is reached: a `wait` error, HTTP 429. */
  | { code: 'limited'; message: string; retryAfterMs: number }
  /** Our store refused the read or write (locked, full, down): XMPP `wait`/`internal-server-error`, HTTP 503. */
  | { code: 'unavailable'; message: string; retryAfterMs: number };

export type RegisterResult = { ok: true; registration: Registration; created: boolean } | { ok: false; failure: RegistrationFailure };
export type UnregisterResult = { ok: true; node: string } | { ok: false; failure: RegistrationFailure };

export interface RegisterInput {
  app: string;
  /** The client's own device identifier (the original API's `node`, p2's `device-id`). */
  deviceId: string;
  token: string;
  /** Who registers: the PROVEN bare JID (an ad-hoc command's sender); absent for HTTP. */
  scope?: string;
  /** HTTP: the JID the caller names. It proves nothing: it only binds publishes to its domain. */
  namedJid?: string;
  /** Publishes will be accepted only from this domain (and apps.NAME.allowed_domains checks it). */
  boundDomain?: string;
  /** HTTP: the secret of the device's registration, to replace it rather than add one beside it. */
  secret?: string;
  /** Use the device id as the pubsub node when it is free, as the original did (v1 dialect). */
  deviceIdAsNode?: boolean;
  /** A group chat (bare JID) the device registers for separately (p2's `muc`). */
  group?: string;
  /** Who asks, for the metrics (default `http`). */
  dialect?: RegistrationDialect;
  /**
   * Push 2.0: the client's JWT public key (base64 or base64url of the 65-byte P-256 point), so only
   * notifications signed with it are accepted; absent: the first valid one is pinned. `field` names
   * it in errors (`push2_key` over HTTP, `push2-key` in ad-hoc forms).
   */
  push2Key?: string;
}

export interface UnregisterInput {
  app: string;
  /** The device id or the node the client was handed (clients of the original API send either). */
  deviceId: string;
  /** The PROVEN bare JID (ad-hoc); it may remove its own registrations and anonymous ones. */
  scope?: string;
  /** HTTP: the JID the caller names (finds a registration made with the same `jid`). */
  namedJid?: string;
  group?: string;
  secret?: string;
  /**
   * The caller proved no identity (HTTP): only an anonymous, unbound HTTP registration is removed
   * without its secret, so nobody can remove someone else's registration by naming its device id.
   */
  anonymous?: boolean;
  /** Who asks, for the metrics (default `http`). */
  dialect?: RegistrationDialect;
}

export interface RegistrationsOptions {
  /** Registrations one proven JID may hold, every app together; 0 or absent = no maximum. */
  maxPerJid?: number;
  /** apps.NAME.allowed_domains: the domains that may register for an app; undefined = every one. */
  allowedDomains?: (app: string) => readonly string[] | undefined;
  /** Every registration created, renewed or removed is reported here (the registration gauge). */
  telemetry?: Telemetry;
  /** Where a store error is reported (a WARN with the store's message, at most once a minute). */
  logger?: Logger;
}

/** The one answer for "no such registration" and "not yours". */
export const NOT_FOUND: RegistrationFailure = {
  code: 'not-found',
  message: 'no such registration, or not yours to remove (one bound to a domain or made over XMPP also needs its "secret")',
};

const NODE_SAFE = /^[\x21-\x7e]{1,256}$/;

function missingOrTooLong(field: string, value: string, max: number): RegistrationFailure | null {
  if (value === '') return { code: 'bad-request', field, message: `missing field "${field}"` };
  if (value.length > max) return { code: 'bad-request', field, message: `field "${field}" is longer than ${max} characters` };
  return null;
}

/** The key of an XMPP-made registration: the proven JID scopes the device id. */
export function deviceKeyOf(scope: string | undefined, deviceId: string, group?: string): string {
  const key = `${scope ?? ''}|${deviceId}`;
  return group === undefined ? key : `${key}|muc=${group}`;
}

/** The key of an HTTP-made registration: always starts with `|`, which no JID scope does. */
export function httpDeviceKeyOf(namedJid: string | undefined, deviceId: string): string {
  return namedJid === undefined ? `|${deviceId}` : `|jid=${namedJid}|${deviceId}`;
}

/** The key of an HTTP registration made beside an existing one (another token, no secret). */
function besideKeyOf(key: string, token: string): string {
  return `${key}#${createHash('sha256').update(token).digest('hex').slice(0, 32)}`;
}

/** Which API made a registration, for the metrics: HTTP-made device keys start with `|`. */
export function registrationOrigin(registration: Registration): 'http' | 'xmpp' {
  return registration.deviceKey.startsWith('|') ? 'http' : 'xmpp';
}

/** HTTP-made, bound to no domain: what the original API let anyone remove by type and node. */
export function isAnonymous(registration: Registration): boolean {
  return registration.boundDomain === null && registration.deviceKey.startsWith('|');
}

export class Registrations {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly now: () => number;
  private readonly options: RegistrationsOptions;
  private readonly telemetry: Telemetry;
  private readonly storeWarning: ThrottledWarning | undefined;

  constructor(store: Store, apps: AppDirectory, now: () => number = Date.now, options: RegistrationsOptions = {}) {
    this.store = store;
    this.apps = apps;
    this.now = now;
    this.options = options;
    this.telemetry = options.telemetry ?? noTelemetry;
    this.storeWarning = options.logger ? new ThrottledWarning(options.logger, 'the store refused a registration change; the client was asked to try again') : undefined;
  }

  /** A store that cannot answer (a write lock held elsewhere beyond the short busy timeout, a full disk) is a temporary failure. */
  private unavailable(error: unknown, action: string): { ok: false; failure: RegistrationFailure } {
    const message = (error as Error)?.message ?? String(error);
    this.storeWarning?.note({ action, error: message });
    return { ok: false, failure: { code: 'unavailable', message: `the app server cannot ${action} registrations right now: try again`, retryAfterMs: 1000 } };
  }

  async register(input: RegisterInput): Promise<RegisterResult> {
    try {
      return await this.registerInStore(input);
    } catch (error) {
      return this.unavailable(error, 'store');
    }
  }

  private async registerInStore(input: RegisterInput): Promise<RegisterResult> {
    const invalid =
      missingOrTooLong('type', input.app, LIMITS.app) ??
      missingOrTooLong('node', input.deviceId, LIMITS.deviceId) ??
      missingOrTooLong('token', input.token, LIMITS.token) ??
      (input.scope !== undefined ? missingOrTooLong('jid', input.scope, LIMITS.scope) : null) ??
      (input.namedJid !== undefined ? missingOrTooLong('jid', input.namedJid, LIMITS.scope) : null) ??
      (input.group !== undefined ? missingOrTooLong('muc', input.group, LIMITS.scope) : null);
    if (invalid) return { ok: false, failure: invalid };
    const push2Key = input.push2Key === undefined ? null : canonicalP256Key(input.push2Key);
    if (input.push2Key !== undefined && push2Key === null) {
      return { ok: false, failure: { code: 'bad-request', field: 'push2_key', message: 'field "push2_key" must be the base64 or base64url of a 65-byte P-256 public key' } };
    }

    const app = this.apps.get(input.app);
    if (!app) return { ok: false, failure: { code: 'unknown-app', field: 'type', message: `unknown type "${input.app}"` } };
    const allowed = this.options.allowedDomains?.(input.app);
    if (allowed !== undefined && (input.boundDomain === undefined || !allowed.includes(input.boundDomain))) {
      return { ok: false, failure: { code: 'forbidden', message: `type "${input.app}" accepts registrations only for JIDs of its allowed domains` } };
    }
    const tokenProblem = app.provider.validateToken(input.token);
    if (tokenProblem) return { ok: false, failure: { code: 'bad-request', field: 'token', message: `invalid token: ${tokenProblem}` } };

    const proven = input.scope !== undefined;
    const boundDomain = input.boundDomain ?? null;
    const primaryKey = proven ? deviceKeyOf(input.scope, input.deviceId, input.group) : httpDeviceKeyOf(input.namedJid, input.deviceId);
    const now = this.now();
    // A different Push 2.0 key is a different registration, as a different token is (DESIGN §5).
    const sameAs = (registration: Registration | undefined) => registration !== undefined && registration.token === input.token && registration.boundDomain === boundDomain
      && (push2Key === null || (registration.push2Key ?? null) === null || registration.push2Key === push2Key);

    const existing = await this.store.getByDevice(input.app, primaryKey);
    if (sameAs(existing)) return this.renewed(existing!, now, push2Key, input.dialect);

    let deviceKey = primaryKey;
    let replaces: string | undefined;
    if (existing && (proven || (input.secret !== undefined && secretsEqual(existing.secret, input.secret)))) {
      replaces = existing.node;
    } else if (existing) {
      // Unproven, and not the owner's secret: a registration of its own beside the existing one.
      deviceKey = besideKeyOf(primaryKey, input.token);
      const beside = await this.store.getByDevice(input.app, deviceKey);
      if (sameAs(beside)) return this.renewed(beside!, now, push2Key, input.dialect);
      replaces = beside?.node;
    } else if (proven && (this.options.maxPerJid ?? 0) > 0 && (await this.store.countByScope(input.scope!)) >= this.options.maxPerJid!) {
      return { ok: false, failure: { code: 'limited', message: `${input.scope} holds the most registrations allowed (registration.max_per_jid = ${this.options.maxPerJid})`, retryAfterMs: 3_600_000 } };
    }

    const registration: Registration = {
      node: '',
      secret: newSecret(),
      app: input.app,
      token: input.token,
      deviceKey,
      boundDomain,
      registeredAt: now,
      renewedAt: now,
      lastPushAt: null,
      lastErrorAt: null,
      lastError: null,
      pushCount: 0,
      push2Key,
    };
    const wantsDeviceNode = input.deviceIdAsNode === true && !existing && NODE_SAFE.test(input.deviceId);
    registration.node = wantsDeviceNode && !(await this.store.getByNode(input.deviceId)) ? input.deviceId : newNode();
    try {
      await this.store.insert(registration, replaces);
    } catch (error) {
      // Lost a race for the device-id node (or the device key): a random node never collides.
      if (registration.node !== input.deviceId) throw error;
      const raced = await this.store.getByDevice(input.app, deviceKey);
      if (sameAs(raced)) return { ok: true, registration: raced!, created: false };
      if (raced && !proven) return { ok: false, failure: { code: 'limited', message: 'another registration of this device is being made: try again', retryAfterMs: 1000 } };
      registration.node = newNode();
      replaces = raced?.node ?? replaces;
      await this.store.insert(registration, replaces);
    }
    // A new token for a known device replaces its registration: the old one is removed.
    if (replaces !== undefined) this.telemetry.registrationChanged(input.app, input.dialect ?? 'http', 'removed');
    this.telemetry.registrationChanged(input.app, input.dialect ?? 'http', 'created');
    return { ok: true, registration, created: true };
  }

  private async renewed(existing: Registration, now: number, push2Key: string | null = null, dialect: RegistrationDialect = 'http'): Promise<RegisterResult> {
    await this.store.renew(existing.node, now);
    this.telemetry.registrationChanged(existing.app, dialect, 'renewed');
    // Push 2.0: a key given now for a registration that holds none is pinned (first wins).
    const pinned = existing.push2Key ?? null;
    if (push2Key !== null && pinned === null) await this.store.setPush2Key(existing.node, push2Key);
    return { ok: true, registration: { ...existing, renewedAt: now, push2Key: pinned ?? push2Key }, created: false };
  }

  /**
   * Finds the device's registration by device id, or by the node the client was handed. A proven
   * JID removes its own registrations and anonymous HTTP ones; an HTTP caller removes an anonymous
   * one, or any it names the secret of. Everything else is the one NOT_FOUND answer.
   */
  async unregister(input: UnregisterInput): Promise<UnregisterResult> {
    try {
      return await this.unregisterInStore(input);
    } catch (error) {
      return this.unavailable(error, 'remove');
    }
  }

  private async unregisterInStore(input: UnregisterInput): Promise<UnregisterResult> {
    const invalid = missingOrTooLong('type', input.app, LIMITS.app) ?? missingOrTooLong('node', input.deviceId, LIMITS.deviceId);
    if (invalid) return { ok: false, failure: invalid };
    if (!this.apps.get(input.app)) {
      return { ok: false, failure: { code: 'unknown-app', field: 'type', message: `unknown type "${input.app}"` } };
    }
    const registration = input.anonymous === true || input.scope === undefined ? await this.findForHttp(input) : await this.findForJid(input, input.scope);
    if (!registration) return { ok: false, failure: NOT_FOUND };
    if (input.secret !== undefined && !secretsEqual(registration.secret, input.secret)) return { ok: false, failure: NOT_FOUND };
    if (await this.store.remove(registration.node)) this.telemetry.registrationChanged(registration.app, input.dialect ?? 'http', 'removed');
    return { ok: true, node: registration.node };
  }

  private async findForJid(input: UnregisterInput, scope: string): Promise<Registration | undefined> {
    const own = await this.store.getByDevice(input.app, deviceKeyOf(scope, input.deviceId, input.group));
    if (own || input.group !== undefined) return own;
    const byNode = await this.store.getByNode(input.deviceId);
    if (byNode && byNode.app === input.app && (byNode.deviceKey.startsWith(`${scope}|`) || isAnonymous(byNode))) return byNode;
    const anonymous = await this.store.getByDevice(input.app, httpDeviceKeyOf(undefined, input.deviceId));
    return anonymous && isAnonymous(anonymous) ? anonymous : undefined;
  }

  private async findForHttp(input: UnregisterInput): Promise<Registration | undefined> {
    const mayRemove = (registration: Registration | undefined) =>
      registration !== undefined && registration.app === input.app && (input.secret !== undefined || isAnonymous(registration));
    const candidates = [
      () => this.store.getByDevice(input.app, httpDeviceKeyOf(input.namedJid, input.deviceId)),
      () => this.store.getByNode(input.deviceId),
      // With the secret, a registration made over XMPP can be removed over HTTP too (as before).
      () => (input.secret !== undefined && input.namedJid !== undefined
        ? this.store.getByDevice(input.app, deviceKeyOf(input.namedJid, input.deviceId, input.group))
        : Promise.resolve(undefined)),
    ];
    for (const candidate of candidates) {
      const registration = await candidate();
      if (mayRemove(registration)) return registration;
    }
    return undefined;
  }
}
