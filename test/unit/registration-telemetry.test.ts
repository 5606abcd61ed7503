/**
 * Registrations report every change through the telemetry port, so the registration gauge stays
 * right without counting the table (issue #12).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registrations } from '../../src/core/registrations.ts';
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
