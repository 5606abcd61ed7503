/**
 * The admin page in a real browser (Debian's chromium driven by playwright-core): sign in with the
 * admin token, find a registration, send a test push that reaches the mock APNS (HTTP/2 over TLS),
 * remove a registration after confirming; a wrong token and a form without its CSRF token are
 * refused. A screenshot of every page is saved under test-artifacts/admin/.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { integrationSkipped, missingPart } from '../support/real-parts.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns } from '../support/mock-apns.ts';
import { jwtKeyPair } from '../support/push2.ts';

const CHROMIUM = '/usr/bin/chromium';
const ADMIN_TOKEN = 'admin-token-for-the-browser-test-0123456789';
const TOPIC = 'org.example.chat';
const ARTIFACTS = resolve(dirname(fileURLToPath(import.meta.url)), '../../test-artifacts/admin');

// A missing browser is a failure (in `before`), never a skip; only the explicit opt-out skips, loudly.
const skip = integrationSkipped('Chromium');

describe('the admin page in Chromium', { skip, timeout: 180_000 }, () => {
  let apns: MockApns;
  let app: TestAppServer;
  let context: BrowserContext;
  let page: Page;
  let profileDir: string;
  const nodes: Record<string, string> = {};
  const carolPush2Key = jwtKeyPair();

  async function shot(name: string, target: Page = page): Promise<void> {
    await target.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  }

  before(async () => {
    if (!existsSync(CHROMIUM)) throw missingPart(`Chromium (${CHROMIUM})`, 'apt-get install chromium');
    mkdirSync(ARTIFACTS, { recursive: true });
    const key = createTestApnsKey();
    apns = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC] });
    app = await startAppServer({
      http: { admin_token: ADMIN_TOKEN },
      apps: {
        ios: { provider: 'apns', topic: TOPIC, endpoint: apns.origin, ca_file: apns.caFile, key_file: key.keyFile, key_id: key.keyId, team_id: key.teamId },
        android: { provider: 'log' },
      },
    });
    for (const [name, n] of [['alice', 1], ['bob', 2], ['carol', 3]] as const) {
      const push2: Record<string, string> = name === 'carol' ? { push2_key: carolPush2Key.publicBase64 } : {};
      const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: `${name}-phone`, token: testDeviceToken(n), jid: `${name}@example.org`, ...push2 });
      assert.equal(reply.status, 200, reply.body);
      nodes[name] = reply.body.split('\n')[1];
    }
    await app.post('/push_appserver/v1/register', { type: 'android', node: 'dave-tablet', token: 'fcm-like-token-of-dave-0001' });
    profileDir = mkdtempSync(join(tmpdir(), 'push-appserver-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1100, height: 800 },
    });
    page = context.pages()[0] ?? await context.newPage();
  });

  after(async () => {
    await context?.close();
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
    await app?.stop();
    await apns?.close();
  });

  test('a wrong admin token is refused and the sign-in form is shown again', async () => {
    await page.goto(`${app.httpUrl}/admin`);
    await shot('1-sign-in');
    await page.fill('#token', 'not-the-admin-token-but-long-enough-000000');
    const [response] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    assert.equal(response?.status(), 403);
    assert.match(await page.textContent('main') ?? '', /Wrong admin token/);
    await shot('2-wrong-token');
    assert.equal((await context.cookies()).some((c) => c.name === 'pa_admin'), false, 'no session');
  });

  test('signing in with the token opens the overview and sets an HttpOnly, SameSite=Strict session cookie', async () => {
    await page.goto(`${app.httpUrl}/admin`);
    await page.fill('#token', ADMIN_TOKEN);
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    assert.equal(await page.textContent('h1'), 'Overview');
    const main = await page.textContent('main') ?? '';
    assert.match(main, /push\.localhost/);
    assert.match(main, /ios\s*apns\s*ok/);
    assert.match(main, /Retries pending\s*0/);
    const session = (await context.cookies()).find((c) => c.name === 'pa_admin');
    assert.ok(session, 'a session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.ok(!session.value.includes(ADMIN_TOKEN), 'the cookie is not the token');
    await shot('3-overview');
  });

  test('the registrations list finds a registration by JID and by token prefix', async () => {
    await page.click('header >> text=Registrations');
    assert.match(await page.textContent('main') ?? '', /4 found/);
    await shot('4-registrations');
    await page.fill('#jid', 'bob@example.org');
    await Promise.all([page.waitForNavigation(), page.click('form.search button')]);
    const rows = await page.locator('tbody tr').allTextContents();
    assert.equal(rows.length, 1);
    assert.match(rows[0], new RegExp(nodes.bob));
    await page.fill('#jid', '');
    await page.fill('#token', testDeviceToken(3).slice(0, 12));
    await page.selectOption('#app', 'ios');
    await Promise.all([page.waitForNavigation(), page.click('form.search button')]);
    const byToken = await page.locator('tbody tr').allTextContents();
    assert.equal(byToken.length, 1);
    assert.match(byToken[0], new RegExp(nodes.carol));
    await shot('5-search');
  });

  test('a test push from a registration\'s page reaches the mock APNS and shows the provider\'s answer', async () => {
    await page.goto(`${app.httpUrl}/admin/registrations?jid=bob%40example.org`);
    await Promise.all([page.waitForNavigation(), page.click(`a:has-text("${nodes.bob}")`)]);
    assert.equal(await page.textContent('h1'), 'Registration');
    assert.match(await page.textContent('main') ?? '', new RegExp(testDeviceToken(2)));
    await shot('6-registration');
    const before = apns.requests.length;
    await Promise.all([page.waitForNavigation(), page.click('button:has-text("Send test push")')]);
    const pushed = apns.requests.slice(before);
    assert.equal(pushed.length, 1, 'one request reached the mock');
    assert.equal(pushed[0].token, testDeviceToken(2));
    assert.equal(pushed[0].headers['apns-topic'], TOPIC);
    const result = await page.textContent('#test-result') ?? '';
    assert.match(result, /Test push: delivered/);
    assert.match(result, /delivered \(HTTP 200\), id [0-9a-f-]{36}/i, 'the provider\'s answer, with its apns-id');
    await shot('7-test-push');
  });

  test('a form posted without its CSRF token, or with a wrong one, is refused', async () => {
    const withoutCsrf = await context.request.post(`${app.httpUrl}/admin/registration/remove`, { form: { node: nodes.alice, confirm: 'yes' } });
    assert.equal(withoutCsrf.status(), 403);
    assert.match(await withoutCsrf.text(), /CSRF/);
    const wrongCsrf = await context.request.post(`${app.httpUrl}/admin/registration/test-push`, { form: { node: nodes.alice, csrf: 'guessed' } });
    assert.equal(wrongCsrf.status(), 403);
    assert.ok(await app.server.store.getByNode(nodes.alice), 'still registered');
    const anonymous = await fetch(`${app.httpUrl}/admin/registration?node=${nodes.alice}`, { redirect: 'manual' });
    assert.equal(anonymous.status, 303, 'pages without a session send you to sign in');
  });

  test('remove asks for confirmation, then removes the registration', async () => {
    await page.goto(`${app.httpUrl}/admin/registration?node=${encodeURIComponent(nodes.alice)}`);
    await Promise.all([page.waitForNavigation(), page.click('text=Remove…')]);
    assert.equal(await page.textContent('h1'), 'Remove registration?');
    assert.ok(await app.server.store.getByNode(nodes.alice), 'nothing removed before confirming');
    await shot('8-confirm-remove');
    await Promise.all([page.waitForNavigation(), page.click('button:has-text("Yes, remove it")')]);
    assert.equal(await page.textContent('h1'), 'Removed');
    assert.equal(await app.server.store.getByNode(nodes.alice), undefined);
    await shot('9-removed');
  });

  test('the overview fits a phone screen and counts the test push of the last hour', async () => {
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${app.httpUrl}/admin`);
    const main = await phone.textContent('main') ?? '';
    assert.match(main, /ios\s*apns\s*ok\s*1\s*0/, 'one push, no error in the last hour');
    const overflow = await phone.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth') as number;
    assert.ok(overflow <= 0, `no sideways scrolling on a phone (overflow ${overflow}px)`);
    await shot('10-overview-phone', phone);
    await phone.close();
  });

  test('a registration\'s page shows its Push 2.0 key, or that none is pinned yet', async () => {
    await page.goto(`${app.httpUrl}/admin/registration?node=${encodeURIComponent(nodes.carol)}`);
    const pinned = await page.textContent('main') ?? '';
    assert.match(pinned, new RegExp(`Push 2\\.0 key\\s*${carolPush2Key.publicRaw.toString('base64url')}`), 'the key as stored (base64url of the point)');
    await page.goto(`${app.httpUrl}/admin/registration?node=${encodeURIComponent(nodes.bob)}`);
    assert.match(await page.textContent('main') ?? '', /Push 2\.0 key\s*none yet/);
  });

  test('a test push to a dead token removes the registration like any push, and the page says so', async () => {
    const token = testDeviceToken(5);
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'erin-phone', token, jid: 'erin@example.org' });
    const node = reply.body.split('\n')[1];
    apns.setBehaviour(token, { kind: 'unregistered' });
    await page.goto(`${app.httpUrl}/admin/registration?node=${encodeURIComponent(node)}`);
    await Promise.all([page.waitForNavigation(), page.click('button:has-text("Send test push")')]);
    assert.equal(await page.textContent('h1'), 'Registration removed');
    assert.match(await page.textContent('#test-result') ?? '', /token dead \(HTTP 410\)/);
    assert.match(await page.textContent('#removed') ?? '', /this token is dead, so the registration .* was removed/);
    assert.equal(await app.server.store.getByNode(node), undefined, 'the registration is gone');
    const metrics = await (await fetch(`${app.httpUrl}/metrics`)).text();
    assert.match(metrics, /^push_appserver_registrations_total\{app="ios",dialect="http",action="token_dead"\} 1$/m);
    await shot('11-test-push-dead-token');
  });
});
