/**
 * Google service-account OAuth2 for FCM HTTP v1: the JWT bearer grant (RFC 7523 §2.1, Google's
 * "Using OAuth 2.0 for Server to Server Applications"). We sign an RS256 assertion (RFC 7515,
 * claims iss/scope/aud/iat/exp) with the account's private key, exchange it at the account's
 * `token_uri` over node:https, and cache the access token until shortly before it expires.
 * Concurrent callers share one refresh (single flight), so a burst of pushes costs one exchange.
 * Failures are values: a refused grant is our credentials' fault, anything else is transient.
 */
import type { KeyObject } from 'node:crypto';
import { request } from 'node:https';
import { loadPrivateKey, signJwt } from './jwt.ts';
import { retryAfterMs } from './retry-after.ts';

export const FIREBASE_MESSAGING_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';

/** Google's assertion may live at most one hour. */
const ASSERTION_LIFETIME_S = 3600;
/** Refresh this long before the access token expires, so no push races its expiry. */
const REFRESH_MARGIN_MS = 5 * 60_000;
const MAX_RESPONSE_BYTES = 64 * 1024;

export interface ServiceAccount {
  projectId: string;
  clientEmail: string;
  privateKey: KeyObject;
  /** The key's id, sent as the assertion's `kid` so Google picks the right public key. */
  privateKeyId: string | undefined;
  tokenUri: string;
}

/**
 * Reads the service-account JSON that the Firebase console hands out. Throws an Error whose
 * message names the offending field; the FCM config reader prefixes the file and key.
 */
