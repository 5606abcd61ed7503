/**
 * Push 2.0 (urn:xmpp:push2:0) end to end with the real user's-server side: a real Prosody 0.12
 * with the real mod_push2 (../shared/interop/prosody-mod_push2), a client account that registers
 * with us (ad-hoc or HTTP), enables Push 2.0 with its own UA key, auth secret and JWT key, and goes
 * offline; a message from a second account makes mod_push2 encrypt and sign a notification, which
 * our component relays to the mock APNS / FCM / WebPush endpoint. The test decrypts what arrived
 * with the UA private key (RFC 8291, the mock endpoint's own implementation, not src/) back to the
 * forwarded message. Refusals are sent by hand from a client account (a real path through
 * Prosody) and answered with message errors; none of them reaches a provider.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { xml } from '@xmpp/client';
import { parse } from 'ltx';
import { generateVapidKeys } from '../../src/providers/web-push-crypto.ts';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns, type MockApnsRequest } from '../support/mock-apns.ts';
import { startMockFcm, type MockFcm } from '../support/mock-fcm.ts';
import { decryptPushMessage, startMockPushEndpoint, type MockPushEndpoint } from '../support/mock-push-endpoint.ts';
import { modPush2Missing, modPush2ProsodyOptions, push2Enable } from '../support/mod-push2.ts';
import { startProsody, type ProsodyInstance } from '../support/prosody.ts';
import { es256Jwt, jwtKeyPair, push2Claims, push2Message, userAgentKeys, type JwtKeyPair, type UserAgentKeys } from '../support/push2.ts';
import { testPki } from '../support/tls.ts';
import { connectClient, type TestClient } from '../support/xmpp-client.ts';
import { eventually } from '../support/eventually.ts';

const skip = modPush2Missing();
const HOME = 'localhost';
const FOREIGN = 'other.localhost';
const PUSH = 'push.localhost';
const AUDIENCE = `https://${PUSH}`;
const TOPIC = 'org.example.push2';
const ALERT = 'You have a new message';
const COMMANDS = 'http://jabber.org/protocol/commands';
const PUSH2_NS = 'urn:xmpp:push2:0';
const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

const fcmToken = (name: string) => `cHVzaDI:APA91bF-push2_${name}_0123456789abcdefghijklmnopqrstuvwxyz`;

/** The urn:xmpp:sce:1 envelope mod_push2 encrypts → the forwarded message's body. */
function forwardedBody(plaintext: string): string | undefined {
  const envelope = parse(plaintext);
  assert.equal(envelope.name, 'envelope');
  assert.equal(envelope.attrs.xmlns, 'urn:xmpp:sce:1');
  const message = envelope.getChild('content')?.getChild('forwarded', 'urn:xmpp:forward:0')?.getChild('message');
  return message?.getChildText('body') ?? undefined;
}

interface Device {
  user: string;
  node: string;
  client: string;
  ua: UserAgentKeys;
  jwt: JwtKeyPair;
}

