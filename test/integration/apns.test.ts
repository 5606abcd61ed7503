/**
 * APNS end to end: a message to an offline account on a real Prosody (mod_cloud_notify) becomes a
 * XEP-0357 publish to our component, and an HTTP/2 request to the mock APNS with the topic, push
 * type, priority, expiration, collapse id and payload the app's configuration asks for, with token
 * auth and with certificate auth. Also: a 410 removes the registration; VoIP and silent modes; the
 * provider token is reused across pushes and replaced on expiry; rejected credentials show in /health.
 */
import assert from 'node:assert/strict';
import { after, before, describe, mock, test } from 'node:test';
import { xml } from '@xmpp/client';
import { startProsody, prosodyMissing, type ProsodyInstance } from '../support/prosody.ts';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { connectClient, iqErrorOf, type TestClient } from '../support/xmpp-client.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns, type MockApnsRequest } from '../support/mock-apns.ts';
import { testPki } from '../support/tls.ts';
import { eventually } from '../support/eventually.ts';

const skip = prosodyMissing();
const TOPIC = 'org.example.chat';
const CERT_TOPIC = 'org.example.certchat';

function publish(node: string, secret: string) {
  return xml('iq', { type: 'set', to: 'push.localhost' },
    xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' },
      xml('publish', { node }, xml('item', {}, xml('notification', { xmlns: 'urn:xmpp:push:0' },
        xml('x', { xmlns: 'jabber:x:data', type: 'form' },
          xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'urn:xmpp:push:summary')),
          xml('field', { var: 'message-count' }, xml('value', {}, '1')))))),
      xml('publish-options', {}, xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
        xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/pubsub#publish-options')),
        xml('field', { var: 'secret' }, xml('value', {}, secret))))));
}

/** Waits until the mock has seen `count` requests for this device token; returns them. */
function pushesTo(apns: MockApns, token: string, count = 1): Promise<MockApnsRequest[]> {
  return eventually(() => {
    const seen = apns.requests.filter((request) => request.token === token && request.status !== 0);
    return seen.length >= count ? seen : undefined;
  }, `${count} push(es) to ${token.slice(0, 8)}…`);
}

