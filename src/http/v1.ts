/**
 * The original mod_push_appserver HTTP API, kept as a contract (../shared/reference):
 * form-encoded POSTs, text replies whose first line is OK or ERROR.
 *
 * HTTP proves no identity (core/registrations.ts): a `jid` only binds publishes to its domain. The
 * registration endpoints are limited per client address (registration.http_per_ip_per_minute, 429
 * with Retry-After). The debug pages need http.admin_token in the Authorization header.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import type { Dispatcher } from '../core/dispatcher.ts';
import { parseJid } from '../core/jid.ts';
import { KeyedRateLimiter } from '../core/rate-limit.ts';
import type { RegistrationFailure, Registrations } from '../core/registrations.ts';
import { ThrottledWarning } from '../core/throttled-warning.ts';
import type { Logger } from '../log.ts';
import type { Store } from '../store/types.ts';
import { clientAddress } from './client-address.ts';
import { registrationListPage, registrationPage } from './pages.ts';
import { httpReplyForDispatch } from './replies.ts';
import { text, type HttpReply, type HttpRequest, type HttpServer } from './server.ts';

export const BASE = '/push_appserver/v1';
const PAGE_SIZE = 500;

export interface HealthReport {
  status: 'running' | 'degraded';
  [key: string]: unknown;
}

export interface V1Dependencies {
  registrations: Registrations;
  dispatcher: Dispatcher;
  store: Store;
  health: () => Promise<HealthReport>;
  debug: boolean;
  adminToken: string | undefined;
  /** Take the client address from X-Forwarded-For (http.trust_proxy). */
  trustProxy?: boolean;
  /** /register and /unregister requests per client address and minute; 0 = no limit. */
  registrationsPerIpPerMinute?: number;
  logger?: Logger;
  now?: () => number;
}

export function retryAfterHeader(retryAfterMs: number): Record<string, string> {
  return { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) };
}

function failureReply(failure: RegistrationFailure): HttpReply {
  switch (failure.code) {
    case 'not-found':
      return text(404, `ERROR\n${failure.message}`);
    case 'forbidden':
      return text(403, `ERROR\n${failure.message}`);
    case 'limited':
      return text(429, `ERROR\n${failure.message}`, retryAfterHeader(failure.retryAfterMs));
    case 'unavailable':
      return text(503, `ERROR\n${failure.message}`, retryAfterHeader(failure.retryAfterMs));
    default:
      return text(400, `ERROR\n${failure.message}`);
  }
}

function field(request: HttpRequest, name: string): string {
  return (request.form.get(name) ?? '').trim();
}

function tokenMatches(expected: string, given: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}

function wantsJson(request: HttpRequest): boolean {
  return /\bapplication\/json\b/.test(request.headers.accept ?? '');
}

