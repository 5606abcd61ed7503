/**
 * `GET /admin` and its pages (issue #12), served only when `http.admin_token` is set: overview,
 * registrations search, one registration with **Send test push** and **Remove** (confirmed).
 * Reads go to the store; a test push goes to the app's provider directly (ops/test-push.ts), and a
 * dead token it finds removes the registration as any push would (the page says so).
 */
import type { AppDirectory } from '../../core/apps.ts';
import { KeyedRateLimiter } from '../../core/rate-limit.ts';
import type { Telemetry } from '../../core/telemetry.ts';
import type { Logger } from '../../log.ts';
import type { RecentActivity } from '../../ops/recent.ts';
import { sendTestPush, type TestPushResult } from '../../ops/test-push.ts';
import type { Store } from '../../store/types.ts';
import { clientAddress, viaHttps } from '../client-address.ts';
import { secretMatches } from '../ops.ts';
import { text, type HttpReply, type HttpRequest, type HttpServer } from '../server.ts';
import {
  confirmRemovePage, messagePage, testPushRemovedPage, overviewPage, registrationDetailPage, registrationsPage, signInPage, STYLESHEET,
} from './pages.ts';
import { cookie, cookiesOf, csrfMatches, LOGIN_COOKIE, randomToken, SESSION_COOKIE, Sessions, type Session } from './session.ts';

export interface AdminDependencies {
  adminToken: string;
  store: Store;
  apps: AppDirectory;
  recent: RecentActivity;
  component(): { state: string; connectedSince: number | undefined; lastError: string | undefined };
  componentJid: string;
  credentialsExpiry(): Iterable<{ app: string; expiresAt: number }>;
  pushTimeoutMs: number;
  telemetry: Telemetry;
  logger: Logger;
  /** `http.trust_proxy`: sign-in attempts are limited per client address, as the HTTP API's are. */
  trustProxy?: boolean;
  /** Tests only: the clock of the sign-in limiter and of session expiry. */
  now?: () => number;
}

/**
 * Guessing the admin token: 5 attempts at once per client address (IPv6 per /64), then one every
 * 12 s. An operator signs in once per session; a script guessing tokens gets 7200 tries a day.
 */
export const SIGN_IN_BURST = 5;
export const SIGN_IN_PER_SECOND = 1 / 12;

const PAGE_SIZE = 25;
const TESTS_KEPT_PER_NODE = 10;
const NODES_WITH_TESTS_KEPT = 1000;
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

function html(status: number, body: string, headers: Record<string, string> = {}): HttpReply {
  return { status, body, contentType: 'text/html; charset=utf-8', headers: { ...SECURITY_HEADERS, ...headers } };
}

function redirect(location: string, headers: Record<string, string> = {}): HttpReply {
  return { status: 303, body: '', headers: { location, ...headers } };
}

function param(request: HttpRequest, name: string, from: 'query' | 'form' = 'query'): string {
  return ((from === 'query' ? request.query : request.form).get(name) ?? '').trim().slice(0, 4096);
}

