/**
 * WebPush (`provider = "webpush"`): wakes browser XMPP clients through their push service.
 * - The registration token is the browser's PushSubscription JSON (W3C Push API `toJSON()`):
 *   `{"endpoint": "https://…", "keys": {"p256dh": "…", "auth": "…"}}`, validated at registration.
 * - The message is encrypted per RFC 8291 (aes128gcm, RFC 8188) and signed with VAPID (RFC 8292),
 *   see web-push-crypto.ts; POSTed per RFC 8030 §5 with TTL and Urgency, see push-endpoint.ts.
 * Config: vapid_public_key, vapid_private_key, subject (mailto: or https: contact), ttl, include_body;
 * allow_private (endpoints are user input, see address-guard.ts) and ca_file (tests).
 */
import { forbiddenLiteralHost, forbiddenPortReason, type ResolveAll } from './address-guard.ts';
import { DEFAULT_TTL_S, deliveryHeaders, MAX_TOKEN_LENGTH, push2EndpointMessage, pushContent, PushEndpointClient, readAllowedPorts, readCaFile } from './push-endpoint.ts';
import type { Outcome, Provider, ProviderContext, ProviderFactory, ProviderStatus } from './types.ts';
import { AUTH_SECRET_BYTES, decodeBase64url, encryptPushMessage, isP256PublicKey, MAX_PLAINTEXT_BYTES, parseVapidKeys, VapidSigner, type SubscriptionKeys, type VapidKeys } from './web-push-crypto.ts';

export interface WebPushConfig {
  vapid: VapidKeys;
  subject: string;
  ttlSeconds: number;
  includeBody: boolean;
  allowPrivate: boolean;
  ca: string | undefined;
  /** Ports besides 443 (allowed_ports); checked unless allow_private. */
  allowedPorts?: number[];
}

export interface WebPushSubscription {
  endpoint: URL;
  keys: SubscriptionKeys;
}

/** Parses a PushSubscription JSON token; a string says what is wrong with it. */
export function parseSubscription(token: string, allowPrivate: boolean, allowedPorts?: readonly number[]): WebPushSubscription | string {
  if (token.length > MAX_TOKEN_LENGTH) return `token longer than ${MAX_TOKEN_LENGTH} characters`;
  let json: unknown;
  try {
    json = JSON.parse(token);
  } catch {
    return 'token must be the PushSubscription JSON ({"endpoint": …, "keys": {"p256dh": …, "auth": …}})';
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return 'token must be a JSON object';
  const { endpoint, keys } = json as { endpoint?: unknown; keys?: unknown };
  if (typeof endpoint !== 'string') return 'subscription has no "endpoint" string';
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return 'subscription endpoint is not a URL';
  }
  if (url.protocol !== 'https:') return 'subscription endpoint must be an https URL';
  if (url.username !== '' || url.password !== '') return 'subscription endpoint must not carry credentials';
  if (!allowPrivate) {
    const literal = forbiddenLiteralHost(url) ?? forbiddenPortReason(url, allowedPorts);
    if (literal) return `subscription endpoint refused: ${literal}`;
  }
  if (typeof keys !== 'object' || keys === null) return 'subscription has no "keys" object';
  const { p256dh, auth } = keys as { p256dh?: unknown; auth?: unknown };
  const publicKey = typeof p256dh === 'string' ? decodeBase64url(p256dh) : null;
  if (!publicKey || !isP256PublicKey(publicKey)) return 'keys.p256dh must be the base64url of a 65-byte uncompressed P-256 point';
  const authSecret = typeof auth === 'string' ? decodeBase64url(auth) : null;
  if (!authSecret || authSecret.length !== AUTH_SECRET_BYTES) return `keys.auth must be the base64url of ${AUTH_SECRET_BYTES} bytes`;
  return { endpoint: url, keys: { p256dh: publicKey, auth: authSecret } };
}

export interface WebPushDependencies {
  resolveAll?: ResolveAll;
  now?: () => number;
  timeoutMs?: number;
}

