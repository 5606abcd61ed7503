import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { Registrations } from '../../src/core/registrations.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { directoryOf, scriptedProvider } from '../support/fakes.ts';

describe('registrations', () => {
  let store: SqliteStore;
  let registrations: Registrations;

  beforeEach(() => {
    store = new SqliteStore(':memory:');
    registrations = new Registrations(store, directoryOf({ apns: scriptedProvider(), fcm: scriptedProvider() }));
  });

  test('a first registration gets the device id as node and a 256-bit hex secret', async () => {
    const result = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
    assert.ok(result.ok);
    assert.equal(result.registration.node, 'dev-1');
    assert.match(result.registration.secret, /^[0-9a-f]{64}$/);
  });

  test('registering the same device with the same token again returns the same node and secret', async () => {
    const first = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
    const second = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
    assert.ok(first.ok && second.ok);
    assert.equal(second.registration.node, first.registration.node);
    assert.equal(second.registration.secret, first.registration.secret);
    assert.equal(second.created, false);
  });

  test('an HTTP re-registration with another token and no secret gets a node of its own and the old one keeps working', async () => {
    const first = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
    const second = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-attacker', deviceIdAsNode: true });
    assert.ok(first.ok && second.ok);
    assert.notEqual(second.registration.secret, first.registration.secret);
    assert.notEqual(second.registration.node, first.registration.node);
    assert.equal((await store.getByNode(first.registration.node))?.token, 'tok-1');
    // Both stay idempotent for their own token.
    const firstAgain = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
    const secondAgain = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-attacker', deviceIdAsNode: true });
    assert.ok(firstAgain.ok && secondAgain.ok);
    assert.deepEqual([firstAgain.registration.node, firstAgain.registration.secret], [first.registration.node, first.registration.secret]);
    assert.deepEqual([secondAgain.registration.node, secondAgain.registration.secret], [second.registration.node, second.registration.secret]);
  });

  test('an HTTP re-registration with another token and the old secret replaces the registration without handing out that secret', async () => {
    const first = await registrations.register({ app: 'apns', deviceId: 'dev-r', token: 'tok-1', deviceIdAsNode: true });
    assert.ok(first.ok);
    const second = await registrations.register({ app: 'apns', deviceId: 'dev-r', token: 'tok-2', secret: first.registration.secret, deviceIdAsNode: true });
    assert.ok(second.ok);
    assert.notEqual(second.registration.secret, first.registration.secret);
    assert.notEqual(second.registration.node, first.registration.node);
    assert.equal(await store.getByNode(first.registration.node), undefined);
  });

  test('a JID re-registering its device with another token replaces its registration', async () => {
    const first = await registrations.register({ app: 'apns', deviceId: 'dev-x', token: 'tok-1', scope: 'juliet@capulet.example', boundDomain: 'capulet.example' });
    const second = await registrations.register({ app: 'apns', deviceId: 'dev-x', token: 'tok-2', scope: 'juliet@capulet.example', boundDomain: 'capulet.example' });
    assert.ok(first.ok && second.ok);
    assert.notEqual(second.registration.secret, first.registration.secret);
    assert.equal(await store.getByNode(first.registration.node), undefined);
  });

  test('an HTTP registration naming a JID never reaches the registration that JID made over XMPP', async () => {
    const victim = await registrations.register({ app: 'apns', deviceId: 'phone', token: 'tok-victim', scope: 'juliet@capulet.example', boundDomain: 'capulet.example' });
    const attacker = await registrations.register({ app: 'apns', deviceId: 'phone', token: 'tok-attacker', namedJid: 'juliet@capulet.example', boundDomain: 'capulet.example', deviceIdAsNode: true });
    assert.ok(victim.ok && attacker.ok);
    assert.notEqual(attacker.registration.node, victim.registration.node);
    assert.equal((await store.getByNode(victim.registration.node))?.token, 'tok-victim');
    const removal = await registrations.unregister({ app: 'apns', deviceId: 'phone', namedJid: 'juliet@capulet.example', anonymous: true });
    assert.equal(removal.ok, false);
    assert.ok(await store.getByNode(victim.registration.node));
  });

  test('a JID holds at most registration.max_per_jid registrations', async () => {
    const limited = new Registrations(store, directoryOf({ apns: scriptedProvider() }), Date.now, { maxPerJid: 2 });
    const jid = { scope: 'romeo@montague.example', boundDomain: 'montague.example' };
    assert.ok((await limited.register({ app: 'apns', deviceId: 'a', token: 't', ...jid })).ok);
    assert.ok((await limited.register({ app: 'apns', deviceId: 'b', token: 't', ...jid })).ok);
    const third = await limited.register({ app: 'apns', deviceId: 'c', token: 't', ...jid });
    assert.ok(!third.ok && third.failure.code === 'limited');
    // Renewing and replacing what it holds still work; another JID is not affected.
    assert.ok((await limited.register({ app: 'apns', deviceId: 'a', token: 't', ...jid })).ok);
    assert.ok((await limited.register({ app: 'apns', deviceId: 'b', token: 't2', ...jid })).ok);
    assert.ok((await limited.register({ app: 'apns', deviceId: 'c', token: 't', scope: 'romeo@montague.example.net', boundDomain: 'montague.example.net' })).ok);
  });

  test('apps.NAME.allowed_domains refuses registrations for other domains and anonymous ones', async () => {
    const guarded = new Registrations(store, directoryOf({ apns: scriptedProvider() }), Date.now, { allowedDomains: () => ['capulet.example'] });
    assert.ok((await guarded.register({ app: 'apns', deviceId: 'a', token: 't', scope: 'juliet@capulet.example', boundDomain: 'capulet.example' })).ok);
    const other = await guarded.register({ app: 'apns', deviceId: 'a', token: 't', scope: 'romeo@montague.example', boundDomain: 'montague.example' });
    assert.ok(!other.ok && other.failure.code === 'forbidden');
    const anonymous = await guarded.register({ app: 'apns', deviceId: 'a', token: 't' });
    assert.ok(!anonymous.ok && anonymous.failure.code === 'forbidden');
  });

  test('the same device id registered by two users stays two registrations', async () => {
    const alice = await registrations.register({ app: 'fcm', deviceId: 'same-id', token: 't-a', scope: 'alice@a.example' });
    const bob = await registrations.register({ app: 'fcm', deviceId: 'same-id', token: 't-b', scope: 'bob@b.example' });
    assert.ok(alice.ok && bob.ok);
    assert.notEqual(alice.registration.node, bob.registration.node);
    assert.equal(await store.count(), 2);
  });

  test('an unknown type is refused naming the type', async () => {
    const result = await registrations.register({ app: 'nope', deviceId: 'd', token: 't' });
    assert.ok(!result.ok);
    assert.equal(result.failure.code, 'unknown-app');
    assert.match(result.failure.message, /nope/);
  });

  test('a missing token is refused naming the field', async () => {
    const result = await registrations.register({ app: 'apns', deviceId: 'd', token: '' });
    assert.ok(!result.ok);
    assert.equal(result.failure.code, 'bad-request');
    assert.match(result.failure.message, /token/);
  });

  test('an oversized node is refused', async () => {
    const result = await registrations.register({ app: 'apns', deviceId: 'x'.repeat(5000), token: 't' });
    assert.ok(!result.ok);
    assert.match(result.failure.message, /node/);
  });

  test('a token the provider rejects is refused with its reason', async () => {
    const result = await registrations.register({ app: 'apns', deviceId: 'd', token: 'has space' });
    assert.ok(!result.ok);
    assert.match(result.failure.message, /space/);
  });

  test('unregistering removes the registration and answers its node', async () => {
    const registered = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
    assert.ok(registered.ok);
    const result = await registrations.unregister({ app: 'apns', deviceId: 'dev-1' });
    assert.deepEqual(result, { ok: true, node: 'dev-1' });
    assert.equal(await store.getByNode('dev-1'), undefined);
  });

  test('unregistering an unknown device is a not-found failure', async () => {
    const result = await registrations.unregister({ app: 'apns', deviceId: 'ghost' });
    assert.ok(!result.ok);
    assert.equal(result.failure.code, 'not-found');
  });
});
