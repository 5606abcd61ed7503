/**
 * Guessing the admin token costs time: sign-in attempts are limited per client address
 * (http/admin/routes.ts), and a forged X-Forwarded-For does not reset the count unless
 * http.trust_proxy says a proxy sets it. A session signed in on one instance works on every
 * instance with the same admin token, across restarts (http/admin/session.ts). Plain HTTP against
 * the real server (no XMPP server needed).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { SIGN_IN_BURST } from '../../src/http/admin/routes.ts';

const ADMIN_TOKEN = 'sign-in-limit-admin-token-0123456789abcdef';

async function signInForm(url: string): Promise<{ cookie: string; csrf: string }> {
  const response = await fetch(`${url}/admin`);
  const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0];
  const csrf = /name="csrf" value="([^"]+)"/.exec(await response.text())?.[1];
  assert.ok(cookie.startsWith('pa_admin_login=') && csrf, 'the sign-in form and its cookie');
  return { cookie, csrf };
}

async function attempt(url: string, token: string, headers: Record<string, string> = {}): Promise<Response> {
  const { cookie, csrf } = await signInForm(url);
  return fetch(`${url}/admin/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie, ...headers },
    body: new URLSearchParams({ csrf, token }).toString(),
  });
}

describe('admin sign-in limit', () => {
  let app: TestAppServer;
  before(async () => {
    app = await startAppServer({ http: { admin_token: ADMIN_TOKEN } });
  });
  after(async () => {
    await app?.stop();
  });

  test('after a burst of wrong tokens from one address, the next attempt is refused with 429 and Retry-After, even with the right token or a forged X-Forwarded-For', async () => {
    for (let i = 0; i < SIGN_IN_BURST; i++) {
      const wrong = await attempt(app.httpUrl, `wrong-${i}`);
      assert.equal(wrong.status, 403, `attempt ${i + 1} is judged on its token`);
    }
    const limited = await attempt(app.httpUrl, ADMIN_TOKEN);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1, 'Retry-After in seconds');
    assert.match(await limited.text(), /Too many sign-in attempts from your address; try again in \d+ s\./);
    assert.equal(limited.headers.get('set-cookie')?.startsWith('pa_admin='), false, 'no session');
    const forged = await attempt(app.httpUrl, ADMIN_TOKEN, { 'x-forwarded-for': '203.0.113.9' });
    assert.equal(forged.status, 429, 'X-Forwarded-For is not trusted without http.trust_proxy');
    assert.equal(app.countLog(/WARN .*admin sign-in attempts over the limit/), 2);
  });
});

describe('admin cookies behind an HTTPS proxy', () => {
  let app: TestAppServer;
  before(async () => {
    app = await startAppServer({ http: { admin_token: ADMIN_TOKEN, trust_proxy: true } });
  });
  after(async () => {
    await app?.stop();
  });

  test('with http.trust_proxy and X-Forwarded-Proto: https, the sign-in and session cookies are Secure', async () => {
    const https = { 'x-forwarded-proto': 'https' };
    const form = await fetch(`${app.httpUrl}/admin`, { headers: https });
    assert.match(form.headers.get('set-cookie') ?? '', /^pa_admin_login=[^;]+;.*; Secure$/);
    const signedIn = await attempt(app.httpUrl, ADMIN_TOKEN, https);
    assert.equal(signedIn.status, 303);
    assert.match(signedIn.headers.get('set-cookie') ?? '', /^pa_admin=[^;]+;.*HttpOnly; SameSite=Strict;.*; Secure$/);
  });

  test('over plain HTTP (no X-Forwarded-Proto, or one a client added before the proxy\'s http), the cookies are not Secure, so the page still works', async () => {
    for (const headers of [{}, { 'x-forwarded-proto': 'https, http' }] as Array<Record<string, string>>) {
      const signedIn = await attempt(app.httpUrl, ADMIN_TOKEN, headers);
      assert.equal(signedIn.status, 303);
      assert.doesNotMatch(signedIn.headers.get('set-cookie') ?? '', /Secure/);
    }
  });
});

test('without http.trust_proxy, a client\'s X-Forwarded-Proto does not change the cookies', async () => {
  const app = await startAppServer({ http: { admin_token: ADMIN_TOKEN } });
  try {
    const form = await fetch(`${app.httpUrl}/admin`, { headers: { 'x-forwarded-proto': 'https' } });
    assert.doesNotMatch(form.headers.get('set-cookie') ?? '', /Secure/);
  } finally {
    await app.stop();
  }
});

async function signIn(url: string, token = ADMIN_TOKEN): Promise<string> {
  const response = await attempt(url, token);
  assert.equal(response.status, 303, 'signed in');
  const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0];
  assert.match(cookie, /^pa_admin=./);
  return cookie;
}

/** The overview as this cookie sees it: its heading and the CSRF token of its forms, if signed in. */
async function overview(url: string, cookie: string): Promise<{ heading: string | undefined; csrf: string | undefined }> {
  const response = await fetch(`${url}/admin`, { headers: { cookie } });
  assert.equal(response.status, 200);
  const body = await response.text();
  return { heading: /<h1>([^<]*)<\/h1>/.exec(body)?.[1], csrf: /name="csrf" value="([^"]+)"/.exec(body)?.[1] };
}

