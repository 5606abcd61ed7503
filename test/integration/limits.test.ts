/**
 * The abuse limits and the expiry of registrations, through the real HTTP API: HTTP registrations
 * per client address (X-Forwarded-For counting only with http.trust_proxy), 429 with Retry-After,
 * and the background sweep removing what was neither renewed nor pushed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';

const V1 = '/push_appserver/v1';
const DAY = 24 * 3600 * 1000;

async function register(app: TestAppServer, node: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${app.httpUrl}${V1}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams({ type: 'fcm', node, token: `token-${node}` }).toString(),
  });
  return { status: response.status, body: await response.text(), retryAfter: response.headers.get('retry-after') };
}

describe('limits and expiry', () => {
  let direct: TestAppServer;
  let proxied: TestAppServer;
  let expiring: TestAppServer;

  before(async () => {
    direct = await startAppServer({ registration: { http_per_ip_per_minute: 3 } });
    proxied = await startAppServer({ http: { trust_proxy: true }, registration: { http_per_ip_per_minute: 2 } });
    expiring = await startAppServer({ registration: { expire_days: 1 } });
  });

  after(async () => {
    await direct?.stop();
    await proxied?.stop();
    await expiring?.stop();
  });

  test('HTTP registrations over the per-address limit get 429 with Retry-After, and one warning line', async () => {
    for (let i = 0; i < 3; i += 1) assert.equal((await register(direct, `ip-${i}`)).status, 200);
    const refused = await register(direct, 'ip-3');
    assert.equal(refused.status, 429);
    assert.match(refused.body, /^ERROR\n/);
    assert.ok(Number(refused.retryAfter) >= 1, `Retry-After: ${refused.retryAfter}`);
    // Without trust_proxy a forged X-Forwarded-For changes nothing.
    assert.equal((await register(direct, 'ip-4', { 'x-forwarded-for': '203.0.113.9' })).status, 429);
    assert.equal(direct.countLog(/HTTP registrations refused/), 1);
    // Other endpoints keep serving.
    assert.equal((await fetch(`${direct.httpUrl}${V1}/health`)).status, 200);
  });

  test('behind a trusted proxy the address the proxy appended is what counts', async () => {
    const client = (address: string) => ({ 'x-forwarded-for': `198.51.100.77, ${address}` });
    assert.equal((await register(proxied, 'p-1', client('192.0.2.1'))).status, 200);
    assert.equal((await register(proxied, 'p-2', client('192.0.2.1'))).status, 200);
    assert.equal((await register(proxied, 'p-3', client('192.0.2.1'))).status, 429);
    assert.equal((await register(proxied, 'p-4', client('192.0.2.2'))).status, 200);
  });

  test('registrations neither renewed nor pushed for expire_days disappear and fresh ones do not', async () => {
    const store = expiring.server.store;
    const node = async (name: string) => (await register(expiring, name)).body.split('\n')[1];
    const stale = await node('stale');
    const fresh = await node('fresh');
    const pushed = await node('pushed');
    await store.renew(stale, Date.now() - 2 * DAY);
    await store.renew(pushed, Date.now() - 2 * DAY);
    store.recordDelivery(pushed, Date.now());
    assert.equal(await expiring.server.expiry.sweep(), 1);
    assert.equal(await store.getByNode(stale), undefined);
    assert.ok(await store.getByNode(fresh));
    assert.ok(await store.getByNode(pushed));
  });
});
