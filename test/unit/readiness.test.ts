/**
 * The readiness verdict: one reason per problem, details (paths, key ids, database errors) only
 * for the admin token.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readiness, type ReadinessInputs } from '../../src/http/ops.ts';

function inputs(overrides: Partial<{ write: () => Promise<void>; ping: () => Promise<void>; state: string; degraded: string }>): ReadinessInputs {
  return {
    component: () => ({ state: overrides.state ?? 'online', lastError: overrides.state ? 'connect ECONNREFUSED 127.0.0.1:5347' : undefined }),
    store: { kind: 'sqlite', ping: overrides.ping ?? (async () => {}), probeWrite: overrides.write ?? (async () => {}) },
    apps: () => [
      { name: 'ios', providerKind: 'apns', status: overrides.degraded ? { state: 'degraded', detail: overrides.degraded } : { state: 'ok' } },
    ],
    credentialsExpiry: () => [{ app: 'ios', file: '/etc/push/ios-cert.pem', expiresAt: Date.UTC(2027, 0, 1) }],
  };
}

test('a store that answers but cannot write is not ready, and says so', async () => {
  const failing = inputs({ write: async () => { throw new Error('disk I/O error at /var/lib/push/push.db'); } });
  const anonymous = await readiness(failing, false);
  assert.equal(anonymous.ready, false);
  assert.deepEqual(anonymous.reasons, ['store (sqlite) cannot write']);
  assert.deepEqual(anonymous.store, { kind: 'sqlite', reads: true, writes: false });
  const admin = await readiness(failing, true);
  assert.deepEqual(admin.reasons, ['store (sqlite) cannot write: disk I/O error at /var/lib/push/push.db']);
});

test('a store that does not answer is not probed for writes', async () => {
  let probed = false;
  const report = await readiness(inputs({ ping: async () => { throw new Error('database is locked'); }, write: async () => { probed = true; } }), false);
  assert.deepEqual(report.reasons, ['store (sqlite) does not answer']);
  assert.equal(probed, false);
});

test('every problem is its own reason line', async () => {
  const report = await readiness(inputs({ state: 'offline', degraded: 'APNS (production) rejected our credentials (certificate /etc/push/ios-cert.pem): APNS 403 BadCertificate' }), false);
  assert.deepEqual(report.reasons, ['component not connected (offline)', 'app ios degraded: the push service rejected the app\'s credentials']);
  assert.ok(!JSON.stringify(report).includes('/etc/push'), 'no file path without the admin token');
  assert.equal(report.apps.ios.credentials_expire, '2027-01-01T00:00:00.000Z');
  const admin = await readiness(inputs({ state: 'offline', degraded: 'x' }), true);
  assert.equal(admin.apps.ios.credentials_file, '/etc/push/ios-cert.pem');
  assert.equal(admin.component.last_error, 'connect ECONNREFUSED 127.0.0.1:5347');
});