export function createWebPushProvider(config: WebPushConfig, context: ProviderContext, dependencies: WebPushDependencies = {}): Provider {
  const signer = new VapidSigner(config.vapid, config.subject, dependencies.now);
  const client = new PushEndpointClient({
    ca: config.ca,
    allowPrivate: config.allowPrivate,
    allowedPorts: config.allowedPorts,
    authFailure: 'credentials-rejected',
    resolveAll: dependencies.resolveAll,
    timeoutMs: dependencies.timeoutMs,
    now: dependencies.now,
  });
  // A refused VAPID key breaks every push until an operator acts: health shows it until one succeeds.
  let credentialsProblem: string | undefined;
  const noted = (outcome: Outcome, endpoint: URL): Outcome => {
    if (outcome.kind === 'credentials-rejected') {
      credentialsProblem = `${endpoint.origin} refused our VAPID key: ${outcome.reason}`;
      context.logger.error('push service refused the VAPID key', { origin: endpoint.origin, reason: outcome.reason });
    } else if (outcome.kind === 'delivered') {
      credentialsProblem = undefined;
    }
    return outcome;
  };

  return {
    validateToken(token) {
      const parsed = parseSubscription(token, config.allowPrivate, config.allowedPorts);
      return typeof parsed === 'string' ? parsed : null;
    },

    async send(target, notification) {
      const subscription = parseSubscription(target.token, config.allowPrivate, config.allowedPorts);
      if (typeof subscription === 'string') return { kind: 'rejected', reason: `stored subscription is unusable: ${subscription}` };
      if (notification.push2) {
        // Encrypted by the user's server with the keys the client gave it (this subscription's).
        const message = push2EndpointMessage(notification.push2, config.ttlSeconds, subscription.endpoint, () => signer.authorization(subscription.endpoint));
        if (typeof message === 'string') return { kind: 'rejected', reason: message };
        return noted(await client.post(subscription.endpoint, message), subscription.endpoint);
      }
      const plaintext = pushContent(target.node, notification.summary, config.includeBody, MAX_PLAINTEXT_BYTES);
      let body: Buffer;
      try {
        body = encryptPushMessage(plaintext, subscription.keys);
      } catch (error) {
        return { kind: 'rejected', reason: `cannot encrypt for this subscription: ${(error as Error).message}` };
      }
      const outcome = await client.post(subscription.endpoint, {
        headers: {
          ...deliveryHeaders(config.ttlSeconds, notification.urgency),
          'content-type': 'application/octet-stream',
          'content-encoding': 'aes128gcm',
          authorization: signer.authorization(subscription.endpoint),
        },
        body,
      });
      return noted(outcome, subscription.endpoint);
    },

    status(): ProviderStatus {
      return credentialsProblem ? { state: 'degraded', detail: credentialsProblem } : { state: 'ok' };
    },

    async close() {
      client.close();
    },
  };
}

export const webPushProvider: ProviderFactory<WebPushConfig> = {
  parseConfig(settings) {
    const publicKey = settings.nonEmptyString('vapid_public_key');
    const privateKey = settings.nonEmptyString('vapid_private_key');
    const vapid = parseVapidKeys(publicKey.trim(), privateKey.trim());
    if (typeof vapid === 'string') return settings.fail(vapid.startsWith('vapid_public_key') ? 'vapid_public_key' : 'vapid_private_key', vapid);
    const subject = settings.nonEmptyString('subject');
    if (!/^(mailto:\S+@\S+|https:\/\/\S+)$/.test(subject)) {
      settings.fail('subject', `must be a contact URL such as "mailto:admin@example.org" or "https://example.org/contact" (RFC 8292 §2.1), got "${subject}"`);
    }
    const config: WebPushConfig = {
      vapid,
      subject,
      ttlSeconds: settings.integer('ttl', DEFAULT_TTL_S, { min: 0, max: DEFAULT_TTL_S }),
      includeBody: settings.boolean('include_body', false),
      allowPrivate: settings.boolean('allow_private', false),
      ca: readCaFile(settings),
      ...readAllowedPorts(settings),
    };
    settings.rejectUnknownKeys();
    return config;
  },

  create(config, context) {
    return createWebPushProvider(config, context);
  },
};