describe('Push 2.0 through a real Prosody with mod_push2', { skip, timeout: 240_000 }, () => {
  const apnsKey = createTestApnsKey();
  const vapid = generateVapidKeys();
  let apns: MockApns;
  let fcm: MockFcm;
  let web: MockPushEndpoint;
  let prosody: ProsodyInstance;
  let app: TestAppServer;
  let bob: TestClient;
  let mallory: TestClient;
  let deviceCount = 0;

  before(async () => {
    apns = await startMockApns({ keys: [{ keyId: apnsKey.keyId, teamId: apnsKey.teamId, key: apnsKey.privateKey }], topics: [TOPIC] });
    fcm = await startMockFcm({ projectId: 'push2-it' });
    web = await startMockPushEndpoint({ tls: true, vapidPublicKey: vapid.publicKey });
    prosody = await startProsody(modPush2ProsodyOptions({ hosts: [HOME, FOREIGN], componentJid: PUSH }));
    for (const user of ['bob', 'alice', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank', 'ivy']) await prosody.register(user, HOME, `${user}-pw`);
    await prosody.register('mallory', FOREIGN, 'mallory-pw');
    app = await startAppServer({
      push: { retry_max_backoff_s: 1 },
      apps: {
        ios: { provider: 'apns', topic: TOPIC, alert_text: ALERT, endpoint: apns.origin, ca_file: apns.caFile, key_file: apnsKey.keyFile, key_id: apnsKey.keyId, team_id: apnsKey.teamId, push2_stateless: true },
        android: { provider: 'fcm', service_account_file: fcm.account.file, endpoint: fcm.endpoint, ca_file: fcm.caFile },
        web: { provider: 'webpush', vapid_public_key: vapid.publicKey, vapid_private_key: vapid.privateKey, subject: 'mailto:ops@push.localhost', allow_private: true, ca_file: testPki().caFile },
      },
    }, { prosody });
    await app.waitOnline();
    bob = await connectClient({ port: prosody.c2sPort, domain: HOME, username: 'bob', password: 'bob-pw' });
    mallory = await connectClient({ port: prosody.c2sPort, domain: FOREIGN, username: 'mallory', password: 'mallory-pw' });
  });

  after(async () => {
    await bob?.stop();
    await mallory?.stop();
    await app?.stop();
    await prosody?.stop();
    await apns?.close();
    await fcm?.close();
    await web?.close();
  });

  const login = (user: string) => connectClient({ port: prosody.c2sPort, domain: HOME, username: user, password: `${user}-pw` });

  /** Registers over ad-hoc v1-register-push (with push2-key) or HTTP (push2=1); returns the form / lines. */
  async function register(user: string, type: string, token: string, via: 'adhoc' | 'http', jwt: JwtKeyPair): Promise<{ node: string; secret: string; service: string; client: string }> {
    const deviceId = `${user}-device-${deviceCount += 1}`;
    if (via === 'http') {
      const reply = await app.post('/push_appserver/v1/register', { type, node: deviceId, token, push2_key: jwt.publicRaw.toString('base64url'), push2: '1' });
      const lines = reply.body.split('\n');
      assert.equal(reply.status, 200, reply.body);
      assert.equal(lines.length, 4, 'OK, node, secret and the client line');
      return { node: lines[1], secret: lines[2], service: PUSH, client: lines[3] };
    }
    const client = await login(user);
    try {
      const reply = await client.iq(xml('iq', { type: 'set', to: PUSH }, xml('command', { xmlns: COMMANDS, node: 'v1-register-push', action: 'execute' },
        xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
          ...Object.entries({ type, node: deviceId, token, 'push2-key': jwt.publicBase64 }).map(([name, value]) => xml('field', { var: name }, xml('value', {}, value)))))));
      const x = reply.getChild('command', COMMANDS)?.getChild('x', 'jabber:x:data');
      const fields = Object.fromEntries((x?.getChildren('field') ?? []).map((field) => [field.attrs.var, field.getChildText('value') ?? '']));
      return { node: fields.node, secret: fields.secret, service: fields.service, client: fields.client };
    } finally {
      await client.stop();
    }
  }

  /** The client's Push 2.0 <enable/> on its own server, then offline. */
  async function enable(user: string, service: string, clientString: string, ua: UserAgentKeys, jwt: JwtKeyPair): Promise<void> {
    const client = await login(user);
    try {
      await client.iq(push2Enable({ service, client: clientString, ua, jwt, audience: AUDIENCE }));
    } finally {
      await client.stop();
    }
  }

  async function device(user: string, type: string, token: string, via: 'adhoc' | 'http' = 'adhoc', ua: UserAgentKeys = userAgentKeys()): Promise<Device> {
    const jwt = jwtKeyPair();
    const registered = await register(user, type, token, via, jwt);
    assert.equal(registered.service, PUSH);
    assert.equal(registered.client, registered.node);
    await enable(user, registered.service, registered.client, ua, jwt);
    return { user, node: registered.node, client: registered.client, ua, jwt };
  }

  const apnsTo = (token: string) => apns.requests.filter((request) => request.token === token && request.status !== 0);
  const apnsPushes = (token: string, count = 1) => eventually(() => (apnsTo(token).length >= count ? apnsTo(token) : undefined), `${count} APNS request(s)`);
  const fcmTo = (token: string) => fcm.requests.filter((request) => request.token === token);
  const decryptApns = (request: MockApnsRequest, ua: UserAgentKeys) => decryptPushMessage(Buffer.from(String(request.payload?.push2), 'base64'), ua.privateKey, ua.publicKey, ua.authSecret).toString('utf8');
  const providerRequests = () => apns.requests.length + fcm.requests.length + web.requests.length;

  /** Sends a hand-made notification from `sender` and resolves with the message error it earns (or undefined after a delivery). */
  async function notifyByHand(sender: TestClient, parts: Parameters<typeof push2Message>[0]): Promise<{ type?: string; condition?: string; text?: string }> {
    const id = `hand-${Math.random().toString(36).slice(2)}`;
    await sender.raw.send(push2Message({ ...parts, id }));
    const reply = await eventually(() => sender.received.find((stanza) => stanza.name === 'message' && stanza.attrs.id === id), `the answer to ${id}`);
    const error = reply.getChild('error');
    const condition = error?.getChildElements().find((child) => child.getNS() === STANZAS && child.name !== 'text');
    return { type: error?.attrs.type, condition: condition?.name, text: error?.getChildText('text', STANZAS) ?? undefined };
  }

  const validJwt = (pair: JwtKeyPair, overrides: Record<string, unknown> = {}) => ({ token: es256Jwt(pair.privateKey, push2Claims(AUDIENCE, Date.now(), overrides)), key: pair.publicBase64 });

  test('disco#info advertises urn:xmpp:push2:0 beside urn:xmpp:push:0', async () => {
    const info = await bob.iq(xml('iq', { type: 'get', to: PUSH }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const features = info.getChild('query')!.getChildren('feature').map((feature) => feature.attrs.var);
    assert.ok(features.includes(PUSH2_NS));
    assert.ok(features.includes('urn:xmpp:push:0'));
  });

  test('APNS: one alert push with mutable-content and the app\'s alert text; the "push2" ciphertext decrypts to the forwarded message', async () => {
    const token = testDeviceToken(201);
    const alice = await device('alice', 'ios', token);
    await bob.sendMessage(`alice@${HOME}`, 'Push 2.0 over APNS');
    const [request] = await apnsPushes(token);
    assert.equal(apnsTo(token).length, 1, 'exactly one provider request');
    assert.equal(request.headers['apns-push-type'], 'alert');
    assert.equal(request.headers['apns-topic'], TOPIC);
    assert.equal(request.headers['apns-priority'], '10');
    assert.deepEqual(request.payload?.aps, { alert: { body: ALERT }, 'mutable-content': 1 });
    assert.equal(forwardedBody(decryptApns(request, alice.ua)), 'Push 2.0 over APNS');
    assert.equal((await app.server.store.getByNode(alice.node))?.push2Key, alice.jwt.publicRaw.toString('base64url'));
    // The same metrics as every dialect, labelled push2.
    const metrics = await eventually(async () => {
      const text = await (await fetch(`${app.httpUrl}/metrics`)).text();
      return /^push_appserver_publishes_total\{app="ios",dialect="push2",result="delivered"\} [1-9]/m.test(text) ? text : undefined;
    }, 'the Push 2.0 delivery in /metrics');
    assert.match(metrics, /^push_appserver_publish_duration_seconds_count\{dialect="push2"\} [1-9]/m);
  });

  test('FCM (registered over HTTP with push2=1): one data message whose "push2" decrypts to the forwarded message', async () => {
    const token = fcmToken('carol');
    const carol = await device('carol', 'android', token, 'http');
    await bob.sendMessage(`carol@${HOME}`, 'Push 2.0 over FCM');
    const [request] = await eventually(() => (fcmTo(token).length > 0 ? fcmTo(token) : undefined), 'an FCM request');
    assert.equal(request.status, 200);
    const data = request.body.message.data as Record<string, string>;
    assert.equal(request.body.message.notification, undefined, 'a data message only');
    assert.equal(request.body.message.android.priority, 'NORMAL', 'a chat message is <priority>normal</priority>');
    const plaintext = decryptPushMessage(Buffer.from(data.push2, 'base64'), carol.ua.privateKey, carol.ua.publicKey, carol.ua.authSecret).toString('utf8');
    assert.equal(forwardedBody(plaintext), 'Push 2.0 over FCM');
    assert.equal(fcmTo(token).length, 1, 'exactly one provider request');
  });

  test('WebPush: the ciphertext is POSTed unchanged and the mock endpoint decrypts it with the subscription\'s key', async () => {
    const subscription = web.subscription();
    const ua: UserAgentKeys = { privateKey: Buffer.alloc(0), publicKey: Buffer.from(subscription.keys.p256dh, 'base64url'), authSecret: Buffer.from(subscription.keys.auth, 'base64url') };
    await device('dave', 'web', subscription.token, 'adhoc', ua);
    await bob.sendMessage(`dave@${HOME}`, 'Push 2.0 over WebPush');
    const [request] = await web.waitForRequests(subscription.endpoint, 1);
    assert.equal(request.decryptError, undefined);
    assert.equal(request.vapidError, undefined, 'our own VAPID: the JWT\'s aud is us, not the endpoint');
    assert.equal(request.headers['content-encoding'], 'aes128gcm');
    assert.equal(request.headers.urgency, 'normal');
    assert.equal(request.status, 201);
    assert.equal(forwardedBody(request.plaintext!), 'Push 2.0 over WebPush');
    assert.equal(web.requestsTo(subscription.endpoint).length, 1);
  });

  test('stateless (snikket-apns compatible): a <client> URL …/<token>#<topic> reaches the opted-in app with nothing stored', async () => {
    const token = testDeviceToken(202);
    const ua = userAgentKeys();
    await enable('erin', PUSH, `https://${PUSH}/apns/${token}#${TOPIC}`, ua, jwtKeyPair());
    await bob.sendMessage(`erin@${HOME}`, 'stateless Push 2.0');
    const [request] = await apnsPushes(token);
    assert.equal(forwardedBody(decryptApns(request, ua)), 'stateless Push 2.0');
    assert.equal(await app.server.store.getByNode(token), undefined);
  });

  test('refusals: another key, expired, wrong aud, unknown client, foreign domain, malformed, oversized — each its message error, no provider request', async () => {
    const token = testDeviceToken(203);
    const frank = await device('frank', 'ios', token);
    const before = providerRequests();
    const payload = Buffer.from('not for anyone').toString('base64');
    const cases: Array<[string, TestClient, Parameters<typeof push2Message>[0], [string, string]]> = [
      ['another key', bob, { client: frank.client, payload, jwt: validJwt(jwtKeyPair()) }, ['auth', 'not-authorized']],
      ['expired', bob, { client: frank.client, payload, jwt: validJwt(frank.jwt, { exp: Math.floor(Date.now() / 1000) - 600 }) }, ['auth', 'not-authorized']],
      ['wrong aud', bob, { client: frank.client, payload, jwt: validJwt(frank.jwt, { aud: 'https://elsewhere.example' }) }, ['auth', 'not-authorized']],
      ['unknown client', bob, { client: 'no-such-client', payload, jwt: validJwt(frank.jwt) }, ['cancel', 'item-not-found']],
      ['foreign domain', mallory, { client: frank.client, payload, jwt: validJwt(frank.jwt) }, ['auth', 'forbidden']],
      ['malformed', bob, { priority: 'high', payload, jwt: validJwt(frank.jwt) }, ['modify', 'bad-request']],
      ['over the APNS limit', bob, { client: frank.client, payload: Buffer.alloc(3200, 7).toString('base64'), jwt: validJwt(frank.jwt) }, ['modify', 'not-acceptable']],
    ];
    for (const [name, sender, parts, expected] of cases) {
      const error = await notifyByHand(sender, parts);
      assert.deepEqual([error.type, error.condition], expected, `${name}: ${error.text}`);
    }
    assert.equal(providerRequests(), before, 'no refused notification reached a provider');
    // The registration still works for its own key.
    await bob.sendMessage(`frank@${HOME}`, 'still here');
    const [request] = await apnsPushes(token);
    assert.equal(forwardedBody(decryptApns(request, frank.ua)), 'still here');
  });

  test('a provider 503 gets wait and the push is retried with its ciphertext', async () => {
    const token = testDeviceToken(204);
    const gina = await device('gina', 'ios', token);
    apns.setBehaviour(token, [{ kind: 'server-error', status: 503 }, { kind: 'ok' }]);
    const ciphertext = Buffer.from('an opaque Push 2.0 ciphertext');
    const error = await notifyByHand(bob, { client: gina.client, payload: ciphertext.toString('base64'), jwt: validJwt(gina.jwt) });
    assert.equal(error.type, 'wait');
    const [first, second] = await apnsPushes(token, 2);
    assert.equal(first.status, 503);
    assert.equal(second.status, 200);
    assert.equal(second.payload?.push2, ciphertext.toString('base64'), 'the retry carries the same ciphertext');
  });

  test('a dead token removes the registration; the next notification is item-not-found', async () => {
    const token = testDeviceToken(205);
    const hank = await device('hank', 'ios', token);
    apns.setBehaviour(token, { kind: 'unregistered' });
    const error = await notifyByHand(bob, { client: hank.client, payload: Buffer.from('x').toString('base64'), jwt: validJwt(hank.jwt) });
    assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
    assert.equal(await app.server.store.getByNode(hank.node), undefined);
    const again = await notifyByHand(bob, { client: hank.client, payload: Buffer.from('x').toString('base64'), jwt: validJwt(hank.jwt) });
    assert.deepEqual([again.type, again.condition], ['cancel', 'item-not-found']);
    assert.equal(apnsTo(token).length, 1);
  });

  test('both dialects at once: one registration enabled for XEP-0357 (mod_cloud_notify) and Push 2.0 (mod_push2) gets both pushes for one message', async () => {
    const token = testDeviceToken(206);
    const ua = userAgentKeys();
    const jwt = jwtKeyPair();
    const registered = await register('ivy', 'ios', token, 'adhoc', jwt);
    const ivy = await login('ivy');
    await ivy.enablePush(PUSH, registered.node, registered.secret);
    await ivy.iq(push2Enable({ service: registered.service, client: registered.client, ua, jwt, audience: AUDIENCE }));
    await ivy.stop();
    await bob.sendMessage(`ivy@${HOME}`, 'over both');
    const requests = await apnsPushes(token, 2);
    assert.equal(requests.length, 2, 'one push per dialect: the Push 2.0 one never rides along with the XEP-0357 wake-up');
    const classic = requests.filter((request) => request.payload?.push2 === undefined);
    const push2 = requests.filter((request) => request.payload?.push2 !== undefined);
    assert.equal(classic.length, 1, 'the XEP-0357 push carries no Push 2.0 payload');
    assert.equal(push2.length, 1);
    assert.equal(forwardedBody(decryptApns(push2[0], ua)), 'over both');
  });
});
