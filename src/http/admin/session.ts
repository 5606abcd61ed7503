/**
 * Admin sessions: the operator signs in once with `http.admin_token`; the browser then holds a
 * signed session value in an HttpOnly, SameSite=Strict cookie (the token itself never sits in a
 * cookie or a URL). The value is self-contained — format version, sign-in time, a random session
 * id and an HMAC-SHA256 over those three — so every instance configured with the same admin token
 * accepts it without a shared store, behind a load balancer and across restarts.
 *
 * The keys are derived from the admin token (HKDF with fixed labels), never the token itself, so a
 * cookie reveals nothing about it; changing `http.admin_token` ends every session. Every form
 * carries the session's CSRF token, an HMAC of the session id under a second derived key: the
 * instance a form is posted to computes the same token as the one that rendered it.
 *
 * Signing out clears the cookie, but a signed value cannot be revoked everywhere without shared
 * state: the instance that handled the sign-out remembers the session id until the session would
 * have expired and refuses it; another instance accepts a copy of the cookie until then.
 */
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import type { HttpRequest } from '../server.ts';
import { secretMatches } from '../ops.ts';

export const SESSION_COOKIE = 'pa_admin';
/** Before sign-in: the login form's CSRF token is also in this cookie (double submit). */
export const LOGIN_COOKIE = 'pa_admin_login';
export const SESSION_TTL_MS = 12 * 3600_000;
/**
 * A session signed "in the future" by at most this much is still accepted: instances behind one
 * load balancer may disagree on the time by a little. Anything further ahead was not made by us
 * with a sane clock.
 */
export const CLOCK_SKEW_MS = 60_000;
/**
 * Sessions ended on this instance that it keeps refusing. Only a signed-in operator can end one,
 * so the bound is never reached in practice; if it were, the oldest entries go first.
 */
const MAX_ENDED_SESSIONS = 10_000;

const VERSION = 'v1';
const SESSION_KEY_LABEL = 'push-appserver admin session v1';
const CSRF_KEY_LABEL = 'push-appserver admin csrf v1';
const SESSION_ID_BYTES = 16;
/**
 * `v1.<sign-in time, ms>.<id, 22 base64url chars>.<HMAC-SHA256, 43 base64url chars>`. Anchored,
 * every part of bounded length: over-long input fails within the first hundred characters, and the
 * MAC always has the length the constant-time comparison needs.
 */
const SIGNED_VALUE = /^v1\.(0|[1-9][0-9]{0,14})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

export interface Session {
  id: string;
  csrf: string;
  expiresAt: number;
  /** What the session cookie holds. */
  cookieValue: string;
}

export function cookiesOf(request: HttpRequest): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) cookies.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return cookies;
}

export function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

/** `secure`: the browser came over HTTPS (through a trusted proxy), so the cookie must never travel in clear. */
export function cookie(name: string, value: string, maxAgeS: number, secure: boolean): string {
  return `${name}=${value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=${maxAgeS}${secure ? '; Secure' : ''}`;
}

export interface SessionKeys {
  signing: Buffer;
  csrf: Buffer;
}

/** Two independent keys, so a MAC of one kind can never stand in for the other. */
export function sessionKeysOf(adminToken: string): SessionKeys {
  const derive = (label: string) => Buffer.from(hkdfSync('sha256', adminToken, '', label, 32));
  return { signing: derive(SESSION_KEY_LABEL), csrf: derive(CSRF_KEY_LABEL) };
}

function macOf(key: Buffer, data: string): string {
  return createHmac('sha256', key).update(data).digest('base64url');
}

/** The same on every instance with the same admin token, and unguessable without it. */
export function csrfTokenOf(keys: SessionKeys, sessionId: string): string {
  return macOf(keys.csrf, sessionId);
}

function sessionOf(keys: SessionKeys, issuedAt: number, id: string, cookieValue: string): Session {
  return { id, csrf: csrfTokenOf(keys, id), expiresAt: issuedAt + SESSION_TTL_MS, cookieValue };
}

export function issueSession(keys: SessionKeys, now: number): Session {
  const issuedAt = Math.floor(now);
  const id = randomBytes(SESSION_ID_BYTES).toString('base64url');
  const signed = `${VERSION}.${issuedAt}.${id}`;
  return sessionOf(keys, issuedAt, id, `${signed}.${macOf(keys.signing, signed)}`);
}

/**
 * The session a cookie value stands for, or undefined when it is malformed, wrongly signed (another
 * admin token, a changed byte), expired or signed too far in the future. Never throws: whatever a
 * client sends means at most "signed out".
 */
export function verifySession(keys: SessionKeys, cookieValue: string, now: number): Session | undefined {
  const parts = SIGNED_VALUE.exec(cookieValue);
  if (!parts) return undefined;
  const [, issued, id, mac] = parts;
  // Compared as text, not decoded: Node ignores the spare low bits of a base64url string's last
  // character, so decoded bytes would match for a changed last character too.
  if (!secretMatches(macOf(keys.signing, `${VERSION}.${issued}.${id}`), mac)) return undefined;
  const issuedAt = Number(issued);
  if (issuedAt > now + CLOCK_SKEW_MS) return undefined;
  const session = sessionOf(keys, issuedAt, id, cookieValue);
  return session.expiresAt > now ? session : undefined;
}

export class Sessions {
  private readonly keys: SessionKeys;
  private readonly now: () => number;
  /** Session id → when it would have expired anyway (then it needs no remembering). */
  private readonly ended = new Map<string, number>();

  constructor(adminToken: string, now: () => number = Date.now) {
    this.keys = sessionKeysOf(adminToken);
    this.now = now;
  }

  create(): Session {
    return issueSession(this.keys, this.now());
  }

  of(request: HttpRequest): Session | undefined {
    const value = cookiesOf(request).get(SESSION_COOKIE);
    if (value === undefined) return undefined;
    const session = verifySession(this.keys, value, this.now());
    if (!session || this.ended.has(session.id)) return undefined;
    return session;
  }

  /** This instance refuses the session from now on; see the header for other instances. */
  end(session: Session): void {
    const now = this.now();
    for (const [id, expiresAt] of this.ended) if (expiresAt <= now) this.ended.delete(id);
    if (this.ended.size >= MAX_ENDED_SESSIONS) this.ended.delete(this.ended.keys().next().value!);
    this.ended.set(session.id, session.expiresAt);
  }

  /** Sessions ended here and still refused (tests). */
  get endedCount(): number {
    return this.ended.size;
  }

  get maxAgeS(): number {
    return SESSION_TTL_MS / 1000;
  }
}

export function csrfMatches(expected: string, request: HttpRequest): boolean {
  const given = request.form.get('csrf');
  return given !== null && given !== '' && secretMatches(expected, given);
}
