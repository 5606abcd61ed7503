/**
 * Registrations report every change through the telemetry port, so the registration gauge stays
 * right without counting the table (issue #12).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Resolution } from '../../src/core/pipeline.ts';
import { Registrations } from '../../src/core/registrations.ts';
import { RegisteredNodes } from '../../src/core/resolvers/registered.ts';
import { silentLogger } from '../../src/log.ts';
import type { Telemetry } from '../../src/core/telemetry.ts';
import { noTelemetry } from '../../src/core/telemetry.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { directoryOf, scriptedProvider } from '../support/fakes.ts';

function recorder(): { telemetry: Telemetry; changes: string[] } {
  const changes: string[] = [];
  return { changes, telemetry: { ...noTelemetry, registrationChanged: (app, dialect, action) => changes.push(`${app}/${dialect}/${action}`) } };
}

test('created, renewed, replaced and removed registrations are reported with their dialect', async () => {
  const { telemetry, changes } = recorder();
  const store = new SqliteStore(':memory:');
  const registrations = new Registrations(store, directoryOf({ apns: scriptedProvider() }), Date.now, { telemetry });
  await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
  await registrations.register({ app: 'apns', deviceId: 'dev-1', token: 'tok-1', deviceIdAsNode: true });
  const alice = { app: 'apns', deviceId: 'phone', scope: 'alice@example.org', boundDomain: 'example.org', dialect: 'xmpp' } as const;
  await registrations.register({ ...alice, token: 'tok-3' });
  await registrations.register({ ...alice, token: 'tok-4' });
  await registrations.unregister({ app: 'apns', deviceId: 'phone', scope: 'alice@example.org', dialect: 'xmpp' });
  await registrations.unregister({ app: 'apns', deviceId: 'phone', scope: 'alice@example.org', dialect: 'xmpp' });
  assert.deepEqual(changes, [
    'apns/http/created', 'apns/http/renewed', 'apns/xmpp/created', 'apns/xmpp/removed', 'apns/xmpp/created', 'apns/xmpp/removed',
  ]);
  assert.equal(await store.count(), 1, 'created 3, removed 2: the events add up to the table');
  await store.close();
});

test('a registration removed for a dead token is reported with the API that made it, an HTTP one naming a JID included', async () => {
  const { telemetry, changes } = recorder();
  const store = new SqliteStore(':memory:');
  const apps = directoryOf({ apns: scriptedProvider() });
  const registrations = new Registrations(store, apps, Date.now, { telemetry });
  const resolver = new RegisteredNodes(store, apps, silentLogger, Date.now, telemetry);
  const viaHttp = await registrations.register({ app: 'apns', deviceId: 'tablet', token: 'tok-1', namedJid: 'bob@example.org', boundDomain: 'example.org' });
  const viaXmpp = await registrations.register({ app: 'apns', deviceId: 'phone', token: 'tok-2', scope: 'alice@example.org', boundDomain: 'example.org', dialect: 'xmpp' });
  assert.ok(viaHttp.ok && viaXmpp.ok);
  for (const registration of [viaHttp.registration, viaXmpp.registration]) {
    const resolved = await resolver.resolve({ dialect: 'xep0357', node: registration.node, secret: registration.secret, from: 'example.org', summary: {}, options: new Map() });
    assert.equal(resolved?.kind, 'target');
    const target = (resolved as Extract<Resolution, { kind: 'target' }>).target;
    assert.deepEqual(await resolver.tokenDead(target, { kind: 'token-dead', reason: 'Unregistered', since: Date.now() + 1000 }), { kind: 'not-found' });
  }
  assert.deepEqual(changes.filter((change) => change.endsWith('/token_dead')), ['apns/http/token_dead', 'apns/xmpp/token_dead']);
  await store.close();
});
