/**
 * A loopback push service for WebPush and UnifiedPush tests (RFC 8030 §5), over HTTPS (test CA) or
 * plain HTTP. For WebPush subscriptions it plays the browser and the push service at once: it holds
 * the subscription's private key and auth secret, DECRYPTS every message (RFC 8291 / RFC 8188,
 * implemented here separately from src/, with plain HMAC steps, so a mistake shared by both sides
 * cannot pass unnoticed) and verifies the VAPID token (RFC 8292: ES256 signature with `k`, aud,
 * exp, sub). Answers are scripted per endpoint (201, 404, 410, 429 + Retry-After, 503 …); every
 * request is recorded.
 */
import { createDecipheriv, createECDH, createHmac, createPublicKey, randomBytes, randomUUID, verify } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { testPki } from './tls.ts';

export interface MockAnswer {
  status: number;
  /** Sent as the Retry-After header. */
  retryAfter?: number | string;
  body?: string;
  /** More response headers (e.g. `location` for a redirect). */
  headers?: Record<string, string>;
}

export interface VapidClaims {
  aud: string;
  exp: number;
  sub: string;
  /** The `k=` public key (base64url). */
  publicKey: string;
}

export interface RecordedPush {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** WebPush: the decrypted plaintext; UnifiedPush: the body as text. */
  plaintext?: string;
  /** The plaintext parsed as JSON, when it is JSON. */
  content?: Record<string, unknown>;
  decryptError?: string;
  vapid?: VapidClaims;
  vapidError?: string;
  /** The status the mock answered. */
  status: number;
}

export interface MockSubscription {
  endpoint: string;
  path: string;
  /** The PushSubscription JSON, as a browser hands it to a web app: the registration token. */
  token: string;
  keys: { p256dh: string; auth: string };
}

export interface MockPushEndpoint {
  /** The origin, e.g. https://127.0.0.1:41234 */
  origin: string;
  requests: RecordedPush[];
  /** A WebPush subscription with fresh keys, answered with `answers` in turn (the last repeats). */
  subscription(answers?: MockAnswer[]): MockSubscription;
  /** A plain endpoint URL (UnifiedPush). */
  endpoint(answers?: MockAnswer[]): string;
  /** Replaces the scripted answers of an endpoint (by URL or path). */
  answer(endpoint: string, answers: MockAnswer[]): void;
  requestsTo(endpoint: string): RecordedPush[];
  waitForRequests(endpoint: string, count: number, timeoutMs?: number): Promise<RecordedPush[]>;
  close(): Promise<void>;
}

interface Route {
  answers: MockAnswer[];
  webpush?: { privateKey: Buffer; publicKey: Buffer; auth: Buffer };
}

const hmac = (key: Buffer, data: Buffer) => createHmac('sha256', key).update(data).digest();

/** RFC 5869 HKDF with one expand block (every output here is ≤ 32 bytes). */
function hkdf(salt: Buffer, ikm: Buffer, info: Buffer, length: number): Buffer {
  const prk = hmac(salt, ikm);
  return hmac(prk, Buffer.concat([info, Buffer.from([1])])).subarray(0, length);
}

/** The user agent's side of RFC 8291 §3.4 and RFC 8188 §2 (single or several records). */
export function decryptPushMessage(body: Buffer, uaPrivateKey: Buffer, uaPublicKey: Buffer, authSecret: Buffer): Buffer {
  if (body.length < 21) throw new Error('body shorter than the aes128gcm header');
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idLength = body[20];
  const asPublic = body.subarray(21, 21 + idLength);
  if (idLength !== 65) throw new Error(`keyid must be the 65-byte sender key, got ${idLength} bytes`);
  if (recordSize < 18) throw new Error(`record size ${recordSize} too small`);
  const ua = createECDH('prime256v1');
  ua.setPrivateKey(uaPrivateKey);
  const ecdhSecret = ua.computeSecret(asPublic);
  const ikm = hkdf(authSecret, ecdhSecret, Buffer.concat([Buffer.from('WebPush: info\0'), uaPublicKey, asPublic]), 32);
  const cek = hkdf(salt, ikm, Buffer.from('Content-Encoding: aes128gcm\0'), 16);
  const baseNonce = hkdf(salt, ikm, Buffer.from('Content-Encoding: nonce\0'), 12);
  const records = body.subarray(21 + idLength);
  const plaintexts: Buffer[] = [];
  for (let offset = 0, sequence = 0; offset < records.length; offset += recordSize, sequence += 1) {
    const record = records.subarray(offset, offset + recordSize);
    const nonce = Buffer.from(baseNonce);
    nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ sequence) >>> 0, 8);
    const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
    decipher.setAuthTag(record.subarray(record.length - 16));
    const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
    let end = padded.length - 1;
    while (end >= 0 && padded[end] === 0) end -= 1;
    const last = offset + recordSize >= records.length;
    if (end < 0 || padded[end] !== (last ? 2 : 1)) throw new Error(`record ${sequence} has no valid padding delimiter`);
    plaintexts.push(padded.subarray(0, end));
  }
  return Buffer.concat(plaintexts);
}

