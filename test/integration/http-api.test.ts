/**
 * The original's HTTP API, as a client speaks it: form POSTs, text answers whose first line is OK
 * or ERROR. The app server runs for real (SQLite, log provider); no XMPP server is needed here.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { startMockPushEndpoint, type MockPushEndpoint } from '../support/mock-push-endpoint.ts';
import { closedPort, type ClosedPort } from '../support/ports.ts';

const V1 = '/push_appserver/v1';
const ADMIN_TOKEN = 'admin-secret-of-at-least-32-characters';

describe('HTTP API v1', () => {
  let app: TestAppServer;
  let debugApp: TestAppServer;

  before(async () => {
    app = await startAppServer();
    debugApp = await startAppServer({ http: { debug: true, admin_token: ADMIN_TOKEN } });
  });

  after(async () => {
    await app?.stop();
    await debugApp?.stop();
  });

  test('register answers OK, the node and a secret', async () => {
    const reply = await app.post(`${V1}/register`, { type: 'apns', node: 'DEV-1', token: 'f'.repeat(64) });
    assert.equal(reply.status, 200);
    const [ok, node, secret] = reply.body.split('\n');
    assert.equal(ok, 'OK');
    assert.equal(node, 'DEV-1');
    assert.match(secret, /^[0-9a-f]{64}$/);
  });

  test('registering again with the same token is idempotent', async () => {
    const first = await app.post(`${V1}/register`, { type: 'fcm', node: 'DEV-2', token: 'token-2' });
    const second = await app.post(`${V1}/register`, { type: 'fcm', node: 'DEV-2', token: 'token-2' });
    assert.equal(second.body, first.body);
  });

  test('registering with a different token never returns the old secret', async () => {
    const first = (await app.post(`${V1}/register`, { type: 'fcm', node: 'DEV-3', token: 'token-3' })).body.split('\n');
    const second = (await app.post(`${V1}/register`, { type: 'fcm', node: 'DEV-3', token: 'token-3-other' })).body.split('\n');
    assert.equal(second[0], 'OK');
    assert.notEqual(second[2], first[2]);
    assert.notEqual(second[1], first[1]);
  });

  test('an unknown type is HTTP 400 with a reason', async () => {
    const reply = await app.post(`${V1}/register`, { type: 'blackberry', node: 'x', token: 'y' });
    assert.equal(reply.status, 400);
    assert.match(reply.body, /^ERROR\n.*blackberry/);
  });

  test('a missing field is HTTP 400 naming it', async () => {
    const reply = await app.post(`${V1}/register`, { type: 'apns', node: 'x' });
    assert.equal(reply.status, 400);
    assert.match(reply.body, /^ERROR\n.*token/);
  });

  test('an oversized field is HTTP 400 and an oversized body 413', async () => {
    const field = await app.post(`${V1}/register`, { type: 'apns', node: 'n'.repeat(300), token: 't' });
    assert.equal(field.status, 400);
    assert.match(field.body, /^ERROR\n.*node/);
    const body = await app.post(`${V1}/register`, { type: 'apns', node: 'n', token: 't'.repeat(100_000) });
    assert.equal(body.status, 413);
    assert.match(body.body, /^ERROR\n/);
  });

  test('a JSON body is refused with 415 and a reason', async () => {
    const response = await fetch(`${app.httpUrl}${V1}/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(response.status, 415);
    assert.match(await response.text(), /^ERROR\n.*x-www-form-urlencoded/);
  });

  test('GET on a POST endpoint is 405 naming the method to use', async () => {
    const response = await fetch(`${app.httpUrl}${V1}/register`);
    assert.equal(response.status, 405);
    assert.equal(response.headers.get('allow'), 'POST');
  });

  test('push with the right secret answers OK and the node', async () => {
    const [, node, secret] = (await app.post(`${V1}/register`, { type: 'apns', node: 'DEV-4', token: 'e'.repeat(64) })).body.split('\n');
    const reply = await app.post(`${V1}/push`, { node, secret });
    assert.equal(reply.status, 200);
    assert.equal(reply.body, `OK\n${node}`);
    assert.equal(app.countLog(new RegExp(`dry-run push node=${node}`)), 1);
  });

  test('push with a wrong secret or an unknown node is the same ERROR', async () => {
    const [, node] = (await app.post(`${V1}/register`, { type: 'apns', node: 'DEV-5', token: 'd'.repeat(64) })).body.split('\n');
    const wrong = await app.post(`${V1}/push`, { node, secret: 'nope' });
    const unknown = await app.post(`${V1}/push`, { node: 'unknown-node', secret: 'nope' });
    assert.equal(wrong.status, 404);
    assert.equal(wrong.body, unknown.body);
    assert.match(wrong.body, /^ERROR\n/);
    assert.equal(app.countLog(new RegExp(`dry-run push node=${node}`)), 0);
  });

  test('unregister answers OK and the node, and the node stops accepting pushes', async () => {
    const [, node, secret] = (await app.post(`${V1}/register`, { type: 'apns', node: 'DEV-6', token: 'c'.repeat(64) })).body.split('\n');
    const reply = await app.post(`${V1}/unregister`, { type: 'apns', node: 'DEV-6' });
    assert.equal(reply.status, 200);
    assert.equal(reply.body, `OK\n${node}`);
    assert.equal((await app.post(`${V1}/push`, { node, secret })).status, 404);
  });

  test('unregistering an unknown node is an ERROR', async () => {
    const reply = await app.post(`${V1}/unregister`, { type: 'apns', node: 'never-registered' });
    assert.equal(reply.status, 404);
    assert.match(reply.body, /^ERROR\n/);
  });

  test('health answers RUNNING, and JSON with component and store state when asked', async () => {
    const plain = await fetch(`${app.httpUrl}${V1}/health`);
    assert.equal(plain.status, 200);
    assert.equal(await plain.text(), 'RUNNING');
    const json = await fetch(`${app.httpUrl}${V1}/health`, { headers: { accept: 'application/json' } });
    const report = await json.json() as { status: string; component: { state: string }; store: { kind: string; state: string }; apps: Record<string, unknown> };
    assert.equal(report.store.kind, 'sqlite');
    assert.equal(report.store.state, 'ok');
    assert.notEqual(report.component.state, 'online');
    assert.equal(report.status, 'degraded');
    assert.ok(report.apps.apns);
  });

  test('debug pages are off by default', async () => {
    assert.equal((await fetch(`${app.httpUrl}${V1}/settings`)).status, 403);
    assert.equal((await fetch(`${app.httpUrl}${V1}/settings/DEV-1`)).status, 403);
  });

  test('with debug on, the settings pages need the admin token and escape every value', async () => {
    const evil = '<script>alert(1)</script>';
    await debugApp.post(`${V1}/register`, { type: 'fcm', node: 'evil-node', token: evil });
    assert.equal((await fetch(`${debugApp.httpUrl}${V1}/settings`)).status, 403);
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const list = await fetch(`${debugApp.httpUrl}${V1}/settings`, { headers: auth });
    assert.equal(list.status, 200);
    assert.match(await list.text(), /href="\/push_appserver\/v1\/settings\/evil-node"/);
    const one = await fetch(`${debugApp.httpUrl}${V1}/settings/evil-node`, { headers: auth });
    const html = await one.text();
    assert.equal(one.status, 200);
    assert.ok(!html.includes(evil));
    assert.ok(html.includes('&#60;script&#62;'));
    assert.match(html, /last_successful_push/);
  });

  test('the debug pages never show a secret, shorten tokens and refuse the admin token in the query string', async () => {
    const token = `tok-${'z'.repeat(60)}-end`;
    const [, node, secret] = (await debugApp.post(`${V1}/register`, { type: 'fcm', node: 'page-node', token })).body.split('\n');
    const html = await (await fetch(`${debugApp.httpUrl}${V1}/settings/${node}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    assert.ok(!html.includes(secret));
    assert.ok(!html.includes(token));
    assert.match(html, /tok-zzzz…-end/);
    assert.equal((await fetch(`${debugApp.httpUrl}${V1}/settings?token=${ADMIN_TOKEN}`)).status, 403);
    assert.equal((await fetch(`${debugApp.httpUrl}${V1}/settings`, { headers: { authorization: 'Bearer wrong' } })).status, 403);
  });

  test('an unknown path is 404 and the server keeps serving', async () => {
    assert.equal((await fetch(`${app.httpUrl}/nope`)).status, 404);
    assert.equal((await fetch(`${app.httpUrl}${V1}/health`)).status, 200);
  });
});

describe('HTTP API v1 push on transient trouble', () => {
  let app: TestAppServer;
  let service: MockPushEndpoint;
  let unreachable: ClosedPort;

  before(async () => {
    service = await startMockPushEndpoint({ tls: false });
    unreachable = await closedPort();
    app = await startAppServer(`
      [apps.up]
      provider = "unifiedpush"
      allow_http = true
      allow_private = true
    `);
  });

  after(async () => {
    await app?.stop();
    await service?.close();
    await unreachable?.release();
  });

  async function registered(node: string, endpoint: string): Promise<{ node: string; secret: string }> {
    const reply = await app.post(`${V1}/register`, { type: 'up', node, token: endpoint });
    assert.equal(reply.status, 200, reply.body);
    const [, pubsubNode, secret] = reply.body.split('\n');
    return { node: pubsubNode, secret };
  }

  for (const status of [429, 503]) {
    test(`a push service answering ${status} with Retry-After 7 makes push answer 503 with Retry-After 7`, async () => {
      const endpoint = service.endpoint([{ status, retryAfter: 7 }]);
      const device = await registered(`busy-${status}`, endpoint);
      const reply = await app.post(`${V1}/push`, device);
      assert.equal(reply.status, 503);
      assert.equal(reply.headers.get('retry-after'), '7');
      assert.match(reply.body, new RegExp(`^ERROR\\n.*${status}`));
      assert.equal(service.requestsTo(endpoint).length, 1, 'the push service was asked');
    });
  }

  test('an unreachable push service makes push answer 503 with a Retry-After of at least a second', async () => {
    const device = await registered('unreachable', `http://127.0.0.1:${unreachable.port}/up`);
    const reply = await app.post(`${V1}/push`, device);
    assert.equal(reply.status, 503);
    assert.match(reply.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
    assert.match(reply.body, /^ERROR\n/);
    assert.ok(await app.server.store.getByNode(device.node), 'transient trouble keeps the registration');
  });
});
