/**
 * FCM HTTP v1 end to end: a real Prosody (mod_cloud_notify) publishes to our component, the app
 * server pushes through the fcm provider to the mock FCM (HTTP/2 + TLS) after an OAuth2 exchange
 * with the mock token endpoint. Dead tokens remove registrations; 429/503 are retried later.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { TestAppServer } from '../support/app-server.ts';
import { startMockFcm, type MockFcm } from '../support/mock-fcm.ts';
import { prosodyMissing } from '../support/prosody.ts';
import { publishIq, startPushStack, type PushStack } from '../support/push-stack.ts';
import { rejectionOf, type TestClient } from '../support/xmpp-client.ts';

const skip = prosodyMissing();

const fcmToken = (name: string) => `cHVzaC1hcHBzZXJ2ZXItdGVzdA:APA91bF-integration_${name}_0123456789abcdefghijklmnopqrstuvwxyz`;

describe('FCM through real Prosody', { skip, timeout: 120_000 }, () => {
  let stack: PushStack;
  let mock: MockFcm;
  let app: TestAppServer;
  let bob: TestClient;

  before(async () => {
    mock = await startMockFcm({ projectId: 'xmpp-push-it' });
    stack = await startPushStack(`
      [apps.android]
      provider = "fcm"
      service_account_file = ${JSON.stringify(mock.account.file)}
      endpoint = ${JSON.stringify(mock.endpoint)}
      ca_file = ${JSON.stringify(mock.caFile)}
      ttl = 3600
      collapse_key = "xmpp-wakeup"
    `);
    ({ app, bob } = stack);
  });

  after(async () => {
    await stack?.stop();
    await mock?.close();
  });

  const offlineUserWithPush = (user: string, token: string) => stack.offlineUserWithPush(user, 'android', token);

  const requestsFor = (token: string) => mock.requests.filter((request) => request.token === token);

  test('a message to an offline account makes exactly one FCM delivery with the configured fields', async () => {
    const token = fcmToken('alice');
    const { node } = await offlineUserWithPush('alice', token);
    await bob.sendMessage('alice@localhost', 'are you there?');
    await app.waitForCount(new RegExp(`pushed app=android node=${node}`), 1);
    // A later event on the same path: a duplicate of the first push would have reached the mock
    // before the second message's push did.
    await bob.sendMessage('alice@localhost', 'still there?');
    await app.waitForCount(new RegExp(`pushed app=android node=${node}`), 2);
    const delivered = await waitForTokenRequests(token, 2);
    assert.equal(delivered.length, 2, 'one FCM request per message, no duplicate');
    assert.equal(app.countLog(new RegExp(`push will be retried(?=.* node=${node}(\\s|$))`)), 0);
    const [request] = delivered;
    assert.equal(request.status, 200);
    assert.equal(request.path, '/v1/projects/xmpp-push-it/messages:send');
    assert.match(String(request.headers.authorization), /^Bearer ya29\.mock-access-token-/);
    assert.deepEqual(request.body.message.android, { priority: 'HIGH', ttl: '3600s', collapse_key: 'xmpp-wakeup' });
    assert.equal(request.body.message.data['message-count'], '1');
    assert.equal(request.body.message.data.node, node);
    // Privacy: without include_body, Prosody's body preview never reaches Google.
    assert.equal(request.body.message.data['last-message-body'], undefined);
    assert.equal(request.body.message.notification, undefined);
    assert.ok(mock.tokenRequests.some((grant) => grant.ok), 'the OAuth2 assertion was verified by the token endpoint');
  });

  test('a registration with a token that cannot be an FCM token is refused before it reaches Google', async () => {
    const requestsBefore = mock.requests.length;
    const reply = await app.post('/push_appserver/v1/register', { type: 'android', node: 'junk-device', token: 'not a token' });
    assert.equal(reply.status, 400);
    assert.equal(reply.body.split('\n')[0], 'ERROR');
    assert.match(reply.body, /token/);
    assert.equal(await app.server.store.getByNode('junk-device'), undefined);
    assert.equal(mock.requests.length, requestsBefore, 'FCM saw no request');
  });

  test('a dead token removes the registration and the next publish gets item-not-found', async () => {
    const token = fcmToken('carol');
    const { node, secret } = await offlineUserWithPush('carol', token);
    mock.fail(token, 'UNREGISTERED');
    await bob.sendMessage('carol@localhost', 'hello?');
    await app.waitForLog(new RegExp(`token is dead, registration removed app=android node=${node}`));
    assert.equal(await app.server.store.getByNode(node), undefined);
    const error = await rejectionOf(bob.iq(publishIq(node, secret, { summary: false })));
    assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
    assert.equal(requestsFor(token).length, 1, 'the removed registration is not pushed again');
  });

  test('a SENDER_ID_MISMATCH (the wrong Firebase project) keeps the registration and retries', async () => {
    const token = fcmToken('dave');
    const { node } = await offlineUserWithPush('dave', token);
    mock.fail(token, 'SENDER_ID_MISMATCH');
    await bob.sendMessage('dave@localhost', 'hello?');
    await app.waitForLog(new RegExp(`push will be retried(?=.* node=${node}(\\s|$))`));
    assert.ok(await app.server.store.getByNode(node));
  });

  test('a 429 QUOTA_EXCEEDED is retried after its Retry-After and then delivered', async () => {
    const token = fcmToken('erin');
    const { node } = await offlineUserWithPush('erin', token);
    // 3 s: a delay the retry backoff (1 s, 2 s, 4 s, …) never produces, so only the header explains it.
    mock.fail(token, 'QUOTA_EXCEEDED', { retryAfterS: 3, times: 1 });
    await bob.sendMessage('erin@localhost', 'hello?');
    await app.waitForLog(new RegExp(`push will be retried(?=.* node=${node}(\\s|$))(?=.* in_ms=3000(\\s|$))`));
    const [first, retried] = await waitForTokenRequests(token, 2);
    assert.equal(first.status, 429);
    assert.equal(retried.status, 200);
    await app.waitForLog(new RegExp(`retried push(?=.* node=${node}(\\s|$))(?=.* attempt=1(\\s|$))(?=.* result=delivered(\\s|$))`));
    assert.ok(await app.server.store.getByNode(node), 'the registration stays');
  });

  test('a 503 UNAVAILABLE is retried later and then delivered', async () => {
    const token = fcmToken('frank');
    const { node } = await offlineUserWithPush('frank', token);
    mock.fail(token, 'UNAVAILABLE', { retryAfterS: 2, times: 1 });
    await bob.sendMessage('frank@localhost', 'hello?');
    await app.waitForLog(new RegExp(`push will be retried(?=.* node=${node}(\\s|$))`));
    const [first, retried] = await waitForTokenRequests(token, 2);
    assert.equal(first.status, 503);
    assert.equal(retried.status, 200);
    // The same push: its priority, collapse key and data, and the ttl left from the first attempt (not the whole ttl again).
    assert.deepEqual(retried.body.message.data, first.body.message.data);
    assert.equal(first.body.message.data.urgency, 'high');
    const { ttl: firstTtl, ...firstAndroid } = first.body.message.android;
    const { ttl: retriedTtl, ...retriedAndroid } = retried.body.message.android;
    assert.deepEqual(retriedAndroid, firstAndroid);
    assert.deepEqual(firstAndroid, { priority: 'HIGH', collapse_key: 'xmpp-wakeup' });
    assert.equal(firstTtl, '3600s');
    const left = Number.parseInt(retriedTtl, 10);
    assert.ok(left < 3600 && left >= 3500, `the retry's ttl ${retriedTtl}`);
    assert.ok(await app.server.store.getByNode(node), 'the registration stays');
  });

  async function waitForTokenRequests(token: string, count: number) {
    const deadline = Date.now() + 15_000;
    while (requestsFor(token).length < count) {
      if (Date.now() > deadline) assert.fail(`FCM saw ${requestsFor(token).length} requests for the token, expected ${count}`);
      await mock.waitForRequests(mock.requests.length + 1, Math.max(1, deadline - Date.now())).catch(() => {});
    }
    return requestsFor(token);
  }
});
