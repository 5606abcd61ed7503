/**
 * Scoping and binding rules of registrations (DESIGN §5) that the dialects rely on: group-chat
 * registrations, who may unregister what, and the `[dialects.p2]` configuration.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { parseJid, isBareJid } from '../../src/core/jid.ts';
import { NOT_FOUND, Registrations } from '../../src/core/registrations.ts';
import { parseDocument } from '../../src/config/load.ts';
import { ConfigError } from '../../src/config/reader.ts';
import { readConfig } from '../../src/config/schema.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { directoryOf, scriptedProvider } from '../support/fakes.ts';

describe('registration scopes', () => {
  let store: SqliteStore;
  let registrations: Registrations;

  beforeEach(() => {
    store = new SqliteStore(':memory:');
    registrations = new Registrations(store, directoryOf({ conversations: scriptedProvider() }));
  });

  const register = (group?: string, scope = 'romeo@montague.example') =>
    registrations.register({ app: 'conversations', deviceId: 'android-1', token: 'tok', scope, boundDomain: 'montague.example', group });

  test('a group-chat registration is separate from the device own one and idempotent itself', async () => {
    const own = await register();
    const room = await register('room@conference.example');
    const roomAgain = await register('room@conference.example');
    assert.ok(own.ok && room.ok && roomAgain.ok);
    assert.notEqual(room.registration.node, own.registration.node);
    assert.equal(roomAgain.registration.node, room.registration.node);
    assert.equal(roomAgain.registration.secret, room.registration.secret);
    assert.equal(await store.count(), 2);
  });

  test('two group chats of one device are two registrations', async () => {
    const a = await register('a@conference.example');
    const b = await register('b@conference.example');
    assert.ok(a.ok && b.ok);
    assert.notEqual(a.registration.node, b.registration.node);
  });

  test('unregistering a group chat leaves the device own registration alone', async () => {
    const own = await register();
    const room = await register('room@conference.example');
    assert.ok(own.ok && room.ok);
    const result = await registrations.unregister({ app: 'conversations', deviceId: 'android-1', scope: 'romeo@montague.example', group: 'room@conference.example' });
    assert.deepEqual(result, { ok: true, node: room.registration.node });
    assert.ok(await store.getByNode(own.registration.node));
  });

  test('another scope cannot unregister by naming the node', async () => {
    const own = await register();
    assert.ok(own.ok);
    const result = await registrations.unregister({ app: 'conversations', deviceId: own.registration.node, scope: 'tybalt@capulet.example' });
    assert.equal(result.ok, false);
    assert.ok(await store.getByNode(own.registration.node));
  });

  test('an anonymous caller needs the secret to remove a bound registration, and is told nothing more without it', async () => {
    const own = await register();
    assert.ok(own.ok);
    const refused = await registrations.unregister({ app: 'conversations', deviceId: own.registration.node, anonymous: true });
    assert.ok(!refused.ok);
    // The same answer as for a node that does not exist: no oracle for nodes or domains.
    assert.deepEqual(refused.failure, NOT_FOUND);
    assert.deepEqual(await registrations.unregister({ app: 'conversations', deviceId: 'no-such-node', anonymous: true }), { ok: false, failure: NOT_FOUND });
    const wrong = await registrations.unregister({ app: 'conversations', deviceId: own.registration.node, anonymous: true, secret: 'nope' });
    assert.ok(!wrong.ok && wrong.failure.code === 'not-found');
    const removed = await registrations.unregister({ app: 'conversations', deviceId: own.registration.node, anonymous: true, secret: own.registration.secret });
    assert.deepEqual(removed, { ok: true, node: own.registration.node });
  });

  test('an anonymous caller removes an anonymous registration without a secret, as the original API did', async () => {
    const anonymous = await registrations.register({ app: 'conversations', deviceId: 'dev', token: 'tok', deviceIdAsNode: true });
    assert.ok(anonymous.ok);
    assert.deepEqual(await registrations.unregister({ app: 'conversations', deviceId: 'dev', anonymous: true }), { ok: true, node: 'dev' });
  });
});

describe('requester addresses', () => {
  test('a full JID gives the lower-cased bare JID and domain', () => {
    assert.deepEqual(parseJid('Romeo@Montague.Example/Phone'), { bare: 'romeo@montague.example', domain: 'montague.example' });
  });

  test('a server address is its own bare JID', () => {
    assert.deepEqual(parseJid('example.org'), { bare: 'example.org', domain: 'example.org' });
  });

  test('malformed addresses are refused', () => {
    for (const bad of ['', '@example.org', 'user@', 'a b@example.org', 'user@example.org/']) assert.equal(parseJid(bad), null, bad);
    assert.equal(isBareJid('room@conference.example/nick'), false);
    assert.equal(isBareJid('room@conference.example'), true);
  });
});

describe('[dialects.p2] configuration', () => {
  const read = (toml: string) => readConfig(parseDocument(toml, 'ops.toml'), 'ops.toml');
  const apps = `[apps.conversations]\nprovider = "log"\n[apps.ios]\nprovider = "log"\n`;

  const configError = (toml: string): ConfigError => {
    try {
      read(toml);
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      return error;
    }
    assert.fail('expected a configuration error');
  };

  test('fcm_app and apns_app name the apps the p2 commands register with', () => {
    const config = read(`${apps}[dialects.p2]\nfcm_app = "conversations"\napns_app = "ios"\n`);
    assert.deepEqual(config.p2, { fcmApp: 'conversations', apnsApp: 'ios' });
  });

  test('without [dialects.p2] no p2 app is mapped', () => {
    assert.deepEqual(read(apps).p2, { fcmApp: undefined, apnsApp: undefined });
  });

  test('an app name that is not configured is an error naming the key and the app', () => {
    const error = configError(`${apps}[dialects.p2]\nfcm_app = "conversation"\n`);
    assert.equal(error.key, 'dialects.p2.fcm_app');
    assert.match(error.message, /"conversation"/);
    assert.match(error.message, /conversations, ios/);
  });

  test('an unknown key under [dialects.p2] is an error naming it', () => {
    assert.equal(configError(`${apps}[dialects.p2]\nfcm = "conversations"\n`).key, 'dialects.p2.fcm');
  });

  test('an unknown dialect table is an error naming it', () => {
    assert.equal(configError(`${apps}[dialects.p3]\nfcm_app = "conversations"\n`).key, 'dialects.p3');
  });

  test('a value of the wrong type names the key', () => {
    assert.equal(configError(`${apps}[dialects.p2]\napns_app = 1\n`).key, 'dialects.p2.apns_app');
  });
});
