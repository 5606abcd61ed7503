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
import { canonicalP256Key } from './jwt-verify.ts';
import { newNode, newSecret, secretsEqual } from './secrets.ts';

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
  /**
   * Push 2.0: the client's JWT public key (base64 or base64url of the 65-byte P-256 point), so only
   * notifications signed with it are accepted; absent: the first valid one is pinned. `field` names
   * it in errors (`push2_key` over HTTP, `push2-key` in ad-hoc forms).
   */
  push2Key?: string;
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

  constructor(store: Store, apps: AppDirectory, now: () => number = Date.now) {
    this.store = store;
    this.apps = apps;
    this.now = now;
  }

  async register(input: RegisterInput): Promise<RegisterResult> {
    const invalid =
      missingOrTooLong('type', input.app, LIMITS.app) ??
      missingOrTooLong('node', input.deviceId, LIMITS.deviceId) ??
      missingOrTooLong('token', input.token, LIMITS.token) ??
      (input.scope !== undefined ? missingOrTooLong('jid', input.scope, LIMITS.scope) : null) ??
      (input.group !== undefined ? missingOrTooLong('muc', input.group, LIMITS.scope) : null);
    if (invalid) return { ok: false, failure: invalid };
    const push2Key = input.push2Key === undefined ? null : canonicalP256Key(input.push2Key);
    if (input.push2Key !== undefined && push2Key === null) {
      return { ok: false, failure: { code: 'bad-request', field: 'push2_key', message: 'field "push2_key" must be the base64 or base64url of a 65-byte P-256 public key' } };
    }

    const app = this.apps.get(input.app);
    if (!app) return { ok: false, failure: { code: 'unknown-app', field: 'type', message: `unknown type "${input.app}"` } };
    const tokenProblem = app.provider.validateToken(input.token);
    if (tokenProblem) return { ok: false, failure: { code: 'bad-request', field: 'token', message: `invalid token: ${tokenProblem}` } };

    const deviceKey = deviceKeyOf(input.scope, input.deviceId, input.group);
    const now = this.now();
    const existing = await this.store.getByDevice(input.app, deviceKey);
    // A different Push 2.0 key is a different registration, as a different token is (DESIGN §5).
    const sameKey = push2Key === null || (existing?.push2Key ?? null) === null || existing?.push2Key === push2Key;
    if (existing && existing.token === input.token && existing.boundDomain === (input.boundDomain ?? null) && sameKey) {
      await this.store.renew(existing.node, now);
      if (push2Key !== null && (existing.push2Key ?? null) === null) await this.store.setPush2Key(existing.node, push2Key);
      return { ok: true, registration: { ...existing, renewedAt: now, push2Key: existing.push2Key ?? push2Key }, created: false };
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
      push2Key,
    };
    const wantsDeviceNode = input.deviceIdAsNode === true && !existing && NODE_SAFE.test(input.deviceId);
    registration.node = wantsDeviceNode && !(await this.store.getByNode(input.deviceId)) ? input.deviceId : newNode();
    try {
      await this.store.insert(registration, existing?.node);
    } catch (error) {
      // Lost a race for the device-id node (or the device key): a random node never collides.
      if (registration.node !== input.deviceId) throw error;
      const raced = await this.store.getByDevice(input.app, deviceKey);
      if (raced && raced.token === input.token) return { ok: true, registration: raced, created: false };
      registration.node = newNode();
      await this.store.insert(registration, raced?.node ?? existing?.node);
    }
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
    await this.store.remove(registration.node);
    return { ok: true, node: registration.node };
  }
}
