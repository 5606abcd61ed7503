/**
 * `push-appserver send-test NODE` and `push-appserver stats`, run as operators run them
 * (bin/push-appserver in a child process) on a config whose APNS app points at the mock APNS.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { Registration } from '../../src/store/types.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns } from '../support/mock-apns.ts';
import { testTempDir } from '../support/temp-dir.ts';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');
const TOPIC = 'org.example.chat';

/** Async, so the in-process mock APNS can answer while the CLI runs. */
function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(CLI, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk) => { stderr += chunk; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

function registration(node: string, app: string, token: string): Registration {
  return {
    node, secret: 's'.repeat(64), app, token, deviceKey: `|${node}`, boundDomain: null,
    registeredAt: Date.now(), renewedAt: Date.now(), lastPushAt: null, lastErrorAt: null, lastError: null, pushCount: 0,
  };
}

describe('send-test and stats', { timeout: 120_000 }, () => {
  let apns: MockApns;
  let configFile: string;

  before(async () => {
    const key = createTestApnsKey();
    apns = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC] });
    apns.setBehaviour(testDeviceToken(602), { kind: 'unregistered', timestamp: 1_700_000_000_000 });
    apns.setBehaviour(testDeviceToken(603), { kind: 'unregistered' });
    const dir = testTempDir('push-appserver-cli-ops-');
    const database = join(dir, 'push.db');
    const store = new SqliteStore(database);
    await store.insert(registration('ios-good', 'ios', testDeviceToken(601)));
    await store.insert(registration('ios-dead', 'ios', testDeviceToken(602)));
    await store.insert(registration('ios-gone', 'ios', testDeviceToken(603)));
    await store.insert(registration('android-1', 'android', 'android-token-000000000001'));
    store.recordFailure('android-1', Date.UTC(2026, 0, 2, 3, 4, 5), 'FCM 503 UNAVAILABLE');
    await store.saveRetry({
      key: 'android-1', dialect: 'xep0357', app: 'android', request: { dialect: 'xep0357', node: 'android-1', secret: null, from: null, options: {} },
      notification: { summary: {}, urgency: 'normal' }, firstAttemptAt: Date.now(), dueAt: Date.now() + 3600_000, attempt: 1, reason: 'FCM 503 UNAVAILABLE',
    });
    await store.close();
    configFile = join(dir, 'push-appserver.toml');
    writeFileSync(configFile, `[storage]
url = "sqlite:${database}"
[apps.ios]
provider = "apns"
topic = "${TOPIC}"
endpoint = "${apns.origin}"
ca_file = "${apns.caFile}"
key_file = "${key.keyFile}"
key_id = "${key.keyId}"
team_id = "${key.teamId}"
[apps.android]
provider = "log"
[apps.unused]
provider = "log"
`);
  });

  after(async () => {
    await apns?.close();
  });

  test('send-test pushes through the configured provider, prints its answer and exits 0 when delivered', async () => {
    const before = apns.requests.length;
    const result = await cli(['send-test', 'ios-good', '--config', configFile]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^ios \(apns\): delivered \(HTTP 200\), id [0-9a-f-]{36}\n$/i);
    const sent = apns.requests.slice(before);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].token, testDeviceToken(601));
  });

  test('send-test exits 1 and prints the provider\'s refusal when the push is not delivered', async () => {
    const result = await cli(['send-test', 'ios-dead', '--config', configFile]);
    assert.equal(result.status, 1);
    // APNS dates the token's death before the registration was made: the device registered again since, so it stays.
    assert.equal(result.stdout, 'ios (apns): token dead (HTTP 410): APNS 410 Unregistered\n');
  });

  test('send-test to a token that died after it was registered removes the registration, like any push, and says so', async () => {
    const result = await cli(['send-test', 'ios-gone', '--config', configFile]);
    assert.equal(result.status, 1);
    assert.equal(result.stdout, 'ios (apns): token dead (HTTP 410): APNS 410 Unregistered\nregistration ios-gone removed: its token is dead\n');
    const again = await cli(['send-test', 'ios-gone', '--config', configFile]);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /no registration with node ios-gone/);
  });

  test('send-test for an unknown node says so and exits 1; without a node it prints the usage', async () => {
    const unknown = await cli(['send-test', 'no-such-node', '--config', configFile]);
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /no registration with node no-such-node/);
    const missing = await cli(['send-test', '--config', configFile]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /send-test needs exactly one NODE/);
  });

  test('stats prints registrations per app, retries pending and the last errors', async () => {
    const result = await cli(['stats', '--config', configFile]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^registrations per app:\n/);
    assert.match(result.stdout, /^ {2}android +1 {2}\(log\)$/m);
    assert.match(result.stdout, /^ {2}ios +2 {2}\(apns\)$/m);
    assert.match(result.stdout, /^ {2}unused +0 {2}\(log\)$/m);
    assert.match(result.stdout, /^ {2}all +3$/m);
    assert.match(result.stdout, /^retries pending: 1$/m);
    assert.match(result.stdout, /^last errors \(1 registrations whose last push failed\):\n {2}2026-01-02T03:04:05\.000Z {2}android {2}android-1 {2}FCM 503 UNAVAILABLE$/m);
  });
});
