/**
 * Registering and unregistering devices (DESIGN §5). Every dialect (HTTP, ad-hoc commands) calls
 * this one module, so the security rules live in one place:
 * - the same device with the same token gets the same node and secret back (idempotent);
 * - the same device with a different token gets a NEW node and secret, and the old node stops
 *   working, so knowing a node never lets anyone take over its pushes;
 * - a device is identified within a scope (the registering bare JID), so equal device ids of two
 *   users never collide; a group chat (p2's `muc`) is a registration of its own for the device;
 * - a registration that is bound to a domain or scoped by a JID is removed by an anonymous caller
 *   (HTTP) only with its secret.
 */
import type { Registration, Store } from '../store/types.ts';
import type { AppDirectory } from './apps.ts';
import { newNode, newSecret, secretsEqual } from './secrets.ts';
import { noTelemetry, type RegistrationDialect, type Telemetry } from './telemetry.ts';

export const LIMITS = { app: 64, deviceId: 256, token: 4096, scope: 3071 } as const;

export type RegistrationFailure =
  | { code: 'bad-request'; field: string; message: string }
  | { code: 'unknown-app'; field: 'type'; message: string }
  | { code: 'not-found'; message: string }
  | { code: 'forbidden'; message: string }
  | { code: 'secret-required'; field: 'secret'; message: string };

export type RegisterResult = { ok: true; registration: Registration; created: boolean } | { ok: false; failure: RegistrationFailure };
export type UnregisterResult = { ok: true; node: string } | { ok: false; failure: RegistrationFailure };

export interface RegisterInput {
  app: string;
  /** The client's own device identifier (the original API's `node`, p2's `device-id`). */
  deviceId: string;
  token: string;
  /** Who registers (a bare JID), scoping the device id; absent for anonymous HTTP registrations. */
  scope?: string;
  /** Publishes will be accepted only from this domain. */
  boundDomain?: string;
  /** Use the device id as the pubsub node when it is free, as the original did (v1 dialect). */
  deviceIdAsNode?: boolean;
  /** A group chat (bare JID) the device registers for separately (p2's `muc`). */
  group?: string;
  /** Who asks, for the metrics (default `http`). */
  dialect?: RegistrationDialect;
}

export interface UnregisterInput {
  app: string;
  deviceId: string;
  scope?: string;
  group?: string;
  secret?: string;
  /**
   * The caller proved no identity (HTTP): a registration bound to a domain or made by a JID then
   * needs its secret, so nobody can remove someone else's registration by naming its device id.
   */
  anonymous?: boolean;
  /** Who asks, for the metrics (default `http`). */
  dialect?: RegistrationDialect;
}

const NODE_SAFE = /^[\x21-\x7e]{1,256}$/;

function missingOrTooLong(field: string, value: string, max: number): RegistrationFailure | null {
  if (value === '') return { code: 'bad-request', field, message: `missing field "${field}"` };
  if (value.length > max) return { code: 'bad-request', field, message: `field "${field}" is longer than ${max} characters` };
  return null;
}

export function deviceKeyOf(scope: string | undefined, deviceId: string, group?: string): string {
  const key = `${scope ?? ''}|${deviceId}`;
  return group === undefined ? key : `${key}|muc=${group}`;
}

/** Registrations an anonymous caller may not remove without the secret. */
function isProtected(registration: Registration): boolean {
  return registration.boundDomain !== null || !registration.deviceKey.startsWith('|');
}

export class Registrations {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly now: () => number;
  private readonly telemetry: Telemetry;

  constructor(store: Store, apps: AppDirectory, now: () => number = Date.now, telemetry: Telemetry = noTelemetry) {
    this.store = store;
    this.apps = apps;
    this.now = now;
    this.telemetry = telemetry;
  }

