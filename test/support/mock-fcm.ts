/**
 * A mock of FCM HTTP v1 (`POST /v1/projects/<id>/messages:send`, HTTP/2 over TLS on loopback) and of
 * Google's OAuth2 token endpoint (HTTPS, JWT bearer grant, RFC 7523). The token endpoint verifies the
 * RS256 assertion against the test service account's public key and hands out expiring access
 * tokens; FCM accepts only those. Per-token failures answer with Google's real error shape
 * (google.rpc.Status with a google.firebase.fcm.v1.FcmError detail). Every request is recorded.
 */
import { generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createSecureServer, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { testPki } from './tls.ts';
import { testTempDir } from './temp-dir.ts';

export const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export interface TestServiceAccount {
  /** The JSON key file, as the Firebase console hands it out. */
  file: string;
  projectId: string;
  clientEmail: string;
  privateKeyId: string;
  privateKeyPem: string;
  publicKey: KeyObject;
  tokenUri: string;
}

let keyPair: { privateKeyPem: string; publicKey: KeyObject } | undefined;

/** One RSA key per test process: generating 2048-bit keys is the slow part. */
function testKeyPair(): { privateKeyPem: string; publicKey: KeyObject } {
  if (!keyPair) {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    keyPair = { privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKey };
  }
  return keyPair;
}

/** Writes a service-account JSON file (fresh temp dir) whose token_uri points at `tokenUri`. */
export function createTestServiceAccount(tokenUri: string, options: { projectId?: string; clientEmail?: string } = {}): TestServiceAccount {
  const { privateKeyPem, publicKey } = testKeyPair();
  const projectId = options.projectId ?? 'push-test-project';
  const clientEmail = options.clientEmail ?? `firebase-adminsdk-test@${projectId}.iam.gserviceaccount.com`;
  const privateKeyId = 'test-key-1';
  const file = join(testTempDir('push-appserver-fcm-'), 'service-account.json');
  writeFileSync(file, JSON.stringify({
    type: 'service_account',
    project_id: projectId,
    private_key_id: privateKeyId,
    private_key: privateKeyPem,
    client_email: clientEmail,
    client_id: '100000000000000000000',
    auth_uri: 'https://accounts.google.com/o/oauth2/auth',
    token_uri: tokenUri,
  }, null, 2));
  return { file, projectId, clientEmail, privateKeyId, privateKeyPem, publicKey, tokenUri };
}

/** What the mock can answer for a registration token instead of success. */
export type FcmFailure =
  | 'UNREGISTERED'
  | 'SENDER_ID_MISMATCH'
  /** INVALID_ARGUMENT about the token itself. */
  | 'INVALID_TOKEN'
  /** INVALID_ARGUMENT about a message field (with a google.rpc.BadRequest field violation). */
  | 'INVALID_PAYLOAD'
  | 'QUOTA_EXCEEDED'
  | 'UNAVAILABLE'
  | 'INTERNAL'
  | 'THIRD_PARTY_AUTH_ERROR'
  /** A plain 401 (our OAuth2 access token refused), without an FcmError detail. */
  | 'UNAUTHENTICATED'
  /** A 502 from a proxy in front of FCM: HTML, no JSON. */
  | 'BAD_GATEWAY';

export interface FcmFailureOptions {
  /** Sent as the Retry-After header (seconds). */
  retryAfterS?: number;
  /** Fail this many requests for the token, then succeed again (default: every request). */
  times?: number;
}

export interface RecordedFcmRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined when it was not JSON). */
  body: any;
  /** `message.token` of the body. */
  token: string | undefined;
  status: number;
}

export interface RecordedTokenRequest {
  ok: boolean;
  /** Why the mock refused it, when it did. */
  reason?: string;
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  accessToken?: string;
}

