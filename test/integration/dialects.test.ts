/**
 * Every registration dialect through a real Prosody (two VirtualHosts = two domains) with real
 * client accounts: XEP-0050 commands (v1 and Conversations' p2), Monal's stateless dialect, domain
 * binding of registrations, and the HTTP API additions. Deliveries are observed through the `log`
 * provider of each app; refusals through the errors mod_cloud_notify logs for our replies.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startProsody, prosodyMissing, type ProsodyInstance } from '../support/prosody.ts';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { connectClient, rejectionOf, type TestClient } from '../support/xmpp-client.ts';

const skip = prosodyMissing();
const HOME = 'localhost';
const FOREIGN = 'other.localhost';
const PUSH = 'push.localhost';
const COMMANDS = 'http://jabber.org/protocol/commands';

const CONFIG = `
[apps.monal-prod]
provider = "log"
stateless = true

[apps.monal-sandbox]
provider = "log"

[apps.conversations]
provider = "log"

[apps.conversations-ios]
provider = "log"

[dialects.p2]
fcm_app = "conversations"
apns_app = "conversations-ios"
`;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function command(node: string, fields?: Record<string, string>, action = 'execute'): Element {
  const form = fields === undefined ? [] : [xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
    ...Object.entries(fields).map(([name, value]) => xml('field', { var: name }, xml('value', {}, value))))];
  return xml('iq', { type: 'set', to: PUSH }, xml('command', { xmlns: COMMANDS, node, action }, ...form));
}

function formFields(reply: Element): Record<string, string> {
  const x = reply.getChild('command', COMMANDS)?.getChild('x', 'jabber:x:data');
  return Object.fromEntries((x?.getChildren('field') ?? []).map((field) => [field.attrs.var, field.getChildText('value') ?? '']));
}

describe('registration dialects through Prosody', { skip, timeout: 180_000 }, () => {
  let prosody: ProsodyInstance;
  let app: TestAppServer;
  let sender: TestClient;
  const password = 'pw';

  before(async () => {
    prosody = await startProsody({ hosts: [HOME, FOREIGN], componentJid: PUSH });
    const users: Array<[string, string]> = [
      ['sender', HOME], ['v1user', HOME], ['fcmuser', HOME], ['apnsuser', HOME], ['twin1', HOME], ['twin2', HOME],
      ['fpush', HOME], ['fpushbad', HOME], ['victim', HOME], ['knockvictim', HOME], ['httpuser', HOME], ['xmppmade', HOME], ['mallory', FOREIGN],
    ];
    for (const [user, host] of users) await prosody.register(user, host, password);
    app = await startAppServer(CONFIG, { prosody });
    await app.waitOnline();
    sender = await connectClient({ port: prosody.c2sPort, domain: HOME, username: 'sender', password });
  });

  after(async () => {
    await sender?.stop();
    await app?.stop();
    await prosody?.stop();
  });

  const login = (username: string, domain = HOME) => connectClient({ port: prosody.c2sPort, domain, username, password });

  /** Runs a command as `username` and returns the completed form. */
  async function run(username: string, node: string, fields: Record<string, string>, domain = HOME): Promise<Record<string, string>> {
    const client = await login(username, domain);
    try {
      const reply = await client.iq(command(node, fields));
      assert.equal(reply.getChild('command', COMMANDS)?.attrs.status, 'completed');
      return formFields(reply);
    } finally {
      await client.stop();
    }
  }

  /** Enables push on the account's server with what the app server handed out, then goes offline. */
  async function enable(username: string, node: string, secret: string, domain = HOME, extra: Record<string, string> = {}): Promise<void> {
    const client = await login(username, domain);
    try {
      await client.enablePush(PUSH, node, secret, extra);
    } finally {
      await client.stop();
    }
  }

  /** Waits until Prosody logs the error our component answered a publish for this node with. */
  async function prosodyGotError(node: string, errorType: string, condition: string, timeoutMs = 15_000): Promise<string> {
    const pattern = new RegExp(`Got error <${errorType}:${condition}:[^>]*> for identifier '${escapeRegExp(PUSH)}<${escapeRegExp(node)}'`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = prosody.logText().split('\n').find((candidate) => pattern.test(candidate));
      if (line !== undefined) return line;
      if (Date.now() > deadline) assert.fail(`Prosody logged no ${errorType}/${condition} for node ${node}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  const deliveries = (appName: string, node: string) => new RegExp(`pushed app=${escapeRegExp(appName)} node=${escapeRegExp(node)}(\\s|$)`);

  /** Register, enable, one message → one delivery to `appName`; unregister, next message → refused, none. */
  async function registerDeliverUnregister(options: {
    user: string; appName: string; register: [string, Record<string, string>]; unregister: [string, Record<string, string>];
  }): Promise<void> {
    const registered = await run(options.user, ...options.register);
    assert.equal(registered.jid, PUSH);
    assert.match(registered.secret, /^[0-9a-f]{64}$/);
    await enable(options.user, registered.node, registered.secret);

    await sender.sendMessage(`${options.user}@${HOME}`, 'wake up');
    await app.waitForCount(deliveries(options.appName, registered.node), 1);

    const unregistered = await run(options.user, ...options.unregister);
    assert.equal(unregistered.node, registered.node);
    await sender.sendMessage(`${options.user}@${HOME}`, 'anyone?');
    await prosodyGotError(registered.node, 'cancel', 'item-not-found');
    assert.equal(app.countLog(deliveries(options.appName, registered.node)), 1, 'exactly one delivery, none after unregistering');
    assert.equal(app.countLog(new RegExp(`dry-run push node=${escapeRegExp(registered.node)}`)), 1);
  }

  test('disco lists the registration commands and advertises the commands feature', async () => {
    const items = await sender.iq(xml('iq', { type: 'get', to: PUSH }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items', node: COMMANDS })));
    const nodes = items.getChild('query')!.getChildren('item').map((item) => item.attrs.node).sort();
    assert.deepEqual(nodes, ['register-push-apns', 'register-push-fcm', 'unregister-push-apns', 'unregister-push-fcm', 'v1-register-push', 'v1-unregister-push']);
    const info = await sender.iq(xml('iq', { type: 'get', to: PUSH }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    assert.ok(info.getChild('query')!.getChildren('feature').some((feature) => feature.attrs.var === COMMANDS));
  });

  test('a command with a missing field gets modify/bad-request naming the field', async () => {
    const error = await rejectionOf(sender.iq(command('register-push-fcm', { 'device-id': 'phone' })));
    assert.deepEqual(error, { type: 'modify', condition: 'bad-request', text: 'missing field "token"' });
  });

  test('a command naming an unknown app gets cancel/item-not-found', async () => {
    const error = await rejectionOf(sender.iq(command('v1-register-push', { type: 'carrier-pigeon', node: 'phone', token: 't' })));
    assert.deepEqual([error.type, error.condition], ['cancel', 'item-not-found']);
  });

  test('a cancelled command is answered canceled', async () => {
    const reply = await sender.iq(command('v1-register-push', {}, 'cancel'));
    assert.equal(reply.getChild('command', COMMANDS)?.attrs.status, 'canceled');
  });

  test('v1-register-push: the node and secret work in <enable/>, one delivery to the named app, v1-unregister-push stops it', async () => {
    await registerDeliverUnregister({
      user: 'v1user', appName: 'monal-sandbox',
      register: ['v1-register-push', { type: 'monal-sandbox', node: 'v1-device', token: 'v1-token' }],
      unregister: ['v1-unregister-push', { type: 'monal-sandbox', node: 'v1-device' }],
    });
  });

  test('register-push-fcm: one delivery to the p2 FCM app, unregister-push-fcm stops it', async () => {
    await registerDeliverUnregister({
      user: 'fcmuser', appName: 'conversations',
      register: ['register-push-fcm', { token: 'fcm-token', 'android-id': 'android-device' }],
      unregister: ['unregister-push-fcm', { 'device-id': 'android-device' }],
    });
  });

  test('register-push-apns: one delivery to the p2 APNS app, unregister-push-apns stops it', async () => {
    await registerDeliverUnregister({
      user: 'apnsuser', appName: 'conversations-ios',
      register: ['register-push-apns', { token: 'apns-token', 'device-id': 'iphone-device' }],
      unregister: ['unregister-push-apns', { 'device-id': 'iphone-device' }],
    });
  });

  test('a publish from a foreign domain for a registration made over XMPP is refused auth/forbidden', async () => {
    const registered = await run('victim', 'register-push-fcm', { token: 'victim-token', 'device-id': 'victim-phone' });
    // A user of another domain enables push with the victim's node and secret: its server publishes.
    await enable('mallory', registered.node, registered.secret, FOREIGN);
    await sender.sendMessage(`mallory@${FOREIGN}`, 'for mallory');
    const line = await prosodyGotError(registered.node, 'auth', 'forbidden');
    assert.match(line, /only from localhost/);
    assert.equal(app.countLog(deliveries('conversations', registered.node)), 0);

    // The victim's own server is still served.
    await enable('victim', registered.node, registered.secret);
    await sender.sendMessage(`victim@${HOME}`, 'for the victim');
    await app.waitForCount(deliveries('conversations', registered.node), 1);
  });

  test('the same device id under two accounts stays two registrations, each delivered with its token', async () => {
    const first = await run('twin1', 'register-push-fcm', { token: 'twin-token-1', 'device-id': 'same-device' });
    const second = await run('twin2', 'register-push-fcm', { token: 'twin-token-2', 'device-id': 'same-device' });
    assert.notEqual(first.node, second.node);
    await enable('twin1', first.node, first.secret);
    await enable('twin2', second.node, second.secret);
    await sender.sendMessage(`twin1@${HOME}`, 'one');
    await sender.sendMessage(`twin2@${HOME}`, 'two');
    await app.waitForLog(new RegExp(`dry-run push node=${escapeRegExp(first.node)} token=twin-token-1`));
    await app.waitForLog(new RegExp(`dry-run push node=${escapeRegExp(second.node)} token=twin-token-2`));
  });

  test('the stateless dialect delivers to the app named by pushModule with the node as token', async () => {
    await enable('fpush', 'fpush-device-token', 'unused-secret', HOME, { pushModule: 'monal-prod' });
    await sender.sendMessage(`fpush@${HOME}`, 'stateless');
    await app.waitForLog(/\[push-appserver:app:monal-prod\] dry-run push node=fpush-device-token token=fpush-de…oken/);
    assert.equal(await app.server.store.getByNode('fpush-device-token'), undefined, 'nothing stored');
  });

  test('the stateless dialect refuses an unknown app with cancel/item-not-found', async () => {
    await enable('fpushbad', 'fpushbad-device-token', 'unused-secret', HOME, { pushModule: 'no-such-app' });
    await sender.sendMessage(`fpushbad@${HOME}`, 'stateless, unknown app');
    await prosodyGotError('fpushbad-device-token', 'cancel', 'item-not-found');
    assert.equal(app.countLog(/dry-run push node=fpushbad-device-token/), 0);
  });

  test('an HTTP registration naming a jid is bound to its domain', async () => {
    const reply = await app.post('/push_appserver/v1/register', { type: 'monal-sandbox', node: 'http-bound-device', token: 'http-token', jid: `httpuser@${FOREIGN}` });
    assert.equal(reply.status, 200, reply.body);
    const [, node, secret] = reply.body.split('\n');
    // httpuser lives on localhost, but the registration said other.localhost: refused.
    await enable('httpuser', node, secret);
    await sender.sendMessage(`httpuser@${HOME}`, 'bound over http');
    assert.match(await prosodyGotError(node, 'auth', 'forbidden'), /only from other\.localhost/);
    assert.equal(app.countLog(deliveries('monal-sandbox', node)), 0);
  });

  test('HTTP unregister of a bound registration requires its secret, and without it answers as for an unknown node', async () => {
    const registered = await app.post('/push_appserver/v1/register', { type: 'monal-sandbox', node: 'http-unregister-device', token: 'tok', jid: `someone@${HOME}` });
    const [, node, secret] = registered.body.split('\n');
    const refused = await app.post('/push_appserver/v1/unregister', { type: 'monal-sandbox', node });
    const unknown = await app.post('/push_appserver/v1/unregister', { type: 'monal-sandbox', node: 'never-registered-anywhere' });
    assert.deepEqual([refused.status, refused.body], [unknown.status, unknown.body]);
    assert.equal(refused.status, 404);
    assert.doesNotMatch(refused.body, /localhost/);
    const removed = await app.post('/push_appserver/v1/unregister', { type: 'monal-sandbox', node, secret });
    assert.equal(removed.status, 200, removed.body);
    assert.equal(removed.body.split('\n')[0], 'OK');
  });

  test('HTTP unregister of a registration made over XMPP requires its secret', async () => {
    const registered = await run('xmppmade', 'v1-register-push', { type: 'monal-sandbox', node: 'xmpp-made-device', token: 'tok' });
    const refused = await app.post('/push_appserver/v1/unregister', { type: 'monal-sandbox', node: registered.node });
    assert.equal(refused.status, 404);
    assert.match(refused.body, /"secret"/);
    assert.ok(await app.server.store.getByNode(registered.node));
  });

  test('HTTP knock-out attempts on a registration made over XMPP fail and its pushes keep arriving', async () => {
    const registered = await run('knockvictim', 'v1-register-push', { type: 'monal-sandbox', node: 'knock-phone', token: 'victim-token' });
    await enable('knockvictim', registered.node, registered.secret);
    // Naming the victim's JID and device id with another token: a node of its own, nothing replaced.
    const attack = await app.post('/push_appserver/v1/register', { type: 'monal-sandbox', node: 'knock-phone', token: 'attacker-token', jid: `knockvictim@${HOME}` });
    assert.equal(attack.status, 200, attack.body);
    const [, attackNode, attackSecret] = attack.body.split('\n');
    assert.notEqual(attackNode, registered.node);
    assert.notEqual(attackSecret, registered.secret);
    // Removal by device id and by node, with and without the JID: all fail alike.
    const attempts: Array<Record<string, string>> = [{ node: registered.node }, { node: registered.node, jid: `knockvictim@${HOME}` }, { node: registered.node, secret: attackSecret }];
    for (const fields of attempts) {
      const removal = await app.post('/push_appserver/v1/unregister', { type: 'monal-sandbox', ...fields });
      assert.equal(removal.status, 404, JSON.stringify(fields));
    }
    // The same registration again anonymously: a node of its own too.
    const anonymous = await app.post('/push_appserver/v1/register', { type: 'monal-sandbox', node: registered.node, token: 'attacker-token' });
    assert.notEqual(anonymous.body.split('\n')[1], registered.node);
    const kept = await app.server.store.getByNode(registered.node);
    assert.equal(kept?.token, 'victim-token');
    await sender.sendMessage(`knockvictim@${HOME}`, 'still there?');
    await app.waitForCount(deliveries('monal-sandbox', registered.node), 1);
    assert.equal(app.countLog(new RegExp(`dry-run push node=${escapeRegExp(attackNode)}`)), 0);
  });

  test('v1-unregister-push removes an anonymous HTTP registration by its node', async () => {
    const registered = await app.post('/push_appserver/v1/register', { type: 'monal-sandbox', node: 'http-then-adhoc', token: 'tok-h' });
    const [, node] = registered.body.split('\n');
    const removed = await run('xmppmade', 'v1-unregister-push', { type: 'monal-sandbox', node });
    assert.equal(removed.node, node);
    assert.equal(await app.server.store.getByNode(node), undefined);
  });

  test('HTTP unregister in the original form still works for an anonymous registration', async () => {
    const registered = await app.post('/push_appserver/v1/register', { type: 'monal-sandbox', node: 'anonymous-device', token: 'tok' });
    assert.equal(registered.status, 200);
    const removed = await app.post('/push_appserver/v1/unregister', { type: 'monal-sandbox', node: 'anonymous-device' });
    assert.equal(removed.body, 'OK\nanonymous-device');
  });
});
