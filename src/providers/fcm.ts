/**
 * Firebase Cloud Messaging, HTTP v1 API (`provider = "fcm"`): `POST /v1/projects/<id>/messages:send`
 * over one reused HTTP/2 session, authorised with an OAuth2 bearer token from the service account
 * (google-auth.ts). Google shut down the legacy API the original spoke in 2024.
 *
 * References: FCM REST v1 `projects.messages.send` (Message, AndroidConfig: priority, ttl as a
 * google.protobuf.Duration string "<n>s", collapse_key, data string map) and `ErrorCode` (the
 * google.firebase.fcm.v1.FcmError detail of a google.rpc.Status error; google.rpc.BadRequest
 * field violations); RFC 9110 §10.2.3 Retry-After.
 */
import type { TableReader } from '../config/reader.ts';
import { FIREBASE_MESSAGING_SCOPE, GoogleAccessTokens, parseServiceAccount, type ServiceAccount } from './google-auth.ts';
import { retryAfterMs } from './retry-after.ts';
import { Http2Client, Http2TransportError, type Http2Response } from './http2-client.ts';
import type { Notification, Outcome, Provider, ProviderFactory, ProviderStatus, PushTarget } from './types.ts';

/** FCM keeps a message at most 28 days (its default is the same 4 weeks). */
export const FCM_MAX_TTL_S = 28 * 24 * 3600;
const DEFAULT_ENDPOINT = 'https://fcm.googleapis.com';
const REQUEST_TIMEOUT_MS = 10_000;
/** Firebase asks for at least a minute's pause after QUOTA_EXCEEDED when no Retry-After says otherwise. */
const QUOTA_DEFAULT_RETRY_MS = 60_000;
/** The whole data payload must stay under FCM's 4096 bytes; a preview needs far less. */
const MAX_BODY_CHARS = 1000;
const MAX_SENDER_CHARS = 256;
/** Registration tokens are ~150–250 characters of base64url plus ':' (e.g. "<instance id>:APA91b…"). */
const TOKEN_SYNTAX = /^[A-Za-z0-9_:-]+$/;
const TOKEN_MIN_LENGTH = 20;
const TOKEN_MAX_LENGTH = 1024;

export interface FcmConfig {
  account: ServiceAccount;
  /** FCM's origin (`https://fcm.googleapis.com`); a loopback mock in tests. */
  endpoint: string;
  /** PEM CA bundle trusted for FCM and the token endpoint instead of the system store (tests). */
  ca: string | undefined;
  priority: 'high' | 'normal';
  ttlSeconds: number;
  collapseKey: string | undefined;
  includeBody: boolean;
}

function readServiceAccount(settings: TableReader): ServiceAccount {
  const file = settings.nonEmptyString('service_account_file');
  const text = settings.fileContents('service_account_file', file).toString('utf8');
  try {
    return parseServiceAccount(text);
  } catch (error) {
    settings.fail('service_account_file', `"${file}": ${(error as Error).message}`);
  }
}

export const fcmProvider: ProviderFactory<FcmConfig> = {
  parseConfig(settings) {
    const account = readServiceAccount(settings);
    const endpoint = settings.httpsOrigin('endpoint', DEFAULT_ENDPOINT, 'FCM speaks HTTP/2 over TLS');
    const caFile = settings.optionalString('ca_file');
    let ca: string | undefined;
    if (caFile !== undefined) {
      ca = settings.fileContents('ca_file', caFile).toString('utf8');
      if (!ca.includes('-----BEGIN CERTIFICATE-----')) settings.fail('ca_file', `"${caFile}" holds no PEM certificate`);
    }
    const priority = settings.oneOf('priority', ['high', 'normal'] as const, 'high');
    const ttlSeconds = settings.integer('ttl', FCM_MAX_TTL_S, { min: 0, max: FCM_MAX_TTL_S });
    const collapseKey = settings.optionalString('collapse_key');
    if (collapseKey !== undefined && (collapseKey.trim() === '' || collapseKey.length > 128)) {
      settings.fail('collapse_key', 'must be 1 to 128 characters');
    }
    const includeBody = settings.boolean('include_body', false);
    settings.rejectUnknownKeys();
    return { account, endpoint, ca, priority, ttlSeconds, collapseKey, includeBody };
  },

  create(config, { app, logger }): Provider {
    return new FcmProvider(config, new Http2Client({
      name: `fcm:${app}`,
      origin: config.endpoint,
      ca: config.ca,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      logger,
    }), new GoogleAccessTokens({ account: config.account, scope: FIREBASE_MESSAGING_SCOPE, ca: config.ca, timeoutMs: REQUEST_TIMEOUT_MS }));
  },
};

export function validateFcmToken(token: string): string | null {
  if (token.length < TOKEN_MIN_LENGTH) return `an FCM registration token has at least ${TOKEN_MIN_LENGTH} characters`;
  if (token.length > TOKEN_MAX_LENGTH) return `an FCM registration token has at most ${TOKEN_MAX_LENGTH} characters`;
  if (!TOKEN_SYNTAX.test(token)) return 'an FCM registration token has only letters, digits, "-", "_" and ":"';
  return null;
}

