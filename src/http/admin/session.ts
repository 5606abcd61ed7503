/**
 * Admin sessions: the operator signs in once with `http.admin_token`; the browser then holds only
 * a random session id in an HttpOnly, SameSite=Strict cookie (the token itself never sits in a
 * cookie or a URL). Every form carries the session's CSRF token. Sessions live in memory: a
 * restart signs everyone out, which is fine for a handful of operators.
 */
import { randomBytes } from 'node:crypto';
import type { HttpRequest } from '../server.ts';
import { secretMatches } from '../ops.ts';

export const SESSION_COOKIE = 'pa_admin';
/** Before sign-in: the login form's CSRF token is also in this cookie (double submit). */
export const LOGIN_COOKIE = 'pa_admin_login';
const SESSION_TTL_MS = 12 * 3600_000;
const MAX_SESSIONS = 100;

export interface Session {
  id: string;
  csrf: string;
  expiresAt: number;
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

export class Sessions {
  private readonly sessions = new Map<string, Session>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  create(): Session {
    const now = this.now();
    for (const [id, session] of this.sessions) if (session.expiresAt <= now) this.sessions.delete(id);
    if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    const session = { id: randomToken(), csrf: randomToken(), expiresAt: now + SESSION_TTL_MS };
    this.sessions.set(session.id, session);
    return session;
  }

  of(request: HttpRequest): Session | undefined {
    const id = cookiesOf(request).get(SESSION_COOKIE);
    if (id === undefined) return undefined;
    const session = this.sessions.get(id);
    if (!session) return undefined;
    if (session.expiresAt <= this.now()) {
      this.sessions.delete(id);
      return undefined;
    }
    return session;
  }

  end(session: Session): void {
    this.sessions.delete(session.id);
  }

  get maxAgeS(): number {
    return SESSION_TTL_MS / 1000;
  }
}

export function csrfMatches(expected: string, request: HttpRequest): boolean {
  const given = request.form.get('csrf');
  return given !== null && given !== '' && secretMatches(expected, given);
}