describe('APNS through Prosody', { skip, timeout: 180_000 }, () => {
  const key = createTestApnsKey();
  const unknownKey = createTestApnsKey({ keyId: 'UNKNOWN001' });
  let tokenApns: MockApns;
  let certApns: MockApns;
  let prosody: ProsodyInstance;
  let app: TestAppServer;
  let bob: TestClient;
  let nextToken = 1;
  const users = ['alice', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank', 'ivy', 'jack'];

  before(async () => {
    tokenApns = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC] });
    certApns = await startMockApns({ auth: 'certificate', topics: [CERT_TOPIC] });
    const identity = testPki().clientCertificate('integration-apns');
    const tokenAuth = { endpoint: tokenApns.origin, ca_file: tokenApns.caFile, key_file: key.keyFile, key_id: key.keyId, team_id: key.teamId };
    prosody = await startProsody();
    for (const user of [...users, 'bob']) await prosody.register(user, 'localhost', `${user}-pw`);
    app = await startAppServer({
      apps: {
        ios: { provider: 'apns', topic: TOPIC, ttl: 3600, collapse_id: 'xmpp-push', ...tokenAuth },
        iosbadge: { provider: 'apns', topic: TOPIC, ttl: 3600, collapse_id: 'xmpp-push', badge: true, alert_text: 'You have a message', ...tokenAuth },
        ioscert: { provider: 'apns', topic: CERT_TOPIC, ttl: 600, endpoint: certApns.origin, ca_file: certApns.caFile, cert_file: identity.certFile, key_file: identity.keyFile },
        iosvoip: { provider: 'apns', topic: TOPIC, push_type: 'voip', ...tokenAuth },
        iossilent: { provider: 'apns', topic: TOPIC, priority: 'silent', ...tokenAuth },
        iosbadkey: { provider: 'apns', topic: TOPIC, ...tokenAuth, key_file: unknownKey.keyFile, key_id: unknownKey.keyId },
      },
    }, { prosody });
    await app.waitOnline();
    bob = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
  });

  after(async () => {
    mock.timers.reset();
    await bob?.stop();
    await app?.stop();
    await prosody?.stop();
    await tokenApns?.close();
    await certApns?.close();
  });

  /** Registers a device for `appName`, enables push for `user` and takes the account offline. */
  async function offlineDevice(user: string, appName: string) {
    const token = testDeviceToken(nextToken++);
    const reply = await app.post('/push_appserver/v1/register', { type: appName, node: `${user}-${appName}-phone`, token });
    assert.equal(reply.status, 200, reply.body);
    const [ok, node, secret] = reply.body.split('\n');
    assert.equal(ok, 'OK');
    const client = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: user, password: `${user}-pw` });
    await client.enablePush('push.localhost', node, secret);
    await client.stop();
    return { token, node, secret, jid: `${user}@localhost` };
  }

  function assertExpiration(request: MockApnsRequest, ttl: number) {
    const expiration = Number(request.headers['apns-expiration']);
    const expected = Math.floor(Date.now() / 1000) + ttl;
    assert.ok(Math.abs(expiration - expected) <= 60, `apns-expiration ${expiration} should be about now + ${ttl} (${expected})`);
  }

  test('with token auth, a message to an offline account reaches APNS as an alert with topic, priority, expiration, collapse id and a JWT', async () => {
    const device = await offlineDevice('alice', 'ios');
    await bob.sendMessage(device.jid, 'meet me at noon');
    const [request] = await pushesTo(tokenApns, device.token);
    assert.equal(request.status, 200);
    assert.equal(request.path, `/3/device/${device.token}`);
    assert.equal(request.headers['apns-topic'], TOPIC);
    assert.equal(request.headers['apns-push-type'], 'alert');
    assert.equal(request.headers['apns-priority'], '10');
    assert.equal(request.headers['apns-collapse-id'], 'xmpp-push');
    assertExpiration(request, 3600);
    // Prosody announces a (dummy) body, so `priority = auto` shows an alert; never the real text.
    assert.deepEqual(request.payload, { aps: { alert: { body: 'New Message' }, 'mutable-content': 1 } });
    assert.doesNotMatch(request.body, /noon/);
    assert.equal(request.jwt?.header.kid, key.keyId);
    assert.equal(request.jwt?.claims.iss, key.teamId);
    // The delivery is recorded once APNS's answer is back, which is after the mock saw the request.
    await eventually(async () => ((await app.server.store.getByNode(device.node))?.pushCount === 1 ? true : undefined), 'the delivery to be recorded');
  });

  test('a push retried after a 503 is the same push: alert push type, priority, alert text, badge, collapse id and the first attempt\'s expiration', async () => {
    const device = await offlineDevice('jack', 'iosbadge');
    // Retry-After 2 s: the retry is sent in a later second than the first attempt, so an expiration computed anew would differ.
    tokenApns.setBehaviour(device.token, [{ kind: 'server-error', status: 503, retryAfterS: 2 }, { kind: 'ok' }]);
    await bob.sendMessage(device.jid, 'meet me at noon');
    const [first, retried] = await pushesTo(tokenApns, device.token, 2);
    assert.deepEqual([first.status, retried.status], [503, 200]);
    assert.equal(retried.headers['apns-push-type'], 'alert', 'an alert stays an alert');
    for (const header of ['apns-push-type', 'apns-priority', 'apns-collapse-id', 'apns-expiration', 'apns-topic']) {
      assert.equal(retried.headers[header], first.headers[header], header);
    }
    assertExpiration(first, 3600);
    assert.deepEqual(retried.payload, first.payload);
    assert.deepEqual(first.payload, { aps: { alert: { body: 'You have a message' }, badge: 1, 'mutable-content': 1 } });
  });

  test('a token that is not 64 to 200 hex digits is refused at registration, so it never reaches APNS', async () => {
    const before = tokenApns.requests.length;
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'junk-phone', token: 'not-a-device-token' });
    assert.equal(reply.body.split('\n')[0], 'ERROR');
    assert.match(reply.body, /hex/);
    assert.equal(tokenApns.requests.length, before);
  });

  test('with certificate auth, the same push goes over a TLS client certificate and carries no JWT', async () => {
    const device = await offlineDevice('carol', 'ioscert');
    await bob.sendMessage(device.jid, 'hello carol');
    const [request] = await pushesTo(certApns, device.token);
    assert.equal(request.status, 200);
    assert.equal(request.clientCertificate, 'integration-apns');
    assert.equal(request.headers.authorization, undefined);
    assert.equal(request.headers['apns-topic'], CERT_TOPIC);
    assert.equal(request.headers['apns-push-type'], 'alert');
    assert.equal(request.headers['apns-priority'], '10');
    assert.equal(request.headers['apns-collapse-id'], undefined);
    assertExpiration(request, 600);
    assert.deepEqual(request.payload, { aps: { alert: { body: 'New Message' }, 'mutable-content': 1 } });
  });

  test('a 410 from APNS removes the registration, and the next publish for it gets item-not-found', async () => {
    const device = await offlineDevice('dave', 'ios');
    tokenApns.setBehaviour(device.token, { kind: 'unregistered' });
    await bob.sendMessage(device.jid, 'are you still there?');
    const [request] = await pushesTo(tokenApns, device.token);
    assert.equal(request.status, 410);
    await eventually(async () => (await app.server.store.getByNode(device.node)) === undefined ? true : undefined, 'the registration to be removed');
    await assert.rejects(bob.iq(publish(device.node, device.secret)), (error: unknown) => {
      const { type, condition } = iqErrorOf(error);
      assert.deepEqual([type, condition], ['cancel', 'item-not-found']);
      return true;
    });
    assert.equal(tokenApns.requests.filter((r) => r.token === device.token).length, 1, 'nothing more was sent for the dead token');
  });

  test('push_type = "voip" pushes to the .voip topic with push type voip and priority 10', async () => {
    const device = await offlineDevice('erin', 'iosvoip');
    await bob.sendMessage(device.jid, 'ring ring');
    const [request] = await pushesTo(tokenApns, device.token);
    assert.equal(request.status, 200);
    assert.equal(request.headers['apns-topic'], `${TOPIC}.voip`);
    assert.equal(request.headers['apns-push-type'], 'voip');
    assert.equal(request.headers['apns-priority'], '10');
    assert.equal(request.payload?.['last-message-body'], undefined);
    assert.doesNotMatch(request.body, /ring ring/);
  });

  test('priority = "silent" sends a background push with priority 5 and content-available', async () => {
    const device = await offlineDevice('frank', 'iossilent');
    await bob.sendMessage(device.jid, 'psst');
    const [request] = await pushesTo(tokenApns, device.token);
    assert.equal(request.status, 200);
    assert.equal(request.headers['apns-topic'], TOPIC);
    assert.equal(request.headers['apns-push-type'], 'background');
    assert.equal(request.headers['apns-priority'], '5');
    assert.deepEqual(request.payload, { aps: { 'content-available': 1 } });
  });

  test('one JWT serves many pushes, is replaced when 40 minutes old, and again when APNS calls it expired', async () => {
    const device = await offlineDevice('gina', 'ios');
    for (let i = 1; i <= 8; i += 1) {
      await bob.sendMessage(device.jid, `message ${i}`);
      await pushesTo(tokenApns, device.token, i);
    }
    const used = new Set((await pushesTo(tokenApns, device.token, 8)).map((r) => r.jwt?.raw));
    assert.equal(used.size, 1, 'the eight pushes of this test carried the same JWT');
    const [firstJwt] = used;
    assert.ok(firstJwt);

    // Both the app server and the mock read Date: move it past the 40-minute refresh point.
    // Restored in `finally`: a failure here must not leave the next tests in a frozen 41 minutes on.
    mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      mock.timers.tick(41 * 60_000);
      await bob.sendMessage(device.jid, 'later');
      const afterRefresh = await pushesTo(tokenApns, device.token, 9);
      const refreshed = afterRefresh[8];
      assert.equal(refreshed.status, 200);
      assert.notEqual(refreshed.jwt?.raw, firstJwt);

      // 25 minutes on, APNS calls the token expired: one new token, one retry, delivered.
      mock.timers.tick(25 * 60_000);
      tokenApns.setBehaviour(device.token, [{ kind: 'expired-provider-token' }, { kind: 'ok' }]);
      await bob.sendMessage(device.jid, 'much later');
      const afterExpiry = await pushesTo(tokenApns, device.token, 11);
      assert.equal(afterExpiry[9].reason, 'ExpiredProviderToken');
      assert.equal(afterExpiry[9].jwt?.raw, refreshed.jwt?.raw);
      assert.equal(afterExpiry[10].status, 200);
      assert.notEqual(afterExpiry[10].jwt?.raw, refreshed.jwt?.raw);
    } finally {
      mock.timers.reset();
    }
    assert.equal(app.server.apps.get('ios')?.provider.status().state, 'ok');
  });

  test('credentials APNS rejects give the publisher a wait error and show the app degraded in /health', async () => {
    const device = await offlineDevice('hank', 'iosbadkey');
    await assert.rejects(bob.iq(publish(device.node, device.secret)), (error: unknown) => {
      const { type, condition } = iqErrorOf(error);
      assert.deepEqual([type, condition], ['wait', 'resource-constraint']);
      return true;
    });
    const [request] = await pushesTo(tokenApns, device.token);
    assert.deepEqual([request.status, request.reason], [403, 'InvalidProviderToken']);
    const health = await fetch(`${app.httpUrl}/push_appserver/v1/health`, { headers: { accept: 'application/json' } });
    const report = await health.json() as { status: string; apps: Record<string, { state: string; detail?: string }> };
    assert.equal(report.status, 'degraded');
    assert.equal(report.apps.iosbadkey.state, 'degraded');
    assert.match(report.apps.iosbadkey.detail ?? '', /InvalidProviderToken/);
    assert.equal(report.apps.ios.state, 'ok');
    assert.ok(app.countLog(/ERROR .*rejected our credentials/) >= 1, 'the rejection is logged loudly');
  });
});
