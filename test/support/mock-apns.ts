/**
 * A mock APNS: real node:http2 over TLS on loopback (the per-run test CA from tls.ts), speaking the
 * provider API as Apple documents it ("Sending notification requests to APNs", "Handling
 * notification responses from APNs"):
 * - `POST /3/device/<hex token>` with apns-topic, apns-push-type, apns-priority, …; JSON payload
 *   at most 4096 bytes (5120 for VoIP) → 200 with an `apns-id`.
 * - Token auth: verifies the ES256 JWT (`kid`, `iss`, `iat`) against the test public key; too old →
 *   403 ExpiredProviderToken; a different token on the same connection sooner than 20 minutes
 *   after the last → 429 TooManyProviderTokenUpdates. Certificate auth: the TLS handshake requires
 *   a client certificate signed by the test CA.
 * - Per device token, scripted answers: 410 with a timestamp, 400 reasons, 429 with retry-after,
 *   500/503, slow answers, GOAWAY (the stream is not processed, so a client retries it).
 * Every request is recorded (headers, body, parsed payload and JWT) for assertions.
 *
 * Also runnable as its own process: see mock-apns-main.ts.
 */
import { createPublicKey, generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants, createSecureServer, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { testPki } from './tls.ts';
import { testTempDir } from './temp-dir.ts';

export type MockApnsBehaviour =
  | { kind: 'ok' }
  | { kind: 'unregistered'; timestamp?: number }
  | { kind: 'bad-request'; reason: string }
  | { kind: 'forbidden'; reason: string }
  | { kind: 'too-many-requests'; retryAfterS?: number }
  | { kind: 'server-error'; status: 500 | 503; retryAfterS?: number }
  /** Answers after `delayMs` with `then` (default ok). */
  | { kind: 'slow'; delayMs: number; then?: MockApnsBehaviour }
  /** Sends GOAWAY naming the stream before this one as the last processed, and leaves this one unanswered. */
  | { kind: 'goaway' }
  /** Answers 403 ExpiredProviderToken whatever the token's age (a skewed Apple clock). */
  | { kind: 'expired-provider-token' };

export interface MockApnsKey {
  keyId: string;
  teamId: string;
  /** The public key (or the .p8 private key, PEM: its public half is used). */
  key: KeyObject | string;
}

export interface MockApnsOptions {
  /** `token` (JWT, the default) or `certificate` (TLS client certificate required). */
  auth?: 'token' | 'certificate';
  keys?: MockApnsKey[];
  /** Accepted apns-topic values (`<topic>.voip` counts for VoIP); default any. */
  topics?: string[];
  /** What a topic outside `topics` gets: Apple answers TopicDisallowed, or DeviceTokenNotForTopic for a token of another app. */
  wrongTopicReason?: 'TopicDisallowed' | 'DeviceTokenNotForTopic';
  maxConcurrentStreams?: number;
  /** The mock's clock for JWT ages (share the provider's in tests). */
  now?: () => number;
  /** Keep every request (default true); a benchmark turns it off. */
  record?: boolean;
  /** Called for each request as it arrives (benchmark receipts). */
  onRequest?: (token: string) => void;
  /** Called when a request is answered 200 (benchmark delivery receipts). */
  onDelivered?: (token: string) => void;
  /** Fault mode: this fraction of requests (0…1) is answered 503, whatever the token's behaviour. */
  faultRate?: number;
  host?: string;
  port?: number;
}

export interface MockApnsJwt {
  raw: string;
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
}

export interface MockApnsRequest {
  token: string;
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The JSON payload, when it parsed. */
  payload: Record<string, any> | undefined;
  jwt: MockApnsJwt | undefined;
  /** Subject CN of the client certificate (certificate auth). */
  clientCertificate: string | undefined;
  status: number;
  reason: string | undefined;
  session: number;
}

export interface MockApns {
  origin: string;
  port: number;
  ca: string;
  caFile: string;
  requests: MockApnsRequest[];
  /** Scripts answers for one device token: one behaviour for every request, or a list used in turn (the last repeats). */
  setBehaviour(token: string, behaviour: MockApnsBehaviour | MockApnsBehaviour[]): void;
  /** For every token without its own behaviour. */
  setDefaultBehaviour(behaviour: MockApnsBehaviour): void;
  /** An outage: every request is answered 503 for `durationMs` from now. */
  startOutage(durationMs: number): void;
  /** Requests seen so far (also when not recorded). */
  requestCount(): number;
  /** Distinct JWTs seen, in order of first use. */
  jwts(): string[];
  sessionsOpened(): number;
  /** Resolves once `count` requests were recorded. */
  waitForRequests(count: number, timeoutMs?: number): Promise<MockApnsRequest[]>;
  close(): Promise<void>;
}

export interface TestApnsKey {
  /** The .p8 file (PKCS#8 PEM), as Apple's developer account hands it out. */
  keyFile: string;
  keyId: string;
  teamId: string;
  privateKey: KeyObject;
}

/** A fresh EC P-256 auth key written as `AuthKey_<keyId>.p8` in a new temp dir. */
export function createTestApnsKey(options: { keyId?: string; teamId?: string } = {}): TestApnsKey {
  const keyId = options.keyId ?? 'TESTKEY001';
  const teamId = options.teamId ?? 'TESTTEAM01';
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyFile = join(testTempDir('push-appserver-apns-key-'), `AuthKey_${keyId}.p8`);
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return { keyFile, keyId, teamId, privateKey };
}

/** A device token as APNS hands them out: 32 random-looking bytes in hex; `n` makes it distinct. */
export function testDeviceToken(n: number): string {
  return n.toString(16).padStart(8, '0').repeat(8);
}

const TOKEN_MAX_AGE_MS = 60 * 60_000;
const TOKEN_MIN_INTERVAL_MS = 20 * 60_000;
const PUSH_TYPES = new Set(['alert', 'background', 'voip', 'complication', 'fileprovider', 'mdm', 'location', 'liveactivity', 'pushtotalk']);

function publicKeyOf(key: KeyObject | string): KeyObject {
  return createPublicKey(key);
}

function decodeSegment(segment: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8')) as Record<string, unknown>;
}

export async function startMockApns(options: MockApnsOptions = {}): Promise<MockApns> {
  const pki = testPki();
  const auth = options.auth ?? 'token';
  const now = options.now ?? (() => Date.now());
  const record = options.record ?? true;
  const keys = new Map((options.keys ?? []).map((k) => [k.keyId, { teamId: k.teamId, publicKey: publicKeyOf(k.key) }]));
  const behaviours = new Map<string, MockApnsBehaviour[]>();
  let defaultBehaviour: MockApnsBehaviour = { kind: 'ok' };
  const requests: MockApnsRequest[] = [];
  const jwtOrder: string[] = [];
  /** Per connection: the token in use and since when (TooManyProviderTokenUpdates). */
  const connectionToken = new WeakMap<Http2Session, { jwt: string; at: number }>();
  const verified = new Map<string, { ok: true; jwt: MockApnsJwt } | { ok: false; reason: string }>();
  const events = new EventEmitter();
  const sessions = new Map<Http2Session, number>();
  let sessionsOpened = 0;
  let nextApnsId = 1;
  let outageUntil = 0;
  let requestsSeen = 0;
  const faultRate = options.faultRate ?? 0;

  const server = createSecureServer({
    cert: pki.serverCert,
    key: pki.serverKey,
    ...(auth === 'certificate' ? { ca: pki.ca, requestCert: true, rejectUnauthorized: true } : {}),
    settings: options.maxConcurrentStreams !== undefined ? { maxConcurrentStreams: options.maxConcurrentStreams } : {},
  });
  server.on('session', (session) => {
    sessionsOpened += 1;
    sessions.set(session, sessionsOpened);
    session.on('close', () => sessions.delete(session));
    session.on('error', () => {});
  });
  server.on('tlsClientError', () => {});

  const nextBehaviour = (token: string): MockApnsBehaviour => {
    const list = behaviours.get(token);
    if (!list || list.length === 0) return defaultBehaviour;
    return list.length > 1 ? list.shift()! : list[0];
  };

  const checkJwt = (authorization: string | undefined, session: Http2Session): { ok: true; jwt: MockApnsJwt } | { ok: false; reason: string } => {
    const match = /^bearer (.+)$/i.exec(authorization ?? '');
    if (!match) return { ok: false, reason: 'MissingProviderToken' };
    const raw = match[1];
    let result = verified.get(raw);
    if (!result) {
      result = verifyJwt(raw);
      if (verified.size > 10_000) verified.clear();
      verified.set(raw, result);
    }
    if (!result.ok) return result;
    const iat = Number(result.jwt.claims.iat) * 1000;
    if (now() - iat > TOKEN_MAX_AGE_MS) return { ok: false, reason: 'ExpiredProviderToken' };
    const inUse = connectionToken.get(session);
    if (inUse?.jwt !== raw) {
      if (inUse && now() - inUse.at < TOKEN_MIN_INTERVAL_MS) return { ok: false, reason: 'TooManyProviderTokenUpdates' };
      connectionToken.set(session, { jwt: raw, at: now() });
    }
    if (!jwtOrder.includes(raw)) jwtOrder.push(raw);
    return result;
  };

  const verifyJwt = (raw: string): { ok: true; jwt: MockApnsJwt } | { ok: false; reason: string } => {
    const parts = raw.split('.');
    if (parts.length !== 3) return { ok: false, reason: 'InvalidProviderToken' };
    let header: Record<string, unknown>;
    let claims: Record<string, unknown>;
    try {
      header = decodeSegment(parts[0]);
      claims = decodeSegment(parts[1]);
    } catch {
      return { ok: false, reason: 'InvalidProviderToken' };
    }
    const key = keys.get(String(header.kid));
    if (header.alg !== 'ES256' || !key || claims.iss !== key.teamId || typeof claims.iat !== 'number') return { ok: false, reason: 'InvalidProviderToken' };
    const signatureOk = verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key: key.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(parts[2], 'base64url'));
    return signatureOk ? { ok: true, jwt: { raw, header, claims } } : { ok: false, reason: 'InvalidProviderToken' };
  };

  const answer = (stream: ServerHttp2Stream, status: number, reason?: string, extra: Record<string, string | number> = {}, timestamp?: number): void => {
    if (stream.destroyed || stream.closed) return;
    const headers: Record<string, string | number> = { ':status': status, ...extra };
    if (status === 200) {
      headers['apns-id'] = `00000000-0000-4000-8000-${String(nextApnsId++).padStart(12, '0')}`;
      stream.respond(headers, { endStream: true });
      return;
    }
    headers['content-type'] = 'application/json';
    stream.respond(headers);
    stream.end(JSON.stringify(timestamp !== undefined ? { reason, timestamp } : { reason }));
  };

  const perform = (stream: ServerHttp2Stream, behaviour: MockApnsBehaviour, entry: MockApnsRequest | undefined, entryToken?: string): void => {
    const note = (status: number, reason?: string) => {
      if (entry) {
        entry.status = status;
        entry.reason = reason;
      }
    };
    if (behaviour.kind !== 'slow' && (performance.now() < outageUntil || (faultRate > 0 && Math.random() < faultRate))) {
      note(503, 'ServiceUnavailable');
      return answer(stream, 503, 'ServiceUnavailable');
    }
    switch (behaviour.kind) {
      case 'ok':
        note(200);
        if (options.onDelivered && entryToken !== undefined) options.onDelivered(entryToken);
        return answer(stream, 200);
      case 'unregistered': {
        note(410, 'Unregistered');
        return answer(stream, 410, 'Unregistered', {}, behaviour.timestamp ?? now());
      }
      case 'bad-request':
        note(400, behaviour.reason);
        return answer(stream, 400, behaviour.reason);
      case 'forbidden':
        note(403, behaviour.reason);
        return answer(stream, 403, behaviour.reason);
      case 'expired-provider-token':
        note(403, 'ExpiredProviderToken');
        return answer(stream, 403, 'ExpiredProviderToken');
      case 'too-many-requests':
        note(429, 'TooManyRequests');
        return answer(stream, 429, 'TooManyRequests', behaviour.retryAfterS !== undefined ? { 'retry-after': String(behaviour.retryAfterS) } : {});
      case 'server-error': {
        const reason = behaviour.status === 500 ? 'InternalServerError' : 'ServiceUnavailable';
        note(behaviour.status, reason);
        return answer(stream, behaviour.status, reason, behaviour.retryAfterS !== undefined ? { 'retry-after': String(behaviour.retryAfterS) } : {});
      }
      case 'slow': {
        note(0, 'slow');
        const timer = setTimeout(() => perform(stream, behaviour.then ?? { kind: 'ok' }, entry, entryToken), behaviour.delayMs);
        stream.on('close', () => clearTimeout(timer));
        return;
      }
      case 'goaway': {
        note(0, 'goaway');
        const session = stream.session!;
        // Everything before this stream was processed; this one and later ones were not (RFC 9113 §6.8).
        session.goaway(constants.NGHTTP2_NO_ERROR, Math.max(0, stream.id! - 2));
        stream.close(constants.NGHTTP2_REFUSED_STREAM);
        setTimeout(() => { if (!session.destroyed) session.destroy(); }, 100).unref();
        return;
      }
    }
  };

  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const method = String(headers[':method']);
      const path = String(headers[':path']);
      const body = Buffer.concat(chunks).toString('utf8');
      const token = /^\/3\/device\/([^/?]+)$/.exec(path)?.[1] ?? '';
      requestsSeen += 1;
      options.onRequest?.(token);
      let payload: Record<string, any> | undefined;
      try {
        payload = JSON.parse(body) as Record<string, any>;
      } catch {
        payload = undefined;
      }
      const socket = stream.session?.socket as TLSSocket | undefined;
      const peer = auth === 'certificate' ? socket?.getPeerCertificate?.() : undefined;
      const entry: MockApnsRequest | undefined = record ? {
        token, method, path, headers, body, payload, jwt: undefined,
        clientCertificate: peer && typeof peer.subject?.CN === 'string' ? peer.subject.CN : undefined,
        status: 0, reason: undefined, session: sessions.get(stream.session!) ?? 0,
      } : undefined;
      if (entry) requests.push(entry);

      const refuse = (status: number, reason: string) => {
        if (entry) {
          entry.status = status;
          entry.reason = reason;
        }
        answer(stream, status, reason);
      };
      try {
        if (method !== 'POST') return refuse(405, 'MethodNotAllowed');
        if (!token) return refuse(404, 'BadPath');
        if (!/^[0-9a-fA-F]{64,200}$/.test(token)) return refuse(400, 'BadDeviceToken');
        if (auth === 'token') {
          const checked = checkJwt(headers.authorization, stream.session!);
          if (!checked.ok) return refuse(checked.reason === 'TooManyProviderTokenUpdates' ? 429 : 403, checked.reason);
          if (entry) entry.jwt = checked.jwt;
        }
        const topic = headers['apns-topic'];
        const pushType = String(headers['apns-push-type'] ?? '');
        const priority = headers['apns-priority'];
        if (typeof topic !== 'string' || topic === '') return refuse(400, 'MissingTopic');
        if (!PUSH_TYPES.has(pushType)) return refuse(400, 'InvalidPushType');
        if (pushType === 'voip' && !topic.endsWith('.voip')) return refuse(400, 'DeviceTokenNotForTopic');
        if (options.topics && !options.topics.includes(topic.replace(/\.voip$/, ''))) return refuse(400, options.wrongTopicReason ?? 'TopicDisallowed');
        if (priority !== undefined && !['10', '5', '1'].includes(String(priority))) return refuse(400, 'BadPriority');
        if (pushType === 'background' && priority !== '5') return refuse(400, 'BadPriority');
        const expiration = headers['apns-expiration'];
        if (expiration !== undefined && !/^\d+$/.test(String(expiration))) return refuse(400, 'BadExpirationDate');
        const collapse = headers['apns-collapse-id'];
        if (collapse !== undefined && Buffer.byteLength(String(collapse)) > 64) return refuse(400, 'BadCollapseId');
        if (Buffer.byteLength(body) > (pushType === 'voip' ? 5120 : 4096)) return refuse(413, 'PayloadTooLarge');
        if (!payload) return refuse(400, body === '' ? 'PayloadEmpty' : 'BadPayload');
        if (typeof payload.aps !== 'object' || payload.aps === null) return refuse(400, 'BadPayload');
        perform(stream, nextBehaviour(token), entry, token);
      } finally {
        events.emit('request');
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host ?? '127.0.0.1';

  return {
    origin: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    ca: pki.ca,
    caFile: pki.caFile,
    requests,
    setBehaviour(token, behaviour) {
      behaviours.set(token, Array.isArray(behaviour) ? [...behaviour] : [behaviour]);
    },
    setDefaultBehaviour(behaviour) {
      defaultBehaviour = behaviour;
    },
    startOutage(durationMs) {
      outageUntil = performance.now() + durationMs;
    },
    requestCount: () => requestsSeen,
    jwts: () => [...jwtOrder],
    sessionsOpened: () => sessionsOpened,
    waitForRequests(count, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (requests.length < count) return false;
          events.off('request', check);
          clearTimeout(timer);
          resolve(requests.slice(0, count));
          return true;
        };
        const timer = setTimeout(() => {
          events.off('request', check);
          reject(new Error(`mock APNS saw ${requests.length} of ${count} requests within ${timeoutMs} ms`));
        }, timeoutMs);
        if (!check()) events.on('request', check);
      });
    },
    async close() {
      for (const session of sessions.keys()) session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
