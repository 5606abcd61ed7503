/** XEP-0050 registration commands, stanza in → stanza out through the iq router, with no socket. */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { parse, type Element } from 'ltx';
import { Registrations } from '../../src/core/registrations.ts';
import { silentLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { AdHocCommands } from '../../src/xmpp/handlers/commands.ts';
import { Disco } from '../../src/xmpp/handlers/disco.ts';
import { IqRouter } from '../../src/xmpp/iq-router.ts';
import { NS } from '../../src/xmpp/stanzas.ts';
import { directoryOf, scriptedProvider } from '../support/fakes.ts';

const SERVICE = 'push.example.org';

function fieldsXml(fields: Record<string, string>): string {
  return Object.entries(fields).map(([name, value]) => `<field var='${name}'><value>${value}</value></field>`).join('');
}

function execute(node: string, fields: Record<string, string> | undefined, options: { from?: string; action?: string; sessionid?: string } = {}): Element {
  const attrs = [`node='${node}'`, options.action ? `action='${options.action}'` : `action='execute'`, options.sessionid ? `sessionid='${options.sessionid}'` : ''].join(' ');
  const form = fields ? `<x xmlns='jabber:x:data' type='submit'>${fieldsXml(fields)}</x>` : '';
  return parse(`<iq type='set' id='c1' from='${options.from ?? 'romeo@montague.example/phone'}' to='${SERVICE}'><command xmlns='${NS.commands}' ${attrs}>${form}</command></iq>`);
}

function resultFields(reply: Element | undefined): Record<string, string> {
  const x = reply?.getChild('command', NS.commands)?.getChild('x', NS.dataForms);
  return Object.fromEntries((x?.getChildren('field') ?? []).map((field) => [field.attrs.var, field.getChildText('value') ?? '']));
}

function errorOf(reply: Element | undefined): { type?: string; condition?: string; text?: string | null } {
  const error = reply?.getChild('error');
  return { type: error?.attrs.type, condition: error?.getChildElements()[0]?.name, text: error?.getChildText('text', NS.stanzas) };
}

describe('ad-hoc registration commands', () => {
  let store: SqliteStore;
  let router: IqRouter;

  beforeEach(() => {
    store = new SqliteStore(':memory:');
    const apps = directoryOf({ 'monal-prod': scriptedProvider(), conversations: scriptedProvider(), 'ios-app': scriptedProvider() });
    const commands = new AdHocCommands({ registrations: new Registrations(store, apps), p2: { fcmApp: 'conversations', apnsApp: 'ios-app' }, logger: silentLogger });
    const disco = new Disco('push-appserver');
    disco.addFeature(NS.commands);
    disco.addNode(NS.commands, commands.items);
    router = new IqRouter(silentLogger)
      .on('set', 'command', NS.commands, commands.execute)
      .on('get', 'query', NS.discoInfo, disco.info)
      .on('get', 'query', NS.discoItems, disco.items);
  });

  test('disco#items on the commands node lists every registration command with our JID', async () => {
    const reply = await router.handle(parse(`<iq type='get' id='d1' from='romeo@montague.example/phone' to='${SERVICE}'><query xmlns='${NS.discoItems}' node='${NS.commands}'/></iq>`));
    const items = reply?.getChild('query', NS.discoItems)?.getChildren('item') ?? [];
    assert.deepEqual(items.map((item) => item.attrs.node).sort(), [
      'register-push-apns', 'register-push-fcm', 'unregister-push-apns', 'unregister-push-fcm', 'v1-register-push', 'v1-unregister-push',
    ]);
    assert.ok(items.every((item) => item.attrs.jid === SERVICE && item.attrs.name));
  });

  test('disco#info advertises the commands feature', async () => {
    const reply = await router.handle(parse(`<iq type='get' id='d2' from='romeo@montague.example/phone' to='${SERVICE}'><query xmlns='${NS.discoInfo}'/></iq>`));
    const features = reply?.getChild('query', NS.discoInfo)?.getChildren('feature').map((feature) => feature.attrs.var);
    assert.ok(features?.includes(NS.commands));
  });

  test('v1-register-push completes with our JID, a node and a secret, bound to the requester domain', async () => {
    const reply = await router.handle(execute('v1-register-push', { type: 'monal-prod', node: 'device-1', token: 'tok-1' }));
    assert.equal(reply?.attrs.type, 'result');
    const command = reply?.getChild('command', NS.commands);
    assert.equal(command?.attrs.status, 'completed');
    assert.equal(command?.attrs.node, 'v1-register-push');
    assert.ok(command?.attrs.sessionid);
    const fields = resultFields(reply);
    assert.equal(fields.jid, SERVICE);
    assert.equal(fields.node, 'device-1');
    assert.match(fields.secret, /^[0-9a-f]{64}$/);
    const stored = await store.getByNode(fields.node);
    assert.equal(stored?.boundDomain, 'montague.example');
    assert.equal(stored?.deviceKey, 'romeo@montague.example|device-1');
    assert.equal(stored?.app, 'monal-prod');
  });

  test('a submission keeps the sessionid the client sent', async () => {
    const reply = await router.handle(execute('v1-register-push', { type: 'monal-prod', node: 'device-1', token: 'tok-1' }, { sessionid: 'S-42', action: 'complete' }));
    assert.equal(reply?.getChild('command', NS.commands)?.attrs.sessionid, 'S-42');
    assert.equal(reply?.getChild('command', NS.commands)?.attrs.status, 'completed');
  });

  test('v1-unregister-push completes with our JID and the node, and removes the registration', async () => {
    const registered = resultFields(await router.handle(execute('v1-register-push', { type: 'monal-prod', node: 'device-1', token: 'tok-1' })));
    const reply = await router.handle(execute('v1-unregister-push', { type: 'monal-prod', node: 'device-1' }));
    assert.equal(reply?.getChild('command', NS.commands)?.attrs.status, 'completed');
    assert.deepEqual(resultFields(reply), { jid: SERVICE, node: registered.node });
    assert.equal(await store.getByNode(registered.node), undefined);
  });

  test('another account cannot unregister a device it did not register', async () => {
    const registered = resultFields(await router.handle(execute('v1-register-push', { type: 'monal-prod', node: 'device-1', token: 'tok-1' })));
    const reply = await router.handle(execute('v1-unregister-push', { type: 'monal-prod', node: 'device-1' }, { from: 'tybalt@capulet.example/x' }));
    assert.deepEqual(errorOf(reply).condition, 'item-not-found');
    assert.ok(await store.getByNode(registered.node));
    // "Not yours" is told apart from "no such registration" by nothing: type, condition and text alike.
    const unknown = await router.handle(execute('v1-unregister-push', { type: 'monal-prod', node: 'no-such-device' }, { from: 'tybalt@capulet.example/x' }));
    assert.deepEqual(errorOf(reply), errorOf(unknown));
  });

  test('register-push-fcm maps to the configured app with a random node', async () => {
    const reply = await router.handle(execute('register-push-fcm', { token: 'fcm-token', 'device-id': 'android-1' }));
    assert.equal(reply?.getChild('command', NS.commands)?.attrs.status, 'completed');
    const fields = resultFields(reply);
    assert.equal(fields.jid, SERVICE);
    assert.notEqual(fields.node, 'android-1');
    assert.match(fields.secret, /^[0-9a-f]{64}$/);
    const stored = await store.getByNode(fields.node);
    assert.equal(stored?.app, 'conversations');
    assert.equal(stored?.token, 'fcm-token');
    assert.equal(stored?.boundDomain, 'montague.example');
  });

  test('register-push-fcm accepts android-id in place of device-id', async () => {
    const first = resultFields(await router.handle(execute('register-push-fcm', { token: 'fcm-token', 'android-id': 'android-1' })));
    const again = resultFields(await router.handle(execute('register-push-fcm', { token: 'fcm-token', 'device-id': 'android-1' })));
    assert.equal(again.node, first.node);
    assert.equal(again.secret, first.secret);
  });

  test('register-push-apns maps to the APNS app of [dialects.p2]', async () => {
    const fields = resultFields(await router.handle(execute('register-push-apns', { token: 'apns-token', 'device-id': 'iphone-1' })));
    assert.equal((await store.getByNode(fields.node))?.app, 'ios-app');
  });

  test('a p2 registration for a group chat is separate from the device own one', async () => {
    const own = resultFields(await router.handle(execute('register-push-fcm', { token: 'fcm-token', 'device-id': 'android-1' })));
    const group = resultFields(await router.handle(execute('register-push-fcm', { token: 'fcm-token', 'device-id': 'android-1', muc: 'Room@conference.montague.example' })));
    assert.notEqual(group.node, own.node);
    assert.notEqual(group.secret, own.secret);
    assert.equal((await store.getByNode(group.node))?.deviceKey, 'romeo@montague.example|android-1|muc=room@conference.montague.example');

    const unregistered = await router.handle(execute('unregister-push-fcm', { 'device-id': 'android-1', muc: 'room@conference.montague.example' }));
    assert.equal(resultFields(unregistered).node, group.node);
    assert.equal(await store.getByNode(group.node), undefined);
    assert.ok(await store.getByNode(own.node));
  });

  test('a muc that is not a bare JID is a named bad-request', async () => {
    const reply = await router.handle(execute('register-push-fcm', { token: 'fcm-token', 'device-id': 'android-1', muc: 'room@conference.example/nick' }));
    assert.deepEqual(errorOf(reply), { type: 'modify', condition: 'bad-request', text: 'field "muc" must be a bare JID' });
  });

  test('unregister-push-apns removes the device registration', async () => {
    const fields = resultFields(await router.handle(execute('register-push-apns', { token: 'apns-token', 'device-id': 'iphone-1' })));
    const reply = await router.handle(execute('unregister-push-apns', { 'device-id': 'iphone-1' }));
    assert.equal(reply?.getChild('command', NS.commands)?.attrs.status, 'completed');
    assert.equal(await store.getByNode(fields.node), undefined);
  });

  test('the same device id under two accounts stays two registrations', async () => {
    const romeo = resultFields(await router.handle(execute('register-push-fcm', { token: 'token-a', 'device-id': 'shared-id' })));
    const juliet = resultFields(await router.handle(execute('register-push-fcm', { token: 'token-b', 'device-id': 'shared-id' }, { from: 'juliet@capulet.example/tab' })));
    assert.notEqual(romeo.node, juliet.node);
    assert.equal((await store.getByNode(romeo.node))?.token, 'token-a');
    assert.equal((await store.getByNode(juliet.node))?.token, 'token-b');
  });

  test('a missing field is modify/bad-request naming the field', async () => {
    const reply = await router.handle(execute('v1-register-push', { type: 'monal-prod', node: 'device-1' }));
    assert.deepEqual(errorOf(reply), { type: 'modify', condition: 'bad-request', text: 'missing field "token"' });
    assert.ok(reply?.getChild('error')?.getChild('bad-payload', NS.commands));
  });

  test('a p2 command without a device id names device-id', async () => {
    const reply = await router.handle(execute('register-push-fcm', { token: 'fcm-token' }));
    assert.deepEqual(errorOf(reply), { type: 'modify', condition: 'bad-request', text: 'missing field "device-id"' });
  });

  test('an unknown app is cancel/item-not-found', async () => {
    const reply = await router.handle(execute('v1-register-push', { type: 'no-such-app', node: 'device-1', token: 'tok-1' }));
    assert.deepEqual(errorOf(reply), { type: 'cancel', condition: 'item-not-found', text: 'unknown type "no-such-app"' });
  });

  test('an unknown command is cancel/item-not-found', async () => {
    const reply = await router.handle(execute('register-push-carrier-pigeon', { token: 'x' }));
    assert.deepEqual([errorOf(reply).type, errorOf(reply).condition], ['cancel', 'item-not-found']);
  });

  test('action cancel is answered with status canceled and registers nothing', async () => {
    const reply = await router.handle(execute('v1-register-push', { type: 'monal-prod', node: 'device-1', token: 'tok-1' }, { action: 'cancel', sessionid: 'S-1' }));
    const command = reply?.getChild('command', NS.commands);
    assert.equal(reply?.attrs.type, 'result');
    assert.equal(command?.attrs.status, 'canceled');
    assert.equal(command?.attrs.sessionid, 'S-1');
    assert.equal(await store.count(), 0);
  });

  test('executing without a form returns the blank form to fill in', async () => {
    const reply = await router.handle(execute('register-push-fcm', undefined));
    const command = reply?.getChild('command', NS.commands);
    assert.equal(command?.attrs.status, 'executing');
    assert.ok(command?.attrs.sessionid);
    assert.ok(command?.getChild('actions')?.getChild('complete'));
    const form = command?.getChild('x', NS.dataForms);
    assert.equal(form?.attrs.type, 'form');
    assert.deepEqual(form?.getChildren('field').map((field) => field.attrs.var), ['token', 'device-id', 'muc', 'push2-key']);
  });

  test('an invalid token is a bad-request naming the token field', async () => {
    const reply = await router.handle(execute('v1-register-push', { type: 'monal-prod', node: 'device-1', token: 'has a space' }));
    assert.deepEqual([errorOf(reply).type, errorOf(reply).condition], ['modify', 'bad-request']);
    assert.match(errorOf(reply).text ?? '', /invalid token/);
  });
});

describe('ad-hoc commands without a p2 mapping', () => {
  test('unmapped p2 commands are neither listed nor executable', async () => {
    const store = new SqliteStore(':memory:');
    const commands = new AdHocCommands({ registrations: new Registrations(store, directoryOf({ apns: scriptedProvider() })), p2: { fcmApp: undefined, apnsApp: 'apns' }, logger: silentLogger });
    const items = commands.items(parse(`<iq to='${SERVICE}'/>`)).map((item) => item.node);
    assert.deepEqual(items.sort(), ['register-push-apns', 'unregister-push-apns', 'v1-register-push', 'v1-unregister-push']);
    const reply = await new IqRouter(silentLogger).on('set', 'command', NS.commands, commands.execute)
      .handle(execute('register-push-fcm', { token: 't', 'device-id': 'd' }));
    assert.deepEqual([errorOf(reply).type, errorOf(reply).condition], ['cancel', 'item-not-found']);
  });
});

describe('ad-hoc registration limits', () => {
  const lines: string[] = [];
  const logger = { ...silentLogger, warn: (message: string) => { lines.push(message); }, child: () => logger };

  function routerWith(options: { perJidPerMinute?: number; perDomainPerMinute?: number; maxPerJid?: number }) {
    const store = new SqliteStore(':memory:');
    const apps = directoryOf({ 'monal-prod': scriptedProvider() });
    const commands = new AdHocCommands({
      registrations: new Registrations(store, apps, Date.now, { maxPerJid: options.maxPerJid }),
      p2: { fcmApp: undefined, apnsApp: undefined },
      logger,
      perJidPerMinute: options.perJidPerMinute,
      perDomainPerMinute: options.perDomainPerMinute,
    });
    return new IqRouter(silentLogger).on('set', 'command', NS.commands, commands.execute);
  }
  const registerAs = (router: IqRouter, from: string, device: string) =>
    router.handle(execute('v1-register-push', { type: 'monal-prod', node: device, token: `tok-${device}` }, { from }));

  test('registrations per JID over the limit get wait/resource-constraint and one warning', async () => {
    lines.length = 0;
    const router = routerWith({ perJidPerMinute: 2 });
    assert.equal((await registerAs(router, 'romeo@montague.example/a', 'd1'))?.attrs.type, 'result');
    assert.equal((await registerAs(router, 'romeo@montague.example/b', 'd2'))?.attrs.type, 'result');
    for (let i = 0; i < 5; i += 1) {
      const refused = errorOf(await registerAs(router, 'romeo@montague.example/c', `d${3 + i}`));
      assert.deepEqual([refused.type, refused.condition], ['wait', 'resource-constraint']);
    }
    assert.equal(lines.filter((line) => /ad-hoc registrations refused/.test(line)).length, 1);
    // Another JID of the same domain is not affected.
    assert.equal((await registerAs(router, 'juliet@montague.example/a', 'j1'))?.attrs.type, 'result');
  });

  test('registrations per domain over the limit get wait/resource-constraint, other domains are served', async () => {
    const router = routerWith({ perDomainPerMinute: 3 });
    for (let i = 0; i < 3; i += 1) assert.equal((await registerAs(router, `user${i}@flood.example`, 'd'))?.attrs.type, 'result');
    assert.deepEqual(Object.values(errorOf(await registerAs(router, 'user9@flood.example', 'd'))).slice(0, 2), ['wait', 'resource-constraint']);
    assert.equal((await registerAs(router, 'romeo@montague.example', 'd'))?.attrs.type, 'result');
  });

  test('a JID at registration.max_per_jid gets wait/resource-constraint for a new device', async () => {
    const router = routerWith({ maxPerJid: 1 });
    assert.equal((await registerAs(router, 'romeo@montague.example', 'd1'))?.attrs.type, 'result');
    assert.deepEqual(Object.values(errorOf(await registerAs(router, 'romeo@montague.example', 'd2'))).slice(0, 2), ['wait', 'resource-constraint']);
  });

  test('unregistering is not limited', async () => {
    const router = routerWith({ perJidPerMinute: 1 });
    assert.equal((await registerAs(router, 'romeo@montague.example', 'd1'))?.attrs.type, 'result');
    const reply = await router.handle(execute('v1-unregister-push', { type: 'monal-prod', node: 'd1' }, { from: 'romeo@montague.example' }));
    assert.equal(reply?.attrs.type, 'result');
  });
});