/** RFC 8292 §3: `vapid t=<jwt>, k=<key>`; throws with the reason a push service would answer 401/403 with. */
export function verifyVapid(authorization: string | undefined, expectedAudience: string, now = Date.now()): VapidClaims {
  if (!authorization) throw new Error('no Authorization header');
  const match = /^vapid\s+(.+)$/i.exec(authorization.trim());
  if (!match) throw new Error(`Authorization is not the vapid scheme: ${authorization.slice(0, 20)}`);
  const parameters = new Map(match[1].split(',').map((part) => {
    const [name, ...value] = part.trim().split('=');
    return [name.trim().toLowerCase(), value.join('=').trim()] as const;
  }));
  const token = parameters.get('t');
  const key = parameters.get('k');
  if (!token || !key) throw new Error('vapid Authorization lacks t= or k=');
  const publicKey = Buffer.from(key, 'base64url');
  if (publicKey.length !== 65 || publicKey[0] !== 4) throw new Error('k is not an uncompressed P-256 point');
  const [headerPart, claimsPart, signaturePart] = token.split('.');
  const header = JSON.parse(Buffer.from(headerPart, 'base64url').toString('utf8')) as { alg?: string; typ?: string };
  if (header.alg !== 'ES256') throw new Error(`JWT alg must be ES256, got ${header.alg}`);
  const keyObject = createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: publicKey.subarray(1, 33).toString('base64url'), y: publicKey.subarray(33).toString('base64url') },
    format: 'jwk',
  });
  const signature = Buffer.from(signaturePart ?? '', 'base64url');
  if (!verify('sha256', Buffer.from(`${headerPart}.${claimsPart}`), { key: keyObject, dsaEncoding: 'ieee-p1363' }, signature)) {
    throw new Error('JWT signature does not verify with k');
  }
  const claims = JSON.parse(Buffer.from(claimsPart, 'base64url').toString('utf8')) as { aud?: string; exp?: number; sub?: string };
  if (claims.aud !== expectedAudience) throw new Error(`aud ${claims.aud} is not ${expectedAudience}`);
  const nowS = Math.floor(now / 1000);
  if (typeof claims.exp !== 'number' || claims.exp <= nowS) throw new Error('JWT expired or without exp');
  if (claims.exp > nowS + 24 * 3600) throw new Error('exp more than 24 hours ahead (RFC 8292 §2)');
  if (typeof claims.sub !== 'string' || !/^(mailto:|https:)/.test(claims.sub)) throw new Error(`sub must be a mailto: or https: URL, got ${claims.sub}`);
  return { aud: claims.aud, exp: claims.exp, sub: claims.sub, publicKey: key };
}

