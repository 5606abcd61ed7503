/**
 * The component attached to a real Prosody: discovery, ping, publishes from mod_cloud_notify and
 * hand-made ones, the error types DESIGN §4 demands, and reconnecting after Prosody restarts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { xml } from '@xmpp/client';
import { prosodyMissing, type ProsodyInstance } from '../support/prosody.ts';
import { publishIq, startPushStack, type PushStack } from '../support/push-stack.ts';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { rejectionOf, type TestClient } from '../support/xmpp-client.ts';

const skip = prosodyMissing();

describe('component attached to Prosody', { skip, timeout: 120_000 }, () => {
  let stack: PushStack;
  let prosody: ProsodyInstance;
  let app: TestAppServer;
  let bob: TestClient;

  before(async () => {
    stack = await startPushStack();
    ({ prosody, app, bob } = stack);
  });

  after(async () => {
    await stack?.stop();
  });

  async function register(node: string, token: string) {
    const reply = await app.post('/push_appserver/v1/register', { type: 'apns', node, token });
    assert.equal(reply.status, 200, reply.body);
    const [ok, pubsubNode, secret] = reply.body.split('\n');
    assert.equal(ok, 'OK');
    return { node: pubsubNode, secret };
  }

  test('disco#info names the push identity and the urn:xmpp:push:0 feature', async () => {
    const reply = await bob.iq(xml('iq', { type: 'get', to: 'push.localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const query = reply.getChild('query')!;
    const identity = query.getChild('identity')!;
    assert.equal(identity.attrs.category, 'pubsub');
    assert.equal(identity.attrs.type, 'push');
    const features = query.getChildren('feature').map((feature) => feature.attrs.var);
    assert.ok(features.includes('urn:xmpp:push:0'));
    assert.ok(features.includes('urn:xmpp:ping'));
  });

  test('disco#info on a command node names it a command-node (XEP-0050 §2.3)', async () => {
    const reply = await bob.iq(xml('iq', { type: 'get', to: 'push.localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: 'v1-register-push' })));
    const identity = reply.getChild('query')!.getChild('identity')!;
    assert.deepEqual([identity.attrs.category, identity.attrs.type], ['automation', 'command-node']);
  });

  test('an XMPP ping gets an empty result', async () => {
    const reply = await bob.iq(xml('iq', { type: 'get', to: 'push.localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    assert.equal(reply.attrs.type, 'result');
  });

  test('an unknown iq payload gets service-unavailable', async () => {
    const error = await rejectionOf(bob.iq(xml('iq', { type: 'get', to: 'push.localhost' }, xml('query', { xmlns: 'jabber:iq:nonsense' }))));
    assert.equal(error.condition, 'service-unavailable');
  });

  test('messages and presences to the component are ignored and it keeps serving', async () => {
    const from = bob.received.length;
    await bob.sendMessage('push.localhost', 'hello component');
    await bob.raw.send(xml('presence', { to: 'push.localhost', type: 'subscribe' }));
    // The ping travels the same stream after them: its answer comes after any reply to them would.
    const reply = await bob.iq(xml('iq', { type: 'get', to: 'push.localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    assert.equal(reply.attrs.type, 'result');
    const answers = bob.received.slice(from).filter((stanza) => stanza.name !== 'iq' && String(stanza.attrs.from ?? '').startsWith('push.localhost'));
    assert.deepEqual(answers.map((stanza) => stanza.toString()), [], 'no reply, error or otherwise, to a message or presence');
  });

  test('a message to an offline account with push enabled makes exactly one provider call for its registration', async () => {
    const { node } = await stack.offlineUserWithPush('alice', 'apns', 'a'.repeat(64));
    await bob.sendMessage('alice@localhost', 'are you there?');
    await app.waitForCount(new RegExp(`pushed app=apns node=${node}`), 1);
    // A second message proves the first was not counted twice and the pipeline stays healthy.
    await bob.sendMessage('alice@localhost', 'second');
    await app.waitForCount(new RegExp(`pushed app=apns node=${node}`), 2);
    assert.equal(app.countLog(new RegExp(`dry-run push node=${node}`)), 2);
    const registration = await app.server.store.getByNode(node);
    assert.equal(registration?.pushCount, 2);
    assert.ok(registration?.lastPushAt);
  });

  test('a publish with a wrong secret is answered cancel/item-not-found and reaches no provider', async () => {
    const { node } = await register('wrong-secret-device', 'b'.repeat(64));
    const error = await rejectionOf(bob.iq(publishIq(node, 'not-the-secret')));
    assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
    assert.equal(app.countLog(new RegExp(`dry-run push node=${node}`)), 0);
  });

  test('a publish without a secret is answered like a wrong secret', async () => {
    const { node } = await register('no-secret-device', 'c'.repeat(64));
    const error = await rejectionOf(bob.iq(publishIq(node, undefined)));
    assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
  });

  test('a publish to an unknown node gets the same answer as a wrong secret', async () => {
    const error = await rejectionOf(bob.iq(publishIq('no-such-node', 'whatever')));
    assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
  });

  test('a publish naming no node is answered modify/bad-request', async () => {
    const malformed = xml('iq', { type: 'set', to: 'push.localhost' },
      xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }, xml('publish', {}, xml('item'))));
    const error = await rejectionOf(bob.iq(malformed));
    assert.deepEqual([error.type, error.condition], ['modify', 'bad-request']);
  });

  test('a hand-made publish with the right secret and no summary is pushed', async () => {
    const { node, secret } = await register('plain-device', 'd'.repeat(64));
    const reply = await bob.iq(publishIq(node, secret, { summary: false }));
    assert.equal(reply.attrs.type, 'result');
    assert.equal(app.countLog(new RegExp(`dry-run push node=${node}`)), 1);
  });

  test('the component reconnects after Prosody restarts and serves publishes again', async () => {
    const { node, secret } = await register('restart-device', 'e'.repeat(64));
    await bob.stop();
    const from = app.logLines.length;
    await prosody.restart();
    await app.waitForLog(/component offline, reconnecting/, 15_000, from);
    await app.waitForLog(/component online/, 30_000, from);
    await stack.reconnectBob();
    bob = stack.bob;
    const reply = await bob.iq(publishIq(node, secret));
    assert.equal(reply.attrs.type, 'result');
  });

  test('a wrong component secret is logged as such, retried only every auth_failure_retry_ms, and the server keeps running', async () => {
    const retryMs = 1500;
    const wrong = await startAppServer({ xmpp: { component_secret: 'definitely-wrong', reconnect_initial_ms: 20, reconnect_max_ms: 40, auth_failure_retry_ms: retryMs }, http: { port: 0 } }, { prosody });
    try {
      const refused = /ERROR .*the XMPP server refused the component secret: check xmpp\.component_secret against the server's component_secret/;
      await wrong.waitForCount(refused, 2);
      const deadline = Date.now() + 15_000;
      // The refusal is logged when Prosody's stream error arrives; the state follows when the stream closes.
      while (wrong.server.xmpp.component.state !== 'auth-failed' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(wrong.server.xmpp.component.state, 'auth-failed');
      const health = await fetch(`${wrong.httpUrl}/push_appserver/v1/health`);
      assert.equal(health.status, 200);
      // The log lines' own timestamps: the second try came no sooner than auth_failure_retry_ms,
      // although the ordinary backoff (20–40 ms) would have tried dozens of times meanwhile.
      const lines = wrong.logLines;
      const [first, second] = lines.map((line, index) => [line, index] as const).filter(([line]) => refused.test(line));
      const at = (line: string) => Date.parse(line.split(' ')[0]);
      assert.ok(at(second[0]) - at(first[0]) >= retryMs - 5, `retried after ${at(second[0]) - at(first[0])} ms`);
      const attemptsBetween = lines.slice(first[1] + 1, second[1]).filter((line) => /connected, opening stream/.test(line)).length;
      assert.equal(attemptsBetween, 1, 'exactly one connection attempt between the two refusals');
    } finally {
      await wrong.stop();
    }
  });
});