export interface MockFcm {
  /** FCM origin (`https://127.0.0.1:PORT`), for the app's `endpoint`. */
  endpoint: string;
  tokenUri: string;
  caFile: string;
  account: TestServiceAccount;
  requests: RecordedFcmRequest[];
  tokenRequests: RecordedTokenRequest[];
  /** Answers requests for `token` with `failure` (every time, or `times` times). */
  fail(token: string, failure: FcmFailure, options?: FcmFailureOptions): void;
  /** Seconds the next access tokens live (default 3600). */
  setTokenLifetime(seconds: number): void;
  /** Makes the token endpoint answer this status and OAuth2 error (undefined → verify and issue again). */
  setTokenEndpointFailure(failure: { status: number; error: string; description?: string; retryAfterS?: number } | undefined): void;
  /** Delays token endpoint answers, to widen the window in which concurrent callers overlap. */
  setTokenEndpointDelay(ms: number): void;
  /** Forgets every issued access token, as if Google revoked them. */
  revokeAccessTokens(): void;
  /** Resolves once at least `count` FCM requests were recorded. */
  waitForRequests(count: number, timeoutMs?: number): Promise<RecordedFcmRequest[]>;
  close(): Promise<void>;
}

interface FailureRule {
  failure: FcmFailure;
  retryAfterS: number | undefined;
  remaining: number;
}

function googleError(code: number, status: string, message: string, details: unknown[]): string {
  return JSON.stringify({ error: { code, message, status, details } });
}

function fcmErrorDetail(errorCode: string): { '@type': string; errorCode: string } {
  return { '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode };
}

/** Google's answers, as documented for FCM HTTP v1 (status, body). */
function failureAnswer(failure: FcmFailure): { status: number; contentType: string; body: string } {
  const json = (status: number, body: string) => ({ status, contentType: 'application/json; charset=UTF-8', body });
  switch (failure) {
    case 'UNREGISTERED':
      return json(404, googleError(404, 'NOT_FOUND', 'Requested entity was not found.', [fcmErrorDetail('UNREGISTERED')]));
    case 'SENDER_ID_MISMATCH':
      return json(403, googleError(403, 'PERMISSION_DENIED', 'SenderId mismatch', [fcmErrorDetail('SENDER_ID_MISMATCH')]));
    case 'INVALID_TOKEN':
      return json(400, googleError(400, 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token', [fcmErrorDetail('INVALID_ARGUMENT')]));
    case 'INVALID_PAYLOAD':
      return json(400, googleError(400, 'INVALID_ARGUMENT', "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), Field 'ttl', Illegal duration format", [
        fcmErrorDetail('INVALID_ARGUMENT'),
        { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: 'message.android.ttl', description: "Invalid value at 'message.android.ttl', Illegal duration format" }] },
      ]));
    case 'QUOTA_EXCEEDED':
      return json(429, googleError(429, 'RESOURCE_EXHAUSTED', 'Quota exceeded for quota metric \'Send requests\'.', [fcmErrorDetail('QUOTA_EXCEEDED')]));
    case 'UNAVAILABLE':
      return json(503, googleError(503, 'UNAVAILABLE', 'The service is currently unavailable.', [fcmErrorDetail('UNAVAILABLE')]));
    case 'INTERNAL':
      return json(500, googleError(500, 'INTERNAL', 'Internal error encountered.', [fcmErrorDetail('INTERNAL')]));
    case 'THIRD_PARTY_AUTH_ERROR':
      return json(401, googleError(401, 'UNAUTHENTICATED', 'Auth error from APNS or Web Push Service', [fcmErrorDetail('THIRD_PARTY_AUTH_ERROR')]));
    case 'UNAUTHENTICATED':
      return json(401, unauthenticated());
    case 'BAD_GATEWAY':
      return { status: 502, contentType: 'text/html; charset=UTF-8', body: '<html><body><h1>502 Bad Gateway</h1></body></html>' };
  }
}

function unauthenticated(): string {
  return googleError(401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.', []);
}

function decodeJwtPart(part: string): Record<string, unknown> {
  const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  if (typeof value !== 'object' || value === null) throw new Error('not a JSON object');
  return value as Record<string, unknown>;
}

function readBody(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', reject);
  });
}