export function addAdminRoutes(http: HttpServer, deps: AdminDependencies): void {
  const sessions = new Sessions(deps.adminToken, deps.now);
  const signInAttempts = new KeyedRateLimiter({ perSecond: SIGN_IN_PER_SECOND, burst: SIGN_IN_BURST, maxKeys: 10_000, now: deps.now });
  const testPushes = new Map<string, TestPushResult[]>();

  const remember = (node: string, result: TestPushResult) => {
    const list = testPushes.get(node) ?? [];
    testPushes.delete(node);
    list.unshift(result);
    if (list.length > TESTS_KEPT_PER_NODE) list.pop();
    testPushes.set(node, list);
    if (testPushes.size > NODES_WITH_TESTS_KEPT) testPushes.delete(testPushes.keys().next().value!);
  };

  const secure = (request: HttpRequest) => viaHttps(request.headers, deps.trustProxy === true);
  const signIn = (request: HttpRequest, problem?: string, status = 200): HttpReply => {
    const loginCsrf = randomToken();
    return html(status, signInPage(loginCsrf, problem), { 'set-cookie': cookie(LOGIN_COOKIE, loginCsrf, 600, secure(request)) });
  };

  /** A page for signed-in operators only; others are sent to sign in. */
  const page = (route: (request: HttpRequest, session: Session) => Promise<HttpReply>) => async (request: HttpRequest): Promise<HttpReply> => {
    const session = sessions.of(request);
    if (!session) return redirect('/admin');
    return route(request, session);
  };

  /** A form post: a session and its CSRF token, or nothing happens. */
  const action = (route: (request: HttpRequest, session: Session) => Promise<HttpReply>) => async (request: HttpRequest): Promise<HttpReply> => {
    const session = sessions.of(request);
    if (!session) return text(403, 'ERROR\nnot signed in');
    if (!csrfMatches(session.csrf, request)) return text(403, 'ERROR\nmissing or wrong CSRF token');
    return route(request, session);
  };

  http.add('GET', '/admin/style.css', () => ({ status: 200, body: STYLESHEET, contentType: 'text/css; charset=utf-8', headers: { 'cache-control': 'max-age=3600' } }));

  http.add('GET', '/admin', async (request) => {
    const session = sessions.of(request);
    if (!session) return signIn(request);
    const component = deps.component();
    const expiries = new Map([...deps.credentialsExpiry()].map((expiry) => [expiry.app, expiry.expiresAt]));
    const apps = deps.apps.all().map((app) => {
      const status = app.provider.status();
      return { name: app.name, provider: app.providerKind, state: status.state, detail: status.detail, hour: deps.recent.lastHour(app.name), credentialsExpire: expiries.get(app.name) };
    });
    const retriesPending = await deps.store.countRetries();
    return html(200, overviewPage({ componentJid: deps.componentJid, component, apps, retriesPending }, session.csrf));
  });

  http.add('POST', '/admin/login', async (request) => {
    const loginCsrf = cookiesOf(request).get(LOGIN_COOKIE);
    if (loginCsrf === undefined || !csrfMatches(loginCsrf, request)) return signIn(request, 'The sign-in form expired or was not sent from this page; try again.', 403);
    const client = clientAddress(request.remoteAddress, request.headers, deps.trustProxy === true);
    const attempt = signInAttempts.take(client);
    if (!attempt.allowed) {
      const seconds = Math.max(1, Math.ceil(attempt.retryAfterMs / 1000));
      deps.logger.warn('admin sign-in attempts over the limit', { client });
      const reply = signIn(request, `Too many sign-in attempts from your address; try again in ${seconds} s.`, 429);
      return { ...reply, headers: { ...reply.headers, 'retry-after': String(seconds) } };
    }
    if (!secretMatches(deps.adminToken, request.form.get('token') ?? '')) {
      deps.logger.warn('admin sign-in with a wrong token');
      return signIn(request, 'Wrong admin token.', 403);
    }
    const session = sessions.create();
    deps.logger.info('admin signed in');
    return redirect('/admin', { 'set-cookie': cookie(SESSION_COOKIE, session.cookieValue, sessions.maxAgeS, secure(request)) });
  });

  http.add('POST', '/admin/logout', action(async (request, session) => {
    sessions.end(session);
    return redirect('/admin', { 'set-cookie': cookie(SESSION_COOKIE, '', 0, secure(request)) });
  }));

  http.add('GET', '/admin/registrations', page(async (request, session) => {
    const form = { node: param(request, 'node'), token: param(request, 'token'), jid: param(request, 'jid'), app: param(request, 'app') };
    const pageNumber = Math.max(1, Math.min(1_000_000, Number.parseInt(param(request, 'page'), 10) || 1));
    const found = await deps.store.search({
      node: form.node || undefined, tokenPrefix: form.token || undefined, jid: form.jid || undefined, app: form.app || undefined,
      offset: (pageNumber - 1) * PAGE_SIZE, limit: PAGE_SIZE,
    });
    return html(200, registrationsPage(form, deps.apps.names(), found.registrations, found.total, pageNumber, PAGE_SIZE, session.csrf));
  }));

  http.add('GET', '/admin/registration', page(async (request, session) => {
    const registration = await deps.store.getByNode(param(request, 'node'));
    if (!registration) return html(404, messagePage('Not found', 'No registration with this node.', session.csrf));
    return html(200, registrationDetailPage(registration, testPushes.get(registration.node) ?? [], session.csrf));
  }));

  http.add('POST', '/admin/registration/test-push', action(async (request, session) => {
    const registration = await deps.store.getByNode(param(request, 'node', 'form'));
    if (!registration) return html(404, messagePage('Not found', 'No registration with this node.', session.csrf));
    const app = deps.apps.get(registration.app);
    if (!app) return html(409, messagePage('App not configured', `The registration names app "${registration.app}", which is not configured.`, session.csrf));
    const result = await sendTestPush(app, registration, { timeoutMs: deps.pushTimeoutMs, telemetry: deps.telemetry, store: deps.store });
    deps.logger.info('admin test push', { app: app.name, node: registration.node, result: result.outcome.kind, status: result.outcome.status, removed: result.removed });
    if (result.removed) {
      testPushes.delete(registration.node);
      return html(200, testPushRemovedPage(registration, result, session.csrf));
    }
    remember(registration.node, result);
    return html(200, registrationDetailPage(registration, testPushes.get(registration.node) ?? [], session.csrf, result));
  }));

  http.add('GET', '/admin/registration/remove', page(async (request, session) => {
    const registration = await deps.store.getByNode(param(request, 'node'));
    if (!registration) return html(404, messagePage('Not found', 'No registration with this node.', session.csrf));
    return html(200, confirmRemovePage(registration, session.csrf));
  }));

  http.add('POST', '/admin/registration/remove', action(async (request, session) => {
    const node = param(request, 'node', 'form');
    if (param(request, 'confirm', 'form') !== 'yes') return redirect(`/admin/registration/remove?node=${encodeURIComponent(node)}`);
    const registration = await deps.store.getByNode(node);
    if (!registration || !(await deps.store.remove(node))) return html(404, messagePage('Not found', 'No registration with this node.', session.csrf));
    deps.telemetry.registrationChanged(registration.app, 'http', 'removed');
    testPushes.delete(node);
    deps.logger.info('admin removed a registration', { app: registration.app, node });
    return html(200, messagePage('Removed', `The registration ${node} of app ${registration.app} was removed.`, session.csrf));
  }));
}