function truncate(text: string, maxChars: number): string {
  const chars = [...text]; // by code point, so no surrogate pair is split
  return chars.length > maxChars ? `${chars.slice(0, maxChars - 1).join('')}…` : text;
}

/** FCM refuses a message whose data exceeds 4096 bytes (keys and values). */
export const FCM_MAX_DATA_BYTES = 4096;

/** The data key holding a Push 2.0 ciphertext (base64), read by the app's FirebaseMessagingService. */
export const PUSH2_DATA_KEY = 'push2';

function dataBytes(data: Record<string, string>): number {
  return Object.entries(data).reduce((sum, [key, value]) => sum + Buffer.byteLength(key) + Buffer.byteLength(value), 0);
}

/**
 * Push 2.0: a data message with the ciphertext unchanged; `<priority>high` wakes at once (HIGH),
 * anything else is NORMAL. A string says why it cannot be sent (over FCM's data limit).
 */
export function buildFcmPush2Message(config: Pick<FcmConfig, 'ttlSeconds'>, target: PushTarget, push2: NonNullable<Notification['push2']>): { message: Record<string, unknown> } | string {
  const data: Record<string, string> = { node: target.node, [PUSH2_DATA_KEY]: push2.ciphertext.toString('base64'), priority: push2.priority };
  if (push2.voip) data.voip = '1';
  const bytes = dataBytes(data);
  if (bytes > FCM_MAX_DATA_BYTES) return `Push 2.0 payload of ${bytes} data bytes is over the FCM limit of ${FCM_MAX_DATA_BYTES}`;
  const android = {
    priority: push2.priority === 'high' ? 'HIGH' : 'NORMAL',
    ttl: `${Math.min(Math.max(0, Math.floor(config.ttlSeconds)), FCM_MAX_TTL_S)}s`,
  };
  return { message: { token: target.token, data, android } };
}

function ageSeconds(notification: Notification): number {
  return notification.firstAttemptAt === undefined ? 0 : Math.max(0, Math.floor((Date.now() - notification.firstAttemptAt) / 1000));
}

/** The FCM v1 `Message`: a data message (the app decides what to show) with Android delivery options. */
export function buildFcmMessage(config: Pick<FcmConfig, 'priority' | 'ttlSeconds' | 'collapseKey' | 'includeBody'>, target: PushTarget, notification: Notification): { message: Record<string, unknown> } {
  const { summary } = notification;
  // FCM data values must be strings. Names follow the XEP-0357 summary fields.
  const data: Record<string, string> = { node: target.node, urgency: notification.urgency };
  if (summary.messageCount !== undefined) data['message-count'] = String(summary.messageCount);
  if (summary.pendingSubscriptionCount !== undefined) data['pending-subscription-count'] = String(summary.pendingSubscriptionCount);
  if (config.includeBody) {
    if (summary.lastMessageSender !== undefined) data['last-message-sender'] = truncate(summary.lastMessageSender, MAX_SENDER_CHARS);
    if (summary.lastMessageBody !== undefined) data['last-message-body'] = truncate(summary.lastMessageBody, MAX_BODY_CHARS);
  }
  const android: Record<string, string> = {
    priority: config.priority === 'high' ? 'HIGH' : 'NORMAL',
    // A retried push keeps its first attempt's expiry: the ttl left, not the whole ttl again.
    ttl: `${Math.min(Math.max(0, Math.floor(config.ttlSeconds - ageSeconds(notification))), FCM_MAX_TTL_S)}s`,
  };
  if (config.collapseKey !== undefined) android.collapse_key = config.collapseKey;
  return { message: { token: target.token, data, android } };
}

interface GoogleErrorBody {
  status?: string;
  message?: string;
  details?: Array<Record<string, unknown>>;
}

function googleErrorOf(body: string): GoogleErrorBody {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    return typeof parsed?.error === 'object' && parsed.error !== null ? parsed.error as GoogleErrorBody : {};
  } catch {
    return {};
  }
}

/** The `errorCode` of the google.firebase.fcm.v1.FcmError detail, when there is one. */
function fcmErrorCodeOf(error: GoogleErrorBody): string | undefined {
  const detail = (error.details ?? []).find((d) => String(d['@type'] ?? '').endsWith('google.firebase.fcm.v1.FcmError'));
  return typeof detail?.errorCode === 'string' ? detail.errorCode : undefined;
}

/** INVALID_ARGUMENT names the token (dead) or a message field (our payload): tell which. */
function isAboutTheToken(error: GoogleErrorBody): boolean {
  const violations = (error.details ?? [])
    .filter((detail) => String(detail['@type'] ?? '').endsWith('google.rpc.BadRequest'))
    .flatMap((detail) => Array.isArray(detail.fieldViolations) ? detail.fieldViolations as Array<{ field?: unknown }> : []);
  if (violations.length > 0) return violations.some((violation) => violation.field === 'message.token');
  // Google's answer for a malformed token carries no field violation, only this message.
  return /registration token/i.test(error.message ?? '');
}

