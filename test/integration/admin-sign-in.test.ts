/**
 * Guessing the admin token costs time: sign-in attempts are limited per client address
 * (http/admin/routes.ts), and a forged X-Forwarded-For does not reset the count unless
 * http.trust_proxy says a proxy sets it. Plain HTTP against the real server (no XMPP server needed).
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