export function addV1Routes(http: HttpServer, deps: V1Dependencies): void {
  const perMinute = deps.registrationsPerIpPerMinute ?? 0;
  const perIp = new KeyedRateLimiter({ perSecond: perMinute / 60, burst: perMinute, now: deps.now });
  const limitedWarning = deps.logger ? new ThrottledWarning(deps.logger, 'HTTP registrations refused: a client address is over registration.http_per_ip_per_minute') : undefined;
  /** A 429 when this client is over its registration rate. */
  const overLimit = (request: HttpRequest): HttpReply | undefined => {
    if (!perIp.enabled) return undefined;
    const client = clientAddress(request.remoteAddress, request.headers, deps.trustProxy === true);
    const decision = perIp.take(client);
    if (decision.allowed) return undefined;
    limitedWarning?.note({ client });
    return text(429, 'ERROR\ntoo many registration requests from this address: try again later', retryAfterHeader(decision.retryAfterMs));
  };

  http.add('POST', `${BASE}/register`, async (request) => {
    const limited = overLimit(request);
    if (limited) return limited;
    // An optional `jid` binds the registration to that JID's domain; it proves nothing, so the
    // registration lives in a scope of its own, apart from the JID's registrations over XMPP.
    const jidField = field(request, 'jid');
    const jid = jidField === '' ? undefined : parseJid(jidField);
    if (jid === null) return text(400, `ERROR\nfield "jid" is not a JID: ${JSON.stringify(jidField.slice(0, 100))}`);
    const secret = field(request, 'secret');
    const result = await deps.registrations.register({
      app: field(request, 'type'),
      deviceId: field(request, 'node'),
      token: field(request, 'token'),
      namedJid: jid?.bare,
      boundDomain: jid?.domain,
      secret: secret === '' ? undefined : secret,
      deviceIdAsNode: true,
      ...(field(request, 'push2_key') !== '' ? { push2Key: field(request, 'push2_key') } : {}),
    });
    if (!result.ok) return failureReply(result.failure);
    // Push 2.0 clients ask for the <client> string with push2=1; the three-line answer is unchanged without it.
    const client = field(request, 'push2') === '1' ? `\n${result.registration.node}` : '';
    return text(200, `OK\n${result.registration.node}\n${result.registration.secret}${client}`);
  });

  http.add('POST', `${BASE}/unregister`, async (request) => {
    const limited = overLimit(request);
    if (limited) return limited;
    const secret = field(request, 'secret');
    const jidField = field(request, 'jid');
    const jid = jidField === '' ? undefined : parseJid(jidField);
    if (jid === null) return text(400, `ERROR\nfield "jid" is not a JID: ${JSON.stringify(jidField.slice(0, 100))}`);
    // The original form (type, node) still works for anonymous registrations; a bound one or one
    // made over XMPP also needs its secret, because an HTTP caller proves no identity.
    const result = await deps.registrations.unregister({
      app: field(request, 'type'),
      deviceId: field(request, 'node'),
      namedJid: jid?.bare,
      secret: secret === '' ? undefined : secret,
      anonymous: true,
    });
    if (!result.ok) return failureReply(result.failure);
    return text(200, `OK\n${result.node}`);
  });

  http.add('POST', `${BASE}/push`, async (request) => {
    const node = field(request, 'node');
    const secret = field(request, 'secret');
    if (node === '') return text(400, 'ERROR\nmissing field "node"');
    if (secret === '') return text(400, 'ERROR\nmissing field "secret"');
    const result = await deps.dispatcher.dispatch({ dialect: 'http', node, secret, from: null, summary: {}, options: new Map() });
    return httpReplyForDispatch(result, node);
  });

  http.add('GET', `${BASE}/health`, async (request) => {
    const report = await deps.health();
    if (wantsJson(request)) {
      return { status: 200, body: JSON.stringify(report) + '\n', contentType: 'application/json' };
    }
    return text(200, 'RUNNING');
  });

  const settingsAllowed = (request: HttpRequest): HttpReply | undefined => {
    if (!deps.debug) return text(403, 'ERROR\ndebug pages are disabled (set http.debug = true)');
    // Only the Authorization header: a token in the query string ends up in proxy and access logs.
    if (deps.adminToken === undefined || deps.adminToken === '') return text(403, 'ERROR\nadmin token required (set http.admin_token)');
    const auth = request.headers.authorization ?? '';
    const given = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (given !== '' && tokenMatches(deps.adminToken, given)) return undefined;
    return text(403, 'ERROR\nadmin token required (Authorization: Bearer <http.admin_token>)', { 'www-authenticate': 'Bearer' });
  };

  http.add('GET', `${BASE}/settings`, async (request) => {
    const denied = settingsAllowed(request);
    if (denied) return denied;
    const after = request.query.get('after') ?? undefined;
    const registrations = await deps.store.list({ after, limit: PAGE_SIZE });
    const next = registrations.length === PAGE_SIZE ? registrations[registrations.length - 1].node : undefined;
    const html = registrationListPage(registrations, await deps.store.count(), next, `${BASE}/settings`);
    return { status: 200, body: html, contentType: 'text/html; charset=utf-8' };
  });

  http.add('GET', (path) => path.startsWith(`${BASE}/settings/`), async (request) => {
    const denied = settingsAllowed(request);
    if (denied) return denied;
    let node: string;
    try {
      node = decodeURIComponent(request.path.slice(`${BASE}/settings/`.length));
    } catch {
      return text(400, 'ERROR\nnode is not valid percent-encoding');
    }
    const registration = await deps.store.getByNode(node);
    if (!registration) return text(404, 'ERROR\nno such node');
    return { status: 200, body: registrationPage(registration), contentType: 'text/html; charset=utf-8' };
  });
}
