/**
 * One notification → the APNS request headers and JSON payload. Pure (the clock is a parameter),
 * so every mode is tested without a network.
 *
 * References: Apple, "Sending notification requests to APNs" (headers apns-topic, apns-push-type,
 * apns-priority, apns-expiration, apns-collapse-id; payload limits 4 KB, 5 KB for VoIP),
 * "Generating a remote notification" (the `aps` dictionary: alert, badge, sound, content-available,
 * mutable-content), "Pushing background updates to your App" (push type background, priority 5),
 * PushKit "Responding to VoIP Notifications from PushKit" (topic `<bundle id>.voip`).
 */
import type { Notification } from '../types.ts';
import type { ApnsConfig } from './config.ts';

export const MAX_PAYLOAD_BYTES = 4096;
export const MAX_VOIP_PAYLOAD_BYTES = 5120;

/** What is sent: a visible alert, a silent background wake-up, or a PushKit VoIP push. */
export type ApnsMode = 'alert' | 'background' | 'voip';

export type ApnsRequestConfig = Pick<ApnsConfig, 'topic' | 'pushType' | 'priority' | 'mutableContent' | 'alertText' | 'includeBody' | 'sound' | 'ttlSeconds' | 'collapseId' | 'badge'>;

export interface ApnsRequest {
  mode: ApnsMode;
  /** apns-* headers (no authorization: that is the provider's). */
  headers: Record<string, string>;
  payload: string;
}

export type BuiltRequest =
  | { ok: true; request: ApnsRequest }
  | { ok: false; mode: ApnsMode; bytes: number; limit: number };

/** `priority = auto`: a message body in the summary means a person should see something. */
export function modeOf(config: Pick<ApnsConfig, 'pushType' | 'priority'>, notification: Notification): ApnsMode {
  if (config.pushType === 'voip') return 'voip';
  if (config.pushType === 'background') return 'background';
  if (config.priority === 'high') return 'alert';
  if (config.priority === 'silent') return 'background';
  return notification.urgency === 'high' ? 'alert' : 'background';
}

export function payloadLimitOf(mode: ApnsMode): number {
  return mode === 'voip' ? MAX_VOIP_PAYLOAD_BYTES : MAX_PAYLOAD_BYTES;
}

function payloadFor(config: ApnsRequestConfig, notification: Notification, mode: ApnsMode, body: string | undefined): Record<string, unknown> {
  const { summary } = notification;
  if (mode === 'background') return { aps: { 'content-available': 1 } };
  if (mode === 'voip') {
    // PushKit hands the whole dictionary to the app; it has no `aps` semantics of its own.
    const payload: Record<string, unknown> = { aps: {} };
    if (summary.messageCount !== undefined) payload['message-count'] = summary.messageCount;
    if (body !== undefined) {
      if (summary.lastMessageSender !== undefined) payload['last-message-sender'] = summary.lastMessageSender;
      payload['last-message-body'] = body;
    }
    return payload;
  }
  const alert: Record<string, string> = {};
  if (body !== undefined && summary.lastMessageSender !== undefined) alert.title = summary.lastMessageSender;
  alert.body = body ?? config.alertText;
  const aps: Record<string, unknown> = { alert };
  if (config.sound !== undefined) aps.sound = config.sound;
  if (config.badge && summary.messageCount !== undefined) aps.badge = summary.messageCount;
  // Lets a notification service extension fetch and show the real message.
  if (config.mutableContent) aps['mutable-content'] = 1;
  return { aps };
}

function shorten(text: string, codePoints: number): string {
  const chars = [...text];
  return chars.length <= codePoints ? text : `${chars.slice(0, Math.max(0, codePoints - 1)).join('')}…`;
}

/** The custom payload key holding a Push 2.0 ciphertext (base64): the app's notification service extension reads it. */
export const PUSH2_PAYLOAD_KEY = 'push2';

/**
 * Push 2.0: an alert the notification service extension replaces with the decrypted message
 * (mutable-content, the app's alert text as the fallback), or a PushKit push for a call. The
 * ciphertext is never shortened: a payload over the limit is refused.
 */
function buildPush2Request(config: ApnsRequestConfig, push2: NonNullable<Notification['push2']>, nowMs: number): BuiltRequest {
  const mode: ApnsMode = push2.voip ? 'voip' : 'alert';
  const limit = payloadLimitOf(mode);
  const aps: Record<string, unknown> = mode === 'voip' ? {} : { alert: { body: config.alertText }, 'mutable-content': 1 };
  if (mode === 'alert' && config.sound !== undefined) aps.sound = config.sound;
  const payload = JSON.stringify({ aps, [PUSH2_PAYLOAD_KEY]: push2.ciphertext.toString('base64') });
  const bytes = Buffer.byteLength(payload);
  if (bytes > limit) return { ok: false, mode, bytes, limit };
  const headers: Record<string, string> = {
    'apns-topic': mode === 'voip' ? `${config.topic}.voip` : config.topic,
    'apns-push-type': mode,
    'apns-priority': push2.priority === 'low' ? '5' : '10',
    'content-type': 'application/json',
  };
  if (config.ttlSeconds !== undefined) headers['apns-expiration'] = config.ttlSeconds === 0 ? '0' : String(Math.floor(nowMs / 1000) + config.ttlSeconds);
  // No collapse id: every Push 2.0 notification carries its own message, none replaces another.
  return { ok: true, request: { mode, headers, payload } };
}

export function buildApnsRequest(config: ApnsRequestConfig, notification: Notification, nowMs: number): BuiltRequest {
  if (notification.push2) return buildPush2Request(config, notification.push2, nowMs);
  const mode = modeOf(config, notification);
  const limit = payloadLimitOf(mode);
  // The real message text only when the operator asked for it (privacy: DESIGN §1).
  let body = config.includeBody ? notification.summary.lastMessageBody : undefined;
  let payload = JSON.stringify(payloadFor(config, notification, mode, body));
  // An over-long message body is shortened to fit; anything else over the limit is refused below.
  for (let attempt = 0; body !== undefined && Buffer.byteLength(payload) > limit && attempt < 8; attempt += 1) {
    const excess = Buffer.byteLength(payload) - limit;
    // Each code point is at least one byte; "…" costs three, so drop two more than the excess.
    const keep = [...body].length - excess - 2;
    body = keep > 0 ? shorten(body, keep) : undefined;
    payload = JSON.stringify(payloadFor(config, notification, mode, body));
  }
  const bytes = Buffer.byteLength(payload);
  if (bytes > limit) return { ok: false, mode, bytes, limit };

  const headers: Record<string, string> = {
    'apns-topic': mode === 'voip' ? `${config.topic}.voip` : config.topic,
    'apns-push-type': mode,
    // Apple: background pushes must use 5; alerts and VoIP are delivered at once with 10.
    'apns-priority': mode === 'background' ? '5' : '10',
    'content-type': 'application/json',
  };
  // Computed per push, from its first attempt when it is a retry: the same push keeps its expiration.
  if (config.ttlSeconds !== undefined) headers['apns-expiration'] = config.ttlSeconds === 0 ? '0' : String(Math.floor((notification.firstAttemptAt ?? nowMs) / 1000) + config.ttlSeconds);
  if (config.collapseId !== undefined) headers['apns-collapse-id'] = config.collapseId;
  return { ok: true, request: { mode, headers, payload } };
}