export function parseServiceAccount(text: string): ServiceAccount {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new Error(`not valid JSON: ${(error as Error).message}`);
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new Error('not a service account key (expected a JSON object)');
  }
  const fields = document as Record<string, unknown>;
  if (fields.type !== undefined && fields.type !== 'service_account') {
    throw new Error(`"type" is "${String(fields.type)}", expected "service_account" (download a service account key from the Firebase console)`);
  }
  const required = (name: string): string => {
    const value = fields[name];
    if (typeof value !== 'string' || value.trim() === '') throw new Error(`"${name}" is missing or not a string`);
    return value;
  };
  const projectId = required('project_id');
  const clientEmail = required('client_email');
  const tokenUri = required('token_uri');
  let tokenUrl: URL;
  try {
    tokenUrl = new URL(tokenUri);
  } catch {
    throw new Error(`"token_uri" is not a URL: "${tokenUri}"`);
  }
  if (tokenUrl.protocol !== 'https:') throw new Error(`"token_uri" must be an https URL, got "${tokenUri}"`);
  const privateKeyPem = required('private_key');
  let privateKey: KeyObject;
  try {
    privateKey = loadPrivateKey(privateKeyPem);
  } catch (error) {
    throw new Error(`"private_key" is not a readable PEM private key: ${(error as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== 'rsa') {
    throw new Error(`"private_key" must be an RSA key (RS256), got ${privateKey.asymmetricKeyType ?? 'an unknown key type'}`);
  }
  const privateKeyId = typeof fields.private_key_id === 'string' && fields.private_key_id !== '' ? fields.private_key_id : undefined;
  return { projectId, clientEmail, privateKey, privateKeyId, tokenUri };
}

/** The signed assertion for the JWT bearer grant; `nowMs` is injectable for tests. */
export function signAssertion(account: ServiceAccount, scope: string, nowMs: number): string {
  const iat = Math.floor(nowMs / 1000);
  const header = account.privateKeyId ? { kid: account.privateKeyId } : {};
  return signJwt('RS256', header, { iss: account.clientEmail, scope, aud: account.tokenUri, iat, exp: iat + ASSERTION_LIFETIME_S }, account.privateKey);
}

export type AccessTokenResult =
  /** `fresh`: minted for this call, so a 401 with it is not a stale-cache problem. */
  | { ok: true; token: string; fresh: boolean }
  /** `credentials-rejected`: the token endpoint refused our account; `retry`: try again later. */
  | { ok: false; kind: 'credentials-rejected' | 'retry'; reason: string; retryAfterMs: number };

export interface GoogleAccessTokensOptions {
  account: ServiceAccount;
  scope: string;
  /** Trusted CAs for the token endpoint (tests); the system store otherwise. */
  ca?: string | Buffer;
  timeoutMs?: number;
  now?: () => number;
}

interface CachedToken {
  token: string;
  refreshAt: number;
}

/** Access tokens for one service account and scope: cached, refreshed early, one exchange at a time. */
export class GoogleAccessTokens {
  private readonly account: ServiceAccount;
  private readonly scope: string;
  private readonly ca: string | Buffer | undefined;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private cached: CachedToken | undefined;
  private refreshing: Promise<AccessTokenResult> | undefined;
  /** How many exchanges were started; for logs and tests. */
  exchanges = 0;

  constructor(options: GoogleAccessTokensOptions) {
    this.account = options.account;
    this.scope = options.scope;
    this.ca = options.ca;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  get(): Promise<AccessTokenResult> {
    const cached = this.cached;
    if (cached && this.now() < cached.refreshAt) return Promise.resolve({ ok: true, token: cached.token, fresh: false });
    this.refreshing ??= this.exchange().finally(() => { this.refreshing = undefined; });
    return this.refreshing;
  }

  /** Forgets `token` (the service said it is no longer valid); a newer cached token is kept. */
  invalidate(token: string): void {
    if (this.cached?.token === token) this.cached = undefined;
  }

  private async exchange(): Promise<AccessTokenResult> {
    this.exchanges += 1;
    const startedAt = this.now();
    let assertion: string;
    try {
      assertion = signAssertion(this.account, this.scope, startedAt);
    } catch (error) {
      return { ok: false, kind: 'credentials-rejected', reason: `cannot sign the OAuth2 assertion: ${(error as Error).message}`, retryAfterMs: 0 };
    }
    const form = new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString();
    let response: { status: number; headers: Record<string, string | string[] | undefined>; body: string };
    try {
      response = await this.post(form);
    } catch (error) {
      return { ok: false, kind: 'retry', reason: `OAuth2 token endpoint unreachable: ${(error as Error).message}`, retryAfterMs: 0 };
    }
    const answer = parseJsonObject(response.body);
    if (response.status === 200) {
      const token = answer?.access_token;
      if (typeof token !== 'string' || token === '') {
        return { ok: false, kind: 'retry', reason: 'OAuth2 token endpoint answered 200 without an access_token', retryAfterMs: 0 };
      }
      const lifetimeMs = typeof answer?.expires_in === 'number' && answer.expires_in > 0 ? answer.expires_in * 1000 : ASSERTION_LIFETIME_S * 1000;
      // Short-lived tokens (tests, unusual endpoints) are refreshed at half their life instead.
      this.cached = { token, refreshAt: startedAt + lifetimeMs - Math.min(REFRESH_MARGIN_MS, lifetimeMs / 2) };
      return { ok: true, token, fresh: true };
    }
    const error = typeof answer?.error === 'string' ? answer.error : `HTTP ${response.status}`;
    const description = typeof answer?.error_description === 'string' ? `: ${answer.error_description}` : '';
    const reason = `OAuth2 token endpoint refused the service account (${error}${description})`;
    if (response.status === 429 || response.status >= 500) {
      return { ok: false, kind: 'retry', reason, retryAfterMs: retryAfterMs(response.headers['retry-after'], this.now()) ?? 0 };
    }
    // 400 invalid_grant / 401 invalid_client / 403: a revoked or wrong key, or a bad clock. An operator must act.
    return { ok: false, kind: 'credentials-rejected', reason, retryAfterMs: 0 };
  }

  private post(form: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request(this.account.tokenUri, {
        method: 'POST',
        ca: this.ca,
        // One exchange an hour: a pooled keep-alive socket would only hold the process open.
        agent: false,
        timeout: this.timeoutMs,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(form),
          accept: 'application/json',
          connection: 'close',
        },
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new Error(`answer larger than ${MAX_RESPONSE_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(form);
    });
  }
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

