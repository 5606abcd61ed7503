/**
 * The provider port: one push service (APNS, FCM, WebPush, UnifiedPush, log) behind one method.
 * A provider knows nothing of XMPP or HTTP callers; it turns a notification into an Outcome value.
 * Providers own their connections, auth tokens and timeouts. Retrying is the dispatcher's job.
 */
import type { TableReader } from '../config/reader.ts';
import type { Logger } from '../log.ts';

/** The XEP-0357 summary, normalised (urn:xmpp:push:summary). Every field is optional in practice. */
export interface Summary {
  messageCount?: number;
  lastMessageSender?: string;
  lastMessageBody?: string;
  pendingSubscriptionCount?: number;
}

/**
 * `high`: something a person should see (a message body was announced); `normal`: a silent wake-up.
 * Decided once by the core (core/summary.ts) so every provider maps it the same way.
 */
export type Urgency = 'high' | 'normal';

export interface Notification {
  summary: Summary;
  urgency: Urgency;
  /** Push 2.0 (urn:xmpp:push2:0): the user's server's ciphertext, relayed unchanged (README "Push 2.0"). */
  push2?: Push2Payload;
  /**
   * When the first attempt of this push was made (ms since the epoch), for a retried push: an
   * expiration (APNS apns-expiration, FCM ttl) counts from it, not from the retry. Absent: now.
   */
  firstAttemptAt?: number;
}

/** `<priority>` of a Push 2.0 notification: `low` is a silent one (APNS priority 5, Urgency low). */
export type Push2Priority = 'high' | 'normal' | 'low';

export interface Push2Payload {
  /** The RFC 8291 aes128gcm body (salt, record size, key id, one record), exactly as the user's server made it. */
  ciphertext: Buffer;
  priority: Push2Priority;
  /** `<voip/>`: a call (Jingle Message Initiation); APNS sends a PushKit VoIP push. */
  voip: boolean;
  /** The publisher's verified JWT and its key (base64url of the P-256 point): a VAPID token when its `aud` is the endpoint's origin. */
  jwt: string;
  jwtKey: string;
  /** The JWT's `aud`, as verified. */
  audience: string;
}

export interface PushTarget {
  app: string;
  node: string;
  token: string;
}

export type Outcome = OutcomeKind & {
  /** The push service's HTTP status, when it answered (for metrics and the admin page). */
  status?: number;
};

type OutcomeKind =
  | { kind: 'delivered'; id?: string }
  /** The service says this token will never work again; `since` is its timestamp (ms) when given. */
  | { kind: 'token-dead'; reason: string; since?: number }
  | { kind: 'retry-after'; ms: number; reason: string }
  /** Our own credentials (key, certificate, account) were refused: nothing works until an operator acts. */
  | { kind: 'credentials-rejected'; reason: string }
  /** This notification can never be sent (payload too large, invalid field): not the token's fault. */
  | { kind: 'rejected'; reason: string };

export interface ProviderStatus {
  state: 'ok' | 'degraded';
  detail?: string;
}

export interface Provider {
  /** Returns a reason when the token cannot be one of this service's, so junk never reaches it. */
  validateToken(token: string): string | null;
  send(target: PushTarget, notification: Notification): Promise<Outcome>;
  status(): ProviderStatus;
  close(): Promise<void>;
}

export interface ProviderContext {
  app: string;
  logger: Logger;
}

/**
 * `parseConfig` validates the app's table (errors name file and key) and may read key files;
 * `create` builds the live provider. check-config calls only `parseConfig`.
 */
export interface ProviderFactory<C = unknown> {
  parseConfig(settings: TableReader): C;
  create(config: C, context: ProviderContext): Provider;
}
