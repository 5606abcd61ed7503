/**
 * WebPush and UnifiedPush end to end: a real Prosody (mod_cloud_notify) publishes to our component,
 * the app server pushes through the webpush / unifiedpush provider to the loopback mock push
 * service, which decrypts WebPush messages with the subscription's private key and verifies VAPID.
 * Dead endpoints remove registrations; 429/503 are retried later by the dispatcher's retry loop.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateVapidKeys } from '../../src/providers/web-push-crypto.ts';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { startMockPushEndpoint, type MockAnswer, type MockPushEndpoint } from '../support/mock-push-endpoint.ts';
import { prosodyMissing } from '../support/prosody.ts';
import { publishIq, startPushStack, type PushStack } from '../support/push-stack.ts';
import { testPki } from '../support/tls.ts';
import { rejectionOf, type TestClient } from '../support/xmpp-client.ts';

const skip = prosodyMissing();

interface Kind {
  app: 'web' | 'up';
  /** A fresh endpoint at the mock, as the device would hand it over: its registration token. */
  newToken(answers?: MockAnswer[]): { token: string; endpoint: string };
  mock(): MockPushEndpoint;
}

describe('WebPush and UnifiedPush through real Prosody', { skip, timeout: 120_000 }, () => {
  const vapid = generateVapidKeys();
  let stack: PushStack;
  let webMock: MockPushEndpoint;
  let upMock: MockPushEndpoint;
  let app: TestAppServer;
  let bob: TestClient;
  let userCount = 0;

  const kinds: Record<'webpush' | 'unifiedpush', Kind> = {
    webpush: {
      app: 'web',
      newToken(answers) {
        const subscription = webMock.subscription(answers);
        return { token: subscription.token, endpoint: subscription.endpoint };
      },
      mock: () => webMock,
    },
    unifiedpush: {
      app: 'up',
      newToken(answers = [{ status: 200 }]) {
        const endpoint = upMock.endpoint(answers);
        return { token: endpoint, endpoint };
      },
      mock: () => upMock,
    },
  };

  before(async () => {
    webMock = await startMockPushEndpoint({ tls: true, vapidPublicKey: vapid.publicKey });
    upMock = await startMockPushEndpoint({ tls: false });
    stack = await startPushStack(`
      [apps.web]
      provider = "webpush"
      vapid_public_key = "${vapid.publicKey}"
      vapid_private_key = "${vapid.privateKey}"
      subject = "mailto:ops@push.localhost"
      ttl = 3600
      allow_private = true
      ca_file = ${JSON.stringify(testPki().caFile)}

      [apps.up]
      provider = "unifiedpush"
      ttl = 600
      allow_http = true
      allow_private = true
    `);
    ({ app, bob } = stack);
  });

  after(async () => {
    await stack?.stop();
    await webMock?.close();
    await upMock?.close();
  });

  /** A new account that registered its device with the app server, enabled push and went offline. */
  async function offlineUserWithPush(appName: string, token: string): Promise<{ user: string; node: string; secret: string }> {
    userCount += 1;
    const user = `user${userCount}`;
    return { user, ...(await stack.offlineUserWithPush(user, appName, token)) };
  }

  for (const [name, kind] of Object.entries(kinds)) {
    test(`${name}: a message to an offline account makes exactly one delivery with the node and message count`, async () => {
      const { token, endpoint } = kind.newToken();
      const { user, node } = await offlineUserWithPush(kind.app, token);
      await bob.sendMessage(`${user}@localhost`, 'are you there?');
      await app.waitForCount(new RegExp(`pushed app=${kind.app} node=${node}(\\s|$)`), 1);
      // A later event on the same path: a duplicate of the first push would have reached the mock
      // before the second message's push did.
      await bob.sendMessage(`${user}@localhost`, 'still there?');
      await app.waitForCount(new RegExp(`pushed app=${kind.app} node=${node}(\\s|$)`), 2);
      const delivered = await kind.mock().waitForRequests(endpoint, 2);
      assert.equal(delivered.length, 2, 'one request per message, no duplicate');
      assert.equal(app.countLog(new RegExp(`push will be retried(?=.* node=${node}(\\s|$))`)), 0);
      const [request] = delivered;
      assert.equal(request.decryptError, undefined);
      // Prosody announces a dummy body for a chat message; without include_body it stays here.
      assert.deepEqual(request.content, { node, 'message-count': 1 });
      assert.equal(request.headers.ttl, kind.app === 'web' ? '3600' : '600');
      assert.equal(request.headers.urgency, 'high');
      if (kind.app === 'web') {
        assert.equal(request.vapidError, undefined);
        assert.equal(request.vapid?.sub, 'mailto:ops@push.localhost');
        assert.equal(request.headers['content-encoding'], 'aes128gcm');
        assert.notEqual(request.body.toString('utf8'), request.plaintext, 'the push service sees only ciphertext');
      }
    });

    test(`${name}: an endpoint answering ${kind.app === 'web' ? 410 : 404} removes the registration and the next publish gets item-not-found`, async () => {
      const { token, endpoint } = kind.newToken([{ status: kind.app === 'web' ? 410 : 404 }]);
      const { user, node, secret } = await offlineUserWithPush(kind.app, token);
      await bob.sendMessage(`${user}@localhost`, 'hello?');
      await app.waitForLog(new RegExp(`token is dead, registration removed app=${kind.app} node=${node}`));
      assert.equal(await app.server.store.getByNode(node), undefined);
      const error = await rejectionOf(bob.iq(publishIq(node, secret, { summary: false })));
      assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
      assert.equal(kind.mock().requestsTo(endpoint).length, 1, 'the removed registration is not pushed again');
    });

    for (const status of [429, 503]) {
      test(`${name}: a ${status} with Retry-After 3 is retried after those 3 seconds and then delivered`, async () => {
        // 3 s: a delay the retry backoff (1 s, 2 s, 4 s, …) never produces, so only the header explains it.
        const { token, endpoint } = kind.newToken([{ status, retryAfter: 3 }, { status: 201 }]);
        const { user, node } = await offlineUserWithPush(kind.app, token);
        await bob.sendMessage(`${user}@localhost`, 'hello?');
        await app.waitForLog(new RegExp(`push will be retried(?=.* node=${node}(\\s|$))(?=.* in_ms=3000(\\s|$))`));
        const [first, retried] = await kind.mock().waitForRequests(endpoint, 2);
        assert.equal(first.status, status);
        assert.equal(retried.status, 201);
        assert.equal(retried.decryptError, undefined);
        assert.equal(retried.content?.node, node);
        await app.waitForLog(new RegExp(`retried push(?=.* node=${node}(\\s|$))(?=.* attempt=1(\\s|$))(?=.* result=delivered(\\s|$))`));
        assert.ok(await app.server.store.getByNode(node), 'the registration stays');
      });
    }
  }

  for (const [name, kind] of Object.entries(kinds)) {
    for (const status of [301, 302, 307, 308]) {
      test(`${name}: a ${status} redirect is never followed, and the publish gets wait/not-acceptable`, async () => {
        // The redirect points at another endpoint of the same mock: following it would show there.
        const elsewhere = kind.newToken();
        const { token, endpoint } = kind.newToken([{ status, headers: { location: elsewhere.endpoint } }]);
        const { node, secret } = await offlineUserWithPush(kind.app, token);
        const error = await rejectionOf(bob.iq(publishIq(node, secret)));
        assert.deepEqual([error.type, error.condition], ['wait', 'not-acceptable']);
        assert.equal(kind.mock().requestsTo(endpoint).length, 1);
        assert.equal(kind.mock().requestsTo(elsewhere.endpoint).length, 0, 'nothing went to the redirect target');
        assert.ok(await app.server.store.getByNode(node), 'a redirect does not remove the registration');
      });
    }
  }

  test('webpush: a registration whose token is not a PushSubscription is refused', async () => {
    const reply = await app.post('/push_appserver/v1/register', { type: 'web', node: 'junk-device', token: '{"endpoint":"https://push.example.net/x"}' });
    assert.notEqual(reply.body.split('\n')[0], 'OK');
    assert.match(reply.body, /keys/);
  });

  test('unifiedpush: a registration of an endpoint on a private network is refused when the app does not allow it', async () => {
    const guarded = await startAppServer(`
      [apps.up]
      provider = "unifiedpush"
    `);
    try {
      const reply = await guarded.post('/push_appserver/v1/register', { type: 'up', node: 'probe', token: 'https://169.254.169.254/latest/meta-data' });
      assert.notEqual(reply.body.split('\n')[0], 'OK');
      assert.match(reply.body, /link-local/);
    } finally {
      await guarded.stop();
    }
  });
});