async function postForm(url: string, path: string, cookie: string, fields: Record<string, string>): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
    body: new URLSearchParams(fields).toString(),
  });
}

describe('admin sessions across instances with the same admin token', () => {
  let instanceA: TestAppServer;
  let instanceB: TestAppServer;
  let otherToken: TestAppServer;
  before(async () => {
    [instanceA, instanceB, otherToken] = await Promise.all([
      startAppServer({ http: { admin_token: ADMIN_TOKEN } }),
      startAppServer({ http: { admin_token: ADMIN_TOKEN } }),
      startAppServer({ http: { admin_token: 'a-different-admin-token-0123456789abcdef' } }),
    ]);
  });
  after(async () => {
    await Promise.all([instanceA?.stop(), instanceB?.stop(), otherToken?.stop()]);
  });

  test('signed in on instance A, the operator sees the overview on instance B and a form rendered by A sends a test push on B', async () => {
    const reply = await instanceB.post('/push_appserver/v1/register', { type: 'apns', node: 'across-phone', token: 'token-across-instances-0001' });
    assert.equal(reply.status, 200, reply.body);
    const node = reply.body.split('\n')[1];
    const cookie = await signIn(instanceA.httpUrl);
    const onA = await overview(instanceA.httpUrl, cookie);
    assert.equal(onA.heading, 'Overview');
    assert.ok(onA.csrf, 'A rendered a form with its CSRF token');
    const onB = await overview(instanceB.httpUrl, cookie);
    assert.equal(onB.heading, 'Overview', 'B does not ask to sign in again');
    assert.equal(onB.csrf, onA.csrf, 'both instances render the same CSRF token');
    const pushed = await postForm(instanceB.httpUrl, '/admin/registration/test-push', cookie, { csrf: onA.csrf, node });
    assert.equal(pushed.status, 200);
    assert.match(await pushed.text(), /Test push: <span class="ok">delivered/);
    const forged = await postForm(instanceB.httpUrl, '/admin/registration/test-push', cookie, { csrf: `${onA.csrf.slice(0, -2)}xx`, node });
    assert.equal(forged.status, 403, 'B still checks the CSRF token');
  });

  test('an instance with another admin token refuses the cookie: its page asks to sign in and its forms do nothing', async () => {
    const cookie = await signIn(instanceA.httpUrl);
    const { csrf } = await overview(instanceA.httpUrl, cookie);
    const page = await fetch(`${otherToken.httpUrl}/admin`, { headers: { cookie } });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /name="token"/, 'the sign-in form');
    assert.match(page.headers.get('set-cookie') ?? '', /^pa_admin_login=/);
    const signOut = await postForm(otherToken.httpUrl, '/admin/logout', cookie, { csrf: csrf! });
    assert.equal(signOut.status, 403);
    assert.match(await signOut.text(), /not signed in/);
  });

  test('after signing out on instance A, A refuses the old cookie', async () => {
    const cookie = await signIn(instanceA.httpUrl);
    const { csrf } = await overview(instanceA.httpUrl, cookie);
    const signOut = await postForm(instanceA.httpUrl, '/admin/logout', cookie, { csrf: csrf! });
    assert.equal(signOut.status, 303);
    assert.match(signOut.headers.get('set-cookie') ?? '', /^pa_admin=; Path=\/admin; HttpOnly; SameSite=Strict; Max-Age=0/, 'the cookie is cleared');
    assert.equal((await overview(instanceA.httpUrl, cookie)).heading, 'Sign in', 'the old cookie shows the sign-in form');
    const again = await postForm(instanceA.httpUrl, '/admin/logout', cookie, { csrf: csrf! });
    assert.equal(again.status, 403);
  });
});

test('an instance restarted with the same admin token still accepts a session signed in before the restart', async () => {
  const before = await startAppServer({ http: { admin_token: ADMIN_TOKEN } });
  let cookie: string;
  try {
    cookie = await signIn(before.httpUrl);
  } finally {
    await before.stop();
  }
  const restarted = await startAppServer({ http: { admin_token: ADMIN_TOKEN } });
  try {
    assert.equal((await overview(restarted.httpUrl, cookie)).heading, 'Overview');
  } finally {
    await restarted.stop();
  }
});