  async register(input: RegisterInput): Promise<RegisterResult> {
    const invalid =
      missingOrTooLong('type', input.app, LIMITS.app) ??
      missingOrTooLong('node', input.deviceId, LIMITS.deviceId) ??
      missingOrTooLong('token', input.token, LIMITS.token) ??
      (input.scope !== undefined ? missingOrTooLong('jid', input.scope, LIMITS.scope) : null) ??
      (input.group !== undefined ? missingOrTooLong('muc', input.group, LIMITS.scope) : null);
    if (invalid) return { ok: false, failure: invalid };

    const app = this.apps.get(input.app);
    if (!app) return { ok: false, failure: { code: 'unknown-app', field: 'type', message: `unknown type "${input.app}"` } };
    const tokenProblem = app.provider.validateToken(input.token);
    if (tokenProblem) return { ok: false, failure: { code: 'bad-request', field: 'token', message: `invalid token: ${tokenProblem}` } };

    const deviceKey = deviceKeyOf(input.scope, input.deviceId, input.group);
    const now = this.now();
    const existing = await this.store.getByDevice(input.app, deviceKey);
    if (existing && existing.token === input.token && existing.boundDomain === (input.boundDomain ?? null)) {
      await this.store.renew(existing.node, now);
      this.telemetry.registrationChanged(input.app, input.dialect ?? 'http', 'renewed');
      return { ok: true, registration: { ...existing, renewedAt: now }, created: false };
    }

    const registration: Registration = {
      node: '',
      secret: newSecret(),
      app: input.app,
      token: input.token,
      deviceKey,
      boundDomain: input.boundDomain ?? null,
      registeredAt: now,
      renewedAt: now,
      lastPushAt: null,
      lastErrorAt: null,
      lastError: null,
      pushCount: 0,
    };
    const wantsDeviceNode = input.deviceIdAsNode === true && !existing && NODE_SAFE.test(input.deviceId);
    registration.node = wantsDeviceNode && !(await this.store.getByNode(input.deviceId)) ? input.deviceId : newNode();
    let replaced = existing?.node;
    try {
      await this.store.insert(registration, replaced);
    } catch (error) {
      // Lost a race for the device-id node (or the device key): a random node never collides.
      if (registration.node !== input.deviceId) throw error;
      const raced = await this.store.getByDevice(input.app, deviceKey);
      if (raced && raced.token === input.token) return { ok: true, registration: raced, created: false };
      registration.node = newNode();
      replaced = raced?.node ?? existing?.node;
      await this.store.insert(registration, replaced);
    }
    // A new token for a known device replaces its registration: the old one is removed.
    if (replaced !== undefined) this.telemetry.registrationChanged(input.app, input.dialect ?? 'http', 'removed');
    this.telemetry.registrationChanged(input.app, input.dialect ?? 'http', 'created');
    return { ok: true, registration, created: true };
  }

  /**
   * Finds the device's registration by device id, or by the node the client was handed (clients of
   * the original API send either). A secret, when given, must match.
   */
  async unregister(input: UnregisterInput): Promise<UnregisterResult> {
    const invalid = missingOrTooLong('type', input.app, LIMITS.app) ?? missingOrTooLong('node', input.deviceId, LIMITS.deviceId);
    if (invalid) return { ok: false, failure: invalid };
    if (!this.apps.get(input.app)) {
      return { ok: false, failure: { code: 'unknown-app', field: 'type', message: `unknown type "${input.app}"` } };
    }
    let registration = await this.store.getByDevice(input.app, deviceKeyOf(input.scope, input.deviceId, input.group));
    if (!registration && input.group === undefined) {
      const byNode = await this.store.getByNode(input.deviceId);
      if (byNode && byNode.app === input.app && (input.scope === undefined || byNode.deviceKey.startsWith(`${input.scope}|`))) {
        registration = byNode;
      }
    }
    if (!registration) return { ok: false, failure: { code: 'not-found', message: 'no such registration' } };
    if (input.anonymous === true && input.secret === undefined && isProtected(registration)) {
      const why = registration.boundDomain !== null ? `is bound to ${registration.boundDomain}` : 'was made by a JID';
      return { ok: false, failure: { code: 'secret-required', field: 'secret', message: `this registration ${why}: unregistering it requires its "secret" too` } };
    }
    if (input.secret !== undefined && !secretsEqual(registration.secret, input.secret)) {
      return { ok: false, failure: { code: 'not-found', message: 'no such registration' } };
    }
    if (await this.store.remove(registration.node)) this.telemetry.registrationChanged(registration.app, input.dialect ?? 'http', 'removed');
    return { ok: true, node: registration.node };
  }
}