export async function startMockPushEndpoint(options: { tls?: boolean; vapidPublicKey?: string } = {}): Promise<MockPushEndpoint> {
  const tls = options.tls ?? true;
  const routes = new Map<string, Route>();
  const requests: RecordedPush[] = [];
  const waiters = new Set<() => void>();

  const handle = (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = new URL(request.url ?? '/', 'http://mock').pathname;
      const body = Buffer.concat(chunks);
      const route = routes.get(path);
      const recorded: RecordedPush = { path, headers: request.headers, body, status: 0 };
      let answer: MockAnswer;
      if (!route || request.method !== 'POST') {
        answer = { status: 404, body: 'no such subscription' };
      } else {
        answer = route.answers.length > 1 ? route.answers.shift()! : route.answers[0];
        if (route.webpush) {
          try {
            recorded.vapid = verifyVapid(request.headers.authorization, `${tls ? 'https' : 'http'}://${request.headers.host}`);
            if (options.vapidPublicKey && recorded.vapid.publicKey !== options.vapidPublicKey) {
              recorded.vapidError = 'k is not the key this subscription was made for';
              answer = { status: 403, body: recorded.vapidError };
            }
          } catch (error) {
            recorded.vapidError = (error as Error).message;
            answer = { status: 401, body: recorded.vapidError };
          }
          try {
            if (request.headers['content-encoding'] !== 'aes128gcm') throw new Error(`Content-Encoding is ${request.headers['content-encoding']}, not aes128gcm`);
            recorded.plaintext = decryptPushMessage(body, route.webpush.privateKey, route.webpush.publicKey, route.webpush.auth).toString('utf8');
          } catch (error) {
            recorded.decryptError = (error as Error).message;
            if (answer.status < 400) answer = { status: 400, body: `cannot decrypt: ${recorded.decryptError}` };
          }
        } else {
          recorded.plaintext = body.toString('utf8');
        }
        try {
          recorded.content = JSON.parse(recorded.plaintext ?? '') as Record<string, unknown>;
        } catch {
          // not JSON: tests look at plaintext
        }
      }
      recorded.status = answer.status;
      requests.push(recorded);
      const headers: Record<string, string> = {};
      if (answer.retryAfter !== undefined) headers['retry-after'] = String(answer.retryAfter);
      if (answer.status === 201) headers.location = `/message/${randomUUID()}`;
      Object.assign(headers, answer.headers);
      response.writeHead(answer.status, headers);
      response.end(answer.body ?? '');
      for (const wake of waiters) wake();
    });
  };

  const pki = tls ? testPki() : undefined;
  const server = pki ? createHttpsServer({ cert: pki.serverCert, key: pki.serverKey }, handle) : createHttpServer(handle);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const origin = `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const pathOf = (endpoint: string) => (endpoint.startsWith('/') ? endpoint : new URL(endpoint).pathname);
  const defaultAnswers = (): MockAnswer[] => [{ status: 201 }];

  return {
    origin,
    requests,
    subscription(answers = defaultAnswers()) {
      const ua = createECDH('prime256v1');
      ua.generateKeys();
      const auth = randomBytes(16);
      const path = `/push/${randomUUID()}`;
      routes.set(path, { answers: [...answers], webpush: { privateKey: ua.getPrivateKey(), publicKey: ua.getPublicKey(), auth } });
      const keys = { p256dh: ua.getPublicKey().toString('base64url'), auth: auth.toString('base64url') };
      const endpoint = `${origin}${path}`;
      return { endpoint, path, keys, token: JSON.stringify({ endpoint, expirationTime: null, keys }) };
    },
    endpoint(answers = defaultAnswers()) {
      const path = `/up/${randomUUID()}`;
      routes.set(path, { answers: [...answers] });
      return `${origin}${path}`;
    },
    answer(endpoint, answers) {
      const route = routes.get(pathOf(endpoint));
      if (!route) throw new Error(`unknown endpoint ${endpoint}`);
      route.answers = [...answers];
    },
    requestsTo: (endpoint) => requests.filter((recorded) => recorded.path === pathOf(endpoint)),
    waitForRequests(endpoint, count, timeoutMs = 15_000) {
      const path = pathOf(endpoint);
      return new Promise((resolve, reject) => {
        const check = () => {
          const seen = requests.filter((recorded) => recorded.path === path);
          if (seen.length < count) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(seen);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${path}: ${requests.filter((r) => r.path === path).length} of ${count} requests within ${timeoutMs} ms`));
        }, timeoutMs);
        if (!check()) waiters.add(check);
      });
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close').catch(() => {});
    },
  };
}
