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

  test('registering the same device with a different token never hands out the old secret and retires the old node', async () => {
    const first = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
    const second = await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-attacker', deviceIdAsNode: true });
    assert.ok(first.ok && second.ok);
    assert.notEqual(second.registration.secret, first.registration.secret);
    assert.notEqual(second.registration.node, first.registration.node);
    assert.equal(await store.getByNode(first.registration.node), undefined);
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