/** One FCM HTTP v1 answer → one Outcome. Pure, so every mapping is tested without a network. */
export function outcomeFromFcmResponse(response: Pick<Http2Response, 'status' | 'headers' | 'body'>, nowMs: number): Outcome {
  const { status } = response;
  if (status >= 200 && status < 300) {
    let id: string | undefined;
    try {
      const name = (JSON.parse(response.body) as { name?: unknown }).name;
      if (typeof name === 'string') id = name;
    } catch {
      // A 2xx is a delivery whatever its body says.
    }
    return { kind: 'delivered', id };
  }
  const error = googleErrorOf(response.body);
  const errorCode = fcmErrorCodeOf(error);
  const label = errorCode ?? error.status ?? `HTTP ${status}`;
  const reason = `FCM ${status} ${label}${error.message ? `: ${error.message}` : ''}`;
  const retryAfter = retryAfterMs(response.headers['retry-after'], nowMs);

  switch (errorCode) {
    case 'UNREGISTERED':
      return { kind: 'token-dead', reason };
    // The token belongs to another Firebase project than our service account's: our configuration's
    // fault (the wrong project), never a reason to delete the registration (issue #11).
    case 'SENDER_ID_MISMATCH':
      return { kind: 'credentials-rejected', reason };
    case 'INVALID_ARGUMENT':
      return isAboutTheToken(error) ? { kind: 'token-dead', reason } : { kind: 'rejected', reason };
    case 'QUOTA_EXCEEDED':
      return { kind: 'retry-after', ms: retryAfter ?? QUOTA_DEFAULT_RETRY_MS, reason };
    case 'UNAVAILABLE':
    case 'INTERNAL':
      return { kind: 'retry-after', ms: retryAfter ?? 0, reason };
    case 'THIRD_PARTY_AUTH_ERROR':
      return { kind: 'credentials-rejected', reason };
  }
  // No (known) FcmError detail: decide by the HTTP status.
  if (status === 401 || status === 403) return { kind: 'credentials-rejected', reason };
  if (status === 429) return { kind: 'retry-after', ms: retryAfter ?? QUOTA_DEFAULT_RETRY_MS, reason };
  if (status >= 500) return { kind: 'retry-after', ms: retryAfter ?? 0, reason };
  if (status === 400 && isAboutTheToken(error)) return { kind: 'token-dead', reason };
  return { kind: 'rejected', reason };
}

export class FcmProvider implements Provider {
  private readonly config: FcmConfig;
  private readonly client: Http2Client;
  private readonly tokens: GoogleAccessTokens;
  private readonly sendPath: string;
  private state: ProviderStatus = { state: 'ok' };

  constructor(config: FcmConfig, client: Http2Client, tokens: GoogleAccessTokens) {
    this.config = config;
    this.client = client;
    this.tokens = tokens;
    this.sendPath = `/v1/projects/${encodeURIComponent(config.account.projectId)}/messages:send`;
  }

  validateToken(token: string): string | null {
    return validateFcmToken(token);
  }

  async send(target: PushTarget, notification: Notification): Promise<Outcome> {
    const message = notification.push2 ? buildFcmPush2Message(this.config, target, notification.push2) : buildFcmMessage(this.config, target, notification);
    if (typeof message === 'string') return { kind: 'rejected', reason: message };
    const body = JSON.stringify(message);
    // A cached access token Google no longer accepts (revoked, clock skew) earns one retry with a fresh one.
    for (let attempt = 0; ; attempt += 1) {
      const auth = await this.tokens.get();
      if (!auth.ok) {
        const outcome: Outcome = auth.kind === 'credentials-rejected'
          ? { kind: 'credentials-rejected', reason: auth.reason }
          : { kind: 'retry-after', ms: auth.retryAfterMs, reason: auth.reason };
        return this.noted(outcome);
      }
      let response: Http2Response;
      try {
        response = await this.client.request({
          method: 'POST',
          path: this.sendPath,
          headers: { authorization: `Bearer ${auth.token}`, 'content-type': 'application/json; charset=utf-8' },
          body,
        });
      } catch (error) {
        if (!(error instanceof Http2TransportError)) throw error;
        return this.noted({ kind: 'retry-after', ms: 0, reason: `FCM unreachable: ${error.message}` });
      }
      const outcome = outcomeFromFcmResponse(response, Date.now());
      outcome.status = response.status;
      // A plain 401 is about our access token; THIRD_PARTY_AUTH_ERROR is about the APNs/Web Push credentials in Firebase.
      if (response.status === 401 && fcmErrorCodeOf(googleErrorOf(response.body)) === undefined) {
        this.tokens.invalidate(auth.token);
        if (!auth.fresh && attempt === 0) continue;
      }
      return this.noted(outcome);
    }
  }

  /** Our credentials refused → degraded until the next delivery proves them good again. */
  private noted(outcome: Outcome): Outcome {
    if (outcome.kind === 'credentials-rejected') this.state = { state: 'degraded', detail: outcome.reason };
    else if (outcome.kind === 'delivered') this.state = { state: 'ok' };
    return outcome;
  }

  status(): ProviderStatus {
    return this.state;
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