export async function startMockFcm(options: { projectId?: string } = {}): Promise<MockFcm> {
  const pki = testPki();
  const events = new EventEmitter();
  const requests: RecordedFcmRequest[] = [];
  const tokenRequests: RecordedTokenRequest[] = [];
  const failures = new Map<string, FailureRule>();
  /** access token → expiry (ms). */
  const issued = new Map<string, number>();
  let tokenLifetimeS = 3600;
  let tokenEndpointFailure: { status: number; error: string; description?: string; retryAfterS?: number } | undefined;
  let tokenEndpointDelayMs = 0;
  let issuedCount = 0;
  let messageCount = 0;

  // --- OAuth2 token endpoint (HTTPS, HTTP/1.1 like oauth2.googleapis.com) ---
  const tokenSockets = new Set<Socket>();
  const tokenServer: HttpsServer = createHttpsServer({ key: pki.serverKey, cert: pki.serverCert }, async (req, res) => {
    const text = await readBody(req);
    if (tokenEndpointDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, tokenEndpointDelayMs));
    const answer = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      res.end(JSON.stringify(body));
    };
    const refuse = (reason: string, record: RecordedTokenRequest = { ok: false }) => {
      tokenRequests.push({ ...record, ok: false, reason });
      answer(400, { error: 'invalid_grant', error_description: reason });
    };
    if (req.method !== 'POST' || !String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) {
      return refuse('expected a form POST');
    }
    if (tokenEndpointFailure) {
      const failure = tokenEndpointFailure;
      tokenRequests.push({ ok: false, reason: failure.error });
      return answer(failure.status, { error: failure.error, error_description: failure.description ?? failure.error },
        failure.retryAfterS !== undefined ? { 'retry-after': String(failure.retryAfterS) } : {});
    }
    const form = new URLSearchParams(text);
    if (form.get('grant_type') !== JWT_BEARER) return refuse(`grant_type must be ${JWT_BEARER}`);
    const parts = (form.get('assertion') ?? '').split('.');
    if (parts.length !== 3) return refuse('assertion is not a compact JWS');
    let header: Record<string, unknown>;
    let claims: Record<string, unknown>;
    try {
      header = decodeJwtPart(parts[0]);
      claims = decodeJwtPart(parts[1]);
    } catch {
      return refuse('assertion is not readable');
    }
    const record: RecordedTokenRequest = { ok: false, header, claims };
    if (header.alg !== 'RS256') return refuse(`alg must be RS256, got ${String(header.alg)}`, record);
    if (!verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), account.publicKey, Buffer.from(parts[2], 'base64url'))) {
      return refuse('Invalid JWT Signature.', record);
    }
    const now = Math.floor(Date.now() / 1000);
    if (claims.iss !== account.clientEmail) return refuse(`iss must be ${account.clientEmail}`, record);
    if (claims.aud !== tokenUri) return refuse(`aud must be ${tokenUri}`, record);
    if (typeof claims.scope !== 'string' || !claims.scope.split(' ').includes(FCM_SCOPE)) return refuse(`scope must include ${FCM_SCOPE}`, record);
    if (typeof claims.iat !== 'number' || typeof claims.exp !== 'number') return refuse('iat and exp are required', record);
    if (claims.iat > now + 60 || claims.exp <= now || claims.exp - claims.iat > 3600) {
      return refuse('Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.', record);
    }
    issuedCount += 1;
    const accessToken = `ya29.mock-access-token-${issuedCount}`;
    issued.set(accessToken, Date.now() + tokenLifetimeS * 1000);
    tokenRequests.push({ ...record, ok: true, accessToken });
    answer(200, { access_token: accessToken, expires_in: tokenLifetimeS, token_type: 'Bearer' });
  });
  tokenServer.on('connection', (socket: Socket) => {
    tokenSockets.add(socket);
    socket.on('close', () => tokenSockets.delete(socket));
  });
  await new Promise<void>((resolve) => tokenServer.listen(0, '127.0.0.1', resolve));
  const tokenUri = `https://127.0.0.1:${(tokenServer.address() as AddressInfo).port}/token`;
  const account = createTestServiceAccount(tokenUri, { projectId: options.projectId });
  const sendPath = `/v1/projects/${account.projectId}/messages:send`;

  // --- FCM HTTP v1 (HTTP/2 over TLS) ---
  const sessions = new Set<Http2Session>();
  const fcmServer = createSecureServer({ key: pki.serverKey, cert: pki.serverCert });
  fcmServer.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
  });
  fcmServer.on('stream', async (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const text = await readBody(stream);
    let body: any;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const token: string | undefined = typeof body?.message?.token === 'string' ? body.message.token : undefined;
    const record: RecordedFcmRequest = { method: String(headers[':method']), path: String(headers[':path']), headers, body, token, status: 0 };
    const respond = (status: number, contentType: string, payload: string, extra: Record<string, string> = {}) => {
      record.status = status;
      requests.push(record);
      if (!stream.destroyed) {
        stream.respond({ ':status': status, 'content-type': contentType, ...extra });
        stream.end(payload);
      }
      events.emit('request');
    };
    const jsonType = 'application/json; charset=UTF-8';
    if (record.method !== 'POST' || record.path !== sendPath) {
      return respond(404, jsonType, googleError(404, 'NOT_FOUND', `no such method ${record.method} ${record.path}`, []));
    }
    const authorization = String(headers.authorization ?? '');
    const accessToken = authorization.startsWith('Bearer ') ? authorization.slice('Bearer '.length) : '';
    const expiry = issued.get(accessToken);
    if (expiry === undefined || expiry <= Date.now()) return respond(401, jsonType, unauthenticated(), { 'www-authenticate': 'Bearer realm="https://accounts.google.com/"' });
    if (body === undefined || token === undefined) {
      return respond(400, jsonType, googleError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.', [fcmErrorDetail('INVALID_ARGUMENT')]));
    }
    const rule = failures.get(token);
    if (rule && rule.remaining > 0) {
      rule.remaining -= 1;
      const answer = failureAnswer(rule.failure);
      return respond(answer.status, answer.contentType, answer.body, rule.retryAfterS !== undefined ? { 'retry-after': String(rule.retryAfterS) } : {});
    }
    messageCount += 1;
    respond(200, jsonType, JSON.stringify({ name: `projects/${account.projectId}/messages/0:${messageCount}%mock` }));
  });
  await new Promise<void>((resolve) => fcmServer.listen(0, '127.0.0.1', resolve));
  const endpoint = `https://127.0.0.1:${(fcmServer.address() as AddressInfo).port}`;

  return {
    endpoint,
    tokenUri,
    caFile: pki.caFile,
    account,
    requests,
    tokenRequests,
    fail(token, failure, failureOptions = {}) {
      failures.set(token, { failure, retryAfterS: failureOptions.retryAfterS, remaining: failureOptions.times ?? Number.POSITIVE_INFINITY });
    },
    setTokenLifetime(seconds) {
      tokenLifetimeS = seconds;
    },
    setTokenEndpointFailure(failure) {
      tokenEndpointFailure = failure;
    },
    setTokenEndpointDelay(ms) {
      tokenEndpointDelayMs = ms;
    },
    revokeAccessTokens() {
      issued.clear();
    },
    waitForRequests(count, timeoutMs = 10_000) {
      if (requests.length >= count) return Promise.resolve(requests);
      return new Promise((resolve, reject) => {
        const onRequest = () => {
          if (requests.length < count) return;
          clearTimeout(timer);
          events.off('request', onRequest);
          resolve(requests);
        };
        const timer = setTimeout(() => {
          events.off('request', onRequest);
          reject(new Error(`mock FCM saw ${requests.length} requests, expected ${count} within ${timeoutMs} ms`));
        }, timeoutMs);
        events.on('request', onRequest);
      });
    },
    async close() {
      for (const session of sessions) session.destroy();
      for (const socket of tokenSockets) socket.destroy();
      await Promise.all([
        new Promise<void>((resolve) => fcmServer.close(() => resolve())),
        new Promise<void>((resolve) => tokenServer.close(() => resolve())),
      ]);
    },
  };
}
