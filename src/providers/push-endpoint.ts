/**
 * POSTing one push message to a push resource URL (RFC 8030 §5) over node:https / node:http, and
 * the status → Outcome table shared by WebPush and UnifiedPush:
 *   2xx (201 Created per RFC 8030 §5; 200/202 from distributors) → delivered
 *   404, 410 (subscription expired or gone, RFC 8030 §7.3) → token dead
 *   429, 5xx → retry after the `Retry-After` delay (RFC 9110 §10.2.3), or the dispatcher's backoff
 *   401, 403 with VAPID (RFC 8292 §4.2) → our credentials rejected; without VAPID → rejected
 *   413 (RFC 8030 §7.2) and every other answer → rejected (never followed: redirects included)
 * Network trouble and timeouts are retried. Endpoint URLs are user input: literal IPs are checked
 * before connecting and names through the guarded lookup of address-guard.ts, so DNS cannot
 * rebind a name to an internal address (unless the app allows private addresses).
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { ForbiddenAddressError, forbiddenLiteralHost, forbiddenPortReason, guardedLookup, type ResolveAll } from './address-guard.ts';
import type { TableReader } from '../config/reader.ts';
import type { Outcome, Push2Payload, Summary, Urgency } from './types.ts';
import { retryAfterMs } from './retry-after.ts';

export interface EndpointClientOptions {
  /** Extra trust (tests); undefined → the system's roots. */
  ca?: string;
  allowPrivate: boolean;
  /** Ports besides 443 an endpoint may use (apps.NAME.allowed_ports); ignored with allowPrivate. */
  allowedPorts?: readonly number[];
  /** What a 401/403 means: with VAPID our key was refused; without, the endpoint refuses us. */
  authFailure: 'credentials-rejected' | 'rejected';
  timeoutMs?: number;
  /** DNS for the guarded lookup; tests inject one to simulate rebinding. */
  resolveAll?: ResolveAll;
  now?: () => number;
}

export interface EndpointMessage {
  headers: Record<string, string>;
  body: Buffer;
}

const DEFAULT_TIMEOUT_MS = 10_000;
/** Four weeks, as for FCM: a wake-up that arrives late still tells the client to fetch its messages. */
export const DEFAULT_TTL_S = 28 * 24 * 3600;
/** As LIMITS.token in core/registrations.ts. */
export const MAX_TOKEN_LENGTH = 4096;

/** Reads an app's `ca_file` (extra trust for test endpoints), failing with the key's name. */
/** `allowed_ports`: more ports than 443 an endpoint may use; undefined when absent. */
export function readAllowedPorts(settings: TableReader): { allowedPorts?: number[] } {
  const ports = settings.optionalIntegerList('allowed_ports', { min: 1, max: 65535 });
  return ports === undefined ? {} : { allowedPorts: ports };
}

export function readCaFile(settings: TableReader): string | undefined {
  const file = settings.optionalString('ca_file');
  if (file === undefined) return undefined;
  return settings.fileContents('ca_file', file).toString('utf8');
}
const MAX_REASON_BYTES = 512;
const USER_AGENT = 'push-appserver';


export interface EndpointAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** The start of the body, for log reasons. */
  text: string;
}

/** The one status table (see the file comment). */
export function outcomeOfAnswer(answer: EndpointAnswer, authFailure: EndpointClientOptions['authFailure'], now: number): Outcome {
  const { status } = answer;
  const detail = answer.text.trim().replace(/\s+/g, ' ').slice(0, 200);
  const reason = `endpoint answered ${status}${detail ? `: ${detail}` : ''}`;
  if (status >= 200 && status < 300) {
    const location = answer.headers.location;
    return location ? { kind: 'delivered', id: String(location) } : { kind: 'delivered' };
  }
  if (status === 404 || status === 410) return { kind: 'token-dead', reason };
  if (status === 429 || status >= 500) return { kind: 'retry-after', ms: retryAfterMs(answer.headers['retry-after'], now) ?? 0, reason };
  if (status === 401 || status === 403) return authFailure === 'credentials-rejected' ? { kind: 'credentials-rejected', reason } : { kind: 'rejected', reason };
  if (status === 413) return { kind: 'rejected', reason: `push message too large (${reason})` };
  if (status >= 300 && status < 400) return { kind: 'rejected', reason: `${reason} (redirects are not followed)` };
  return { kind: 'rejected', reason };
}

