/**
 * The component with ejabberd as the user's server (Debian's ejabberd, mod_push), where Prosody is
 * tested everywhere else: it connects through ejabberd_service, mod_push's publishes for an offline
 * account reach the APNS mock, ad-hoc registration works, and a `wait` answer keeps the user's push
 * enabled (ejabberd disables on the first error of any other type, DESIGN §4).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { ejabberdMissing, startEjabberd, type EjabberdInstance } from '../support/ejabberd.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns, type MockApnsRequest } from '../support/mock-apns.ts';
import { connectClient, rejectionOf, type TestClient } from '../support/xmpp-client.ts';
import { publishIq } from '../support/push-stack.ts';
import { eventually } from '../support/eventually.ts';

const skip = ejabberdMissing();
const TOPIC = 'org.example.chat';
const PUSH = 'push.localhost';
const COMMANDS = 'http://jabber.org/protocol/commands';

function command(node: string, fields: Record<string, string>): Element {
  return xml('iq', { type: 'set', to: PUSH }, xml('command', { xmlns: COMMANDS, node, action: 'execute' },
    xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
      ...Object.entries(fields).map(([name, value]) => xml('field', { var: name }, xml('value', {}, value))))));
}

function formFields(reply: Element): Record<string, string> {
  const x = reply.getChild('command', COMMANDS)?.getChild('x', 'jabber:x:data');
  return Object.fromEntries((x?.getChildren('field') ?? []).map((field) => [field.attrs.var, field.getChildText('value') ?? '']));
}

describe('component attached to ejabberd', { skip, timeout: 180_000 }, () => {
  const key = createTestApnsKey();
  let ejabberd: EjabberdInstance;
  let apns: MockApns;
  let app: TestAppServer;
  let bob: TestClient;
  let nextToken = 1;
  const users = ['alice', 'carol', 'dave', 'erin', 'frank', 'p2apns', 'p2fcm', 'fpush', 'gina'];

  before(async () => {
    apns = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC] });
    ejabberd = await startEjabberd({ componentJid: PUSH });
    for (const user of [...users, 'bob']) await ejabberd.register(user, 'localhost', `${user}-pw`);
    app = await startAppServer({
      apps: {
        ios: { provider: 'apns', topic: TOPIC, ttl: 3600, collapse_id: 'xmpp-push', endpoint: apns.origin, ca_file: apns.caFile, key_file: key.keyFile, key_id: key.keyId, team_id: key.teamId },
        conversations: { provider: 'log' },
        'monal-prod': { provider: 'log', stateless: true },
      },
      dialects: { p2: { fcm_app: 'conversations', apns_app: 'ios' } },
    }, { prosody: ejabberd });
    await app.waitOnline();
    bob = await connectClient({ port: ejabberd.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
  });

  after(async () => {
    await bob?.stop();
    await app?.stop();
    await ejabberd?.stop();
    await apns?.close();
  });

  const login = (user: string) => connectClient({ port: ejabberd.c2sPort, domain: 'localhost', username: user, password: `${user}-pw` });

  function pushesTo(token: string, count = 1): Promise<MockApnsRequest[]> {
    return eventually(() => {
      const seen = apns.requests.filter((request) => request.token === token && request.status !== 0);
      return seen.length >= count ? seen : undefined;
    }, `${count} push(es) to ${token.slice(0, 8)}…`);
  }

  async function offlineWithPush(user: string, node: string, secret: string, extra: Record<string, string> = {}): Promise<void> {
    const client = await login(user);
    await client.enablePush(PUSH, node, secret, extra);
    await client.stop();
  }

  async function runCommand(user: string, node: string, fields: Record<string, string>): Promise<Record<string, string>> {
    const client = await login(user);
    try {
      const reply = await client.iq(command(node, fields));
      assert.equal(reply.getChild('command', COMMANDS)?.attrs.status, 'completed');
      return formFields(reply);
    } finally {
      await client.stop();
    }
  }

  /** mod_push logs how it took our error answer: `wait` keeps push enabled, any other type disables it. */
  const ejabberdLogged = (pattern: RegExp) => eventually(() => ejabberd.logText().split('\n').find((line) => pattern.test(line)), `ejabberd to log ${pattern}`);

  test('the component is online through ejabberd_service and answers disco#info routed by ejabberd', async () => {
    const reply = await bob.iq(xml('iq', { type: 'get', to: PUSH }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const identity = reply.getChild('query')!.getChild('identity')!;
    assert.deepEqual([identity.attrs.category, identity.attrs.type], ['pubsub', 'push']);
    assert.equal(app.server.xmpp.component.state, 'online');
  });

  test('a message to an offline account makes mod_push publish, and the push reaches APNS once', async () => {
    const token = testDeviceToken(nextToken++);
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'alice-phone', token });
    const [ok, node, secret] = reply.body.split('\n');
    assert.equal(ok, 'OK', reply.body);
    await offlineWithPush('alice', node, secret);
    await bob.sendMessage('alice@localhost', 'hello alice');
    const [request] = await pushesTo(token);
    assert.equal(request.status, 200);
    assert.equal(request.headers['apns-topic'], TOPIC);
    assert.doesNotMatch(request.body, /hello alice/);
    await bob.sendMessage('alice@localhost', 'second');
    await pushesTo(token, 2);
    // The delivery is recorded when APNS's answer is back, a moment after the mock saw the request.
    await eventually(async () => ((await app.server.store.getByNode(node))?.pushCount === 2 ? true : undefined), 'both deliveries recorded');
  });

  test('v1-register-push over ejabberd: the node and secret handed out work in <enable/>, and the registration is bound to the domain', async () => {
    const carol = await login('carol');
    const token = testDeviceToken(nextToken++);
    let registered: Record<string, string>;
    try {
      const reply = await carol.iq(command('v1-register-push', { type: 'ios', node: 'carol-phone', token }));
      assert.equal(reply.getChild('command', COMMANDS)?.attrs.status, 'completed');
      registered = formFields(reply);
      assert.equal(registered.jid, PUSH);
    } finally {
      await carol.stop();
    }
    assert.equal((await app.server.store.getByNode(registered.node))?.boundDomain, 'localhost');
    await offlineWithPush('carol', registered.node, registered.secret);
    await bob.sendMessage('carol@localhost', 'for carol');
    const [request] = await pushesTo(token);
    assert.equal(request.status, 200);
  });

  test('APNS answering 503 to mod_push\'s publish is a `wait`: ejabberd keeps push enabled and the next message is pushed', async () => {
    const token = testDeviceToken(nextToken++);
    apns.setBehaviour(token, [{ kind: 'server-error', status: 503 }, { kind: 'ok' }]);
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'dave-phone', token });
    const [, node, secret] = reply.body.split('\n');
    await offlineWithPush('dave', node, secret);
    await bob.sendMessage('dave@localhost', 'while apns is down');
    // mod_push's publish met the 503 (answered `wait`), then our retry was delivered.
    const [refused, retried] = await pushesTo(token, 2);
    assert.deepEqual([refused.status, retried.status], [503, 200]);
    await app.waitForLog(new RegExp(`push will be retried .*node=${node}`));
    // ejabberd disables a registration on the first error not of type wait: this one must still work.
    await bob.sendMessage('dave@localhost', 'after recovery');
    const all = await pushesTo(token, 3);
    assert.equal(all[2].status, 200);
    await ejabberdLogged(new RegExp(`rejected notification for dave@localhost.*temporarily`));
    assert.ok(!ejabberd.logText().split('\n').some((line) => /dave@localhost/.test(line) && /disabling push/.test(line)), 'push stays enabled for dave');
  });

  test('a 410 from APNS removes the registration; mod_push gets cancel/item-not-found for the next publish and disables push', async () => {
    const token = testDeviceToken(nextToken++);
    apns.setBehaviour(token, { kind: 'unregistered' });
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'frank-phone', token });
    const [, node, secret] = reply.body.split('\n');
    await offlineWithPush('frank', node, secret);
    await bob.sendMessage('frank@localhost', 'to a dead token');
    await pushesTo(token);
    await eventually(async () => ((await app.server.store.getByNode(node)) === undefined ? true : undefined), 'the registration to be removed');
    await bob.sendMessage('frank@localhost', 'anyone?');
    const line = await ejabberdLogged(/rejected notification for frank@localhost.*disabling push/);
    assert.match(line, /item-not-found/);
  });

  test('with token auth, the push mod_push asked for reaches APNS as an alert with topic, priority 10, collapse id and our JWT', async () => {
    const token = testDeviceToken(nextToken++);
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'gina-phone', token });
    const [, node, secret] = reply.body.split('\n');
    await offlineWithPush('gina', node, secret);
    await bob.sendMessage('gina@localhost', 'meet me at noon');
    const [request] = await pushesTo(token);
    assert.equal(request.status, 200);
    assert.equal(request.path, `/3/device/${token}`);
    assert.equal(request.headers['apns-topic'], TOPIC);
    assert.equal(request.headers['apns-push-type'], 'alert');
    assert.equal(request.headers['apns-priority'], '10');
    assert.equal(request.headers['apns-collapse-id'], 'xmpp-push');
    const expiration = Number(request.headers['apns-expiration']);
    assert.ok(Math.abs(expiration - (Date.now() / 1000 + 3600)) < 120, `expiration about an hour ahead: ${expiration}`);
    // mod_push announces a body (its include_body text, not the message): `priority = auto` shows the generic alert.
    assert.deepEqual(request.payload, { aps: { alert: { body: 'New Message' }, 'mutable-content': 1 } }, request.body);
    assert.doesNotMatch(request.body, /noon/);
    assert.equal(request.jwt?.header.kid, key.keyId);
    assert.equal(request.jwt?.claims.iss, key.teamId);
  });

  test('register-push-apns (Conversations\' p2 dialect) over ejabberd: one push to the p2 APNS app; unregister-push-apns stops it with cancel, so mod_push disables push', async () => {
    const token = testDeviceToken(nextToken++);
    const registered = await runCommand('p2apns', 'register-push-apns', { token, 'device-id': 'p2-iphone' });
    assert.equal(registered.jid, PUSH);
    assert.equal((await app.server.store.getByNode(registered.node))?.app, 'ios');
    await offlineWithPush('p2apns', registered.node, registered.secret);
    await bob.sendMessage('p2apns@localhost', 'wake up');
    const [request] = await pushesTo(token);
    assert.equal(request.status, 200);
    const unregistered = await runCommand('p2apns', 'unregister-push-apns', { 'device-id': 'p2-iphone' });
    assert.equal(unregistered.node, registered.node);
    await bob.sendMessage('p2apns@localhost', 'anyone?');
    await ejabberdLogged(/rejected notification for p2apns@localhost.*disabling push/);
    assert.equal(apns.requests.filter((seen) => seen.token === token).length, 1, 'no push after unregistering');
  });

  test('register-push-fcm (p2) over ejabberd: one delivery to the p2 FCM app', async () => {
    const registered = await runCommand('p2fcm', 'register-push-fcm', { token: 'fcm-token-p2', 'device-id': 'p2-android' });
    await offlineWithPush('p2fcm', registered.node, registered.secret);
    await bob.sendMessage('p2fcm@localhost', 'wake up');
    await app.waitForLog(new RegExp(`\\[push-appserver:app:conversations\\] dry-run push node=${registered.node} `));
  });

  test('the stateless dialect over ejabberd: the publish option pushModule names the app, the node is the token, nothing stored', async () => {
    await offlineWithPush('fpush', 'fpush-device-token', 'unused-secret', { pushModule: 'monal-prod' });
    await bob.sendMessage('fpush@localhost', 'stateless');
    await app.waitForLog(/\[push-appserver:app:monal-prod\] dry-run push node=fpush-device-token /);
    assert.equal(await app.server.store.getByNode('fpush-device-token'), undefined, 'nothing stored');
  });

  test('a hand-made publish while APNS answers 503 gets an error of type wait', async () => {
    const token = testDeviceToken(nextToken++);
    apns.setBehaviour(token, { kind: 'server-error', status: 503 });
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'wait-phone', token });
    const [, node, secret] = reply.body.split('\n');
    const error = await rejectionOf(bob.iq(publishIq(node, secret)));
    assert.equal(error.type, 'wait');
  });

  test('a publish with a wrong secret is answered cancel/item-not-found through ejabberd', async () => {
    const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: 'erin-phone', token: testDeviceToken(nextToken++) });
    const [, node] = reply.body.split('\n');
    const error = await rejectionOf(bob.iq(publishIq(node, 'not-the-secret')));
    assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
  });
});
