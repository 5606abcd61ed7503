/**
 * One APNS answer → one Outcome. Pure, so every status and reason is tested without a network.
 *
 * Reference: Apple, "Handling notification responses from APNs" (status codes 200, 400, 403, 404,
 * 405, 410, 413, 429, 500, 503; the JSON body's `reason` and, with 410, `timestamp` in milliseconds
 * since the epoch; the `apns-id` header). RFC 9110 §10.2.3 Retry-After.
 */
import type { Http2Response } from '../http2-client.ts';
import { retryAfterMs } from '../retry-after.ts';
import type { Outcome } from '../types.ts';

/**
 * The token will never work for this app again (Sygnal's TOKEN_ERRORS). DeviceTokenNotForTopic and
 * BadDeviceToken are also what a wrong topic or environment produces for every token: the
 * dispatcher's token guard keeps registrations when a whole app answers like that (issue #11).
 */
const DEAD_TOKEN_REASONS = new Set(['BadDeviceToken', 'DeviceTokenNotForTopic', 'Unregistered']);
/** Our configuration's fault, whatever the token: the topic is not allowed for our key or certificate. */
const CONFIG_REASONS = new Set(['TopicDisallowed']);

export interface ApnsAnswer {
  reason: string | undefined;
  /** With 410: when APNS learnt the token was invalid (ms since the epoch). */
  timestamp: number | undefined;
}

export function answerOf(body: string): ApnsAnswer {
  try {
    const parsed = JSON.parse(body) as { reason?: unknown; timestamp?: unknown };
    const timestamp = typeof parsed.timestamp === 'number' ? parsed.timestamp
      : typeof parsed.timestamp === 'string' && /^\d+$/.test(parsed.timestamp) ? Number(parsed.timestamp) : undefined;
    return { reason: typeof parsed.reason === 'string' ? parsed.reason : undefined, timestamp };
  } catch {
    return { reason: undefined, timestamp: undefined };
  }
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

export function outcomeFromApnsResponse(response: Pick<Http2Response, 'status' | 'headers' | 'body'>, nowMs: number): Outcome {
  const { status } = response;
  if (status === 200) return { kind: 'delivered', id: single(response.headers['apns-id']) };
  const { reason: apnsReason, timestamp } = answerOf(response.body);
  const reason = `APNS ${status}${apnsReason ? ` ${apnsReason}` : ''}`;
  const retryAfter = retryAfterMs(response.headers['retry-after'], nowMs);

  if (apnsReason !== undefined && CONFIG_REASONS.has(apnsReason)) return { kind: 'credentials-rejected', reason };
  if (status === 410 || (apnsReason !== undefined && DEAD_TOKEN_REASONS.has(apnsReason) && status === 400)) {
    return timestamp !== undefined ? { kind: 'token-dead', reason, since: timestamp } : { kind: 'token-dead', reason };
  }
  // 403 is about our key, team, certificate or environment (InvalidProviderToken, ExpiredProviderToken,
  // BadCertificate, BadCertificateEnvironment, …): nothing will work until an operator acts. The one
  // exception is a token replaced too often, which passes by itself.
  if (apnsReason === 'TooManyProviderTokenUpdates') return { kind: 'retry-after', ms: retryAfter ?? 60_000, reason };
  if (status === 403) return { kind: 'credentials-rejected', reason };
  // 429 TooManyRequests: too many pushes to this one device.
  if (status === 429 || status >= 500) return { kind: 'retry-after', ms: retryAfter ?? 0, reason };
  // 400 (other reasons: our headers or payload), 404, 405, 413: this notification can never be sent as is.
  return { kind: 'rejected', reason };
}