export class PushEndpointClient {
  private readonly options: EndpointClientOptions;
  private readonly httpsAgent: HttpsAgent;
  private readonly httpAgent: HttpAgent;
  private readonly lookup: ReturnType<typeof guardedLookup> | undefined;
  private readonly now: () => number;

  constructor(options: EndpointClientOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
    // Without allow_private every connection goes through the guard; with it, the system resolver.
    this.lookup = options.allowPrivate ? undefined : guardedLookup(options.resolveAll);
    const agentOptions = { keepAlive: true, maxSockets: 64, timeout: 60_000, ...(this.lookup ? { lookup: this.lookup } : {}) };
    this.httpsAgent = new HttpsAgent({ ...agentOptions, ...(options.ca ? { ca: options.ca } : {}) });
    this.httpAgent = new HttpAgent(agentOptions);
  }

  /** Never throws: every failure is an Outcome. */
  post(url: URL, message: EndpointMessage): Promise<Outcome> {
    if (!this.options.allowPrivate) {
      const literal = forbiddenLiteralHost(url) ?? forbiddenPortReason(url, this.options.allowedPorts);
      if (literal) return Promise.resolve({ kind: 'rejected', reason: `endpoint address refused: ${literal}` });
    }
    const timeoutMs = this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const https = url.protocol === 'https:';
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      const finish = (outcome: Outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(outcome);
      };
      const request = (https ? httpsRequest : httpRequest)(url, {
        method: 'POST',
        agent: https ? this.httpsAgent : this.httpAgent,
        ...(this.lookup ? { lookup: this.lookup } : {}),
        headers: { 'user-agent': USER_AGENT, ...message.headers, 'content-length': String(message.body.length) },
      }, (response) => {
        const chunks: Buffer[] = [];
        let kept = 0;
        response.on('data', (chunk: Buffer) => {
          if (kept < MAX_REASON_BYTES) {
            chunks.push(chunk);
            kept += chunk.length;
          }
        });
        response.on('end', () => {
          const text = Buffer.concat(chunks).subarray(0, MAX_REASON_BYTES).toString('utf8');
          const outcome = outcomeOfAnswer({ status: response.statusCode ?? 0, headers: response.headers, text }, this.options.authFailure, this.now());
          outcome.status = response.statusCode;
          finish(outcome);
        });
        response.on('error', (error) => finish({ kind: 'retry-after', ms: 0, reason: `endpoint answer broke off: ${error.message}` }));
      });
      const timer = setTimeout(() => {
        finish({ kind: 'retry-after', ms: 0, reason: `no answer from the endpoint within ${timeoutMs} ms` });
        request.destroy();
      }, timeoutMs);
      request.on('error', (error: NodeJS.ErrnoException) => {
        if (error instanceof ForbiddenAddressError || error.code === 'ERR_PUSH_FORBIDDEN_ADDRESS') {
          finish({ kind: 'rejected', reason: `endpoint address refused: ${error.message}` });
        } else {
          finish({ kind: 'retry-after', ms: 0, reason: `cannot reach the endpoint: ${error.code ?? error.message}${error.code ? ` (${error.message})` : ''}` });
        }
      });
      request.end(message.body);
    });
  }

  close(): void {
    this.httpsAgent.destroy();
    this.httpAgent.destroy();
  }
}

/** Headers both RFC 8030 senders add: how long the push service may hold the message, and its urgency (§5.2, §5.3). */
export function deliveryHeaders(ttlSeconds: number, urgency: Urgency): Record<string, string> {
  return { ttl: String(ttlSeconds), urgency: urgency === 'high' ? 'high' : 'normal' };
}

/** RFC 8030 §7.2: a push service must accept 4096 bytes of body; RFC 8291 bodies are sized for it. */
export const MAX_PUSH2_BODY_BYTES = 4096;

/**
 * A Push 2.0 notification as an RFC 8030 push message: the ciphertext already IS an RFC 8291
 * aes128gcm body (encrypted by the user's server for this subscription), so it is POSTed unchanged.
 * `Authorization`: the publisher's own JWT when its `aud` is this endpoint's origin (it is then a
 * VAPID token for this push service), else `ownAuthorization` (our VAPID; none for UnifiedPush).
 * A string says why it cannot be sent.
 */
export function push2EndpointMessage(push2: Push2Payload, ttlSeconds: number, endpoint: URL, ownAuthorization: (() => string) | undefined): EndpointMessage | string {
  if (push2.ciphertext.length > MAX_PUSH2_BODY_BYTES) {
    return `Push 2.0 payload of ${push2.ciphertext.length} bytes is over the push message limit of ${MAX_PUSH2_BODY_BYTES}`;
  }
  const headers: Record<string, string> = {
    ttl: String(ttlSeconds),
    urgency: push2.priority,
    'content-type': 'application/octet-stream',
    'content-encoding': 'aes128gcm',
  };
  if (push2.audience === endpoint.origin) headers.authorization = `vapid t=${push2.jwt}, k=${push2.jwtKey}`;
  else if (ownAuthorization) headers.authorization = ownAuthorization();
  return { headers, body: push2.ciphertext };
}

/**
 * The JSON a client receives, named like the XEP-0357 summary fields (and the fcm provider's data):
 * `node` (which registration woke it), `message-count`, `pending-subscription-count`; and
 * `last-message-sender` / `last-message-body` only when the operator opted in (`include_body`), since the push service could read it
 * (UnifiedPush) or the device's notification shade shows it. Fields the summary lacks are left out
 * (a retried push carries no summary). Long bodies are cut so the whole fits `maxBytes`.
 */
export function pushContent(node: string, summary: Summary, includeBody: boolean, maxBytes: number): Buffer {
  const content: Record<string, unknown> = { node };
  if (summary.messageCount !== undefined) content['message-count'] = summary.messageCount;
  if (summary.pendingSubscriptionCount !== undefined) content['pending-subscription-count'] = summary.pendingSubscriptionCount;
  let sender = includeBody ? summary.lastMessageSender : undefined;
  let body = includeBody ? summary.lastMessageBody : undefined;
  for (;;) {
    const encoded = Buffer.from(JSON.stringify({ ...content, ...(sender !== undefined ? { 'last-message-sender': sender } : {}), ...(body !== undefined ? { 'last-message-body': body } : {}) }));
    if (encoded.length <= maxBytes) return encoded;
    // Cut by whole characters, body first, until the JSON fits (the ellipsis included).
    const excess = encoded.length - maxBytes;
    if (body !== undefined && body.length > 0) body = shorten(body, excess);
    else if (sender !== undefined && sender.length > 0) sender = shorten(sender, excess);
    else return encoded;
  }
}

const ELLIPSIS = '…';

/** Drops characters from the end until at least `bytes` JSON-encoded bytes (plus the ellipsis) are gone. */
function shorten(text: string, bytes: number): string {
  const characters = Array.from(text.endsWith(ELLIPSIS) ? text.slice(0, -ELLIPSIS.length) : text);
  let removed = 0;
  const needed = bytes + Buffer.byteLength(ELLIPSIS);
  while (characters.length > 0 && removed < needed) {
    removed += Buffer.byteLength(JSON.stringify(characters.pop())) - 2;
  }
  return characters.length === 0 ? '' : `${characters.join('')}${ELLIPSIS}`;
}
