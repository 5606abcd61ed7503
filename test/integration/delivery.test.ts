/**
 * Issue #11 end to end, with real parts (Prosody, the app server, the mock APNS over HTTP/2 + TLS):
 * an accepted push is delivered through a provider outage longer than the old retry budget; a
 * misconfigured topic deletes no registration and a fixed config delivers to the same devices;
 * Prosody restarting during a publish burst costs nothing but the moment.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Table } from '../../src/config/reader.ts';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns } from '../support/mock-apns.ts';
import { prosodyMissing, startProsody, type ProsodyInstance } from '../support/prosody.ts';
import { publishIq } from '../support/push-stack.ts';
import { testTempDir } from '../support/temp-dir.ts';
import { connectClient, iqErrorOf, type TestClient } from '../support/xmpp-client.ts';
import { eventually } from '../support/eventually.ts';

const skip = prosodyMissing();
const TOPIC = 'org.example.chat';

describe('no accepted push is lost', { skip, timeout: 300_000 }, () => {
  const key = createTestApnsKey();
  let apns: MockApns;
  let prosody: ProsodyInstance;
  let bob: TestClient;
  let nextToken = 5000;
  const apps: TestAppServer[] = [];

  const apnsApp = (topic = TOPIC): Table => ({
    provider: 'apns', topic, endpoint: apns.origin, ca_file: apns.caFile, key_file: key.keyFile, key_id: key.keyId, team_id: key.teamId,
  });

  /** Prosody takes one component connection: the previous test's app server goes first. */
  async function appServer(config: Table): Promise<TestAppServer> {
    for (const old of apps.splice(0)) await old.stop();
    const app = await startAppServer(config, { prosody });
    apps.push(app);
    await app.waitOnline();
    return app;
  }

  async function register(app: TestAppServer, type: string, device: string, token = testDeviceToken(nextToken++)) {
    const reply = await app.post('/push_appserver/v1/register', { type, node: device, token });
    assert.equal(reply.status, 200, reply.body);
    const [, node, secret] = reply.body.split('\n');
    return { node, secret, token };
  }

  /** Publishes as a user's server would and says how it was answered: `result` or the error type. */
  async function publish(node: string, secret: string): Promise<string> {
    try {
      await bob.iq(publishIq(node, secret), 20_000);
      return 'result';
    } catch (error) {
      return iqErrorOf(error).type ?? String(error);
    }
  }

  type Device = Awaited<ReturnType<typeof register>>;

  const delivered = (token: string) => apns.requests.filter((request) => request.token === token && request.status === 200);

  before(async () => {
    apns = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC], wrongTopicReason: 'DeviceTokenNotForTopic' });
    prosody = await startProsody();
    await prosody.register('bob', 'localhost', 'bob-pw');
    bob = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
  });

  after(async () => {
    await bob?.stop();
    for (const app of apps) await app.stop();
    await prosody?.stop();
    await apns?.close();
  });

  test('APNS answering 503 beyond the old five-retry budget: every publish is answered wait or result, and each node gets its push once APNS recovers', async () => {
    const app = await appServer({ push: { retry_max_backoff_s: 1, retry_max_age_s: 120 }, apps: { ios: apnsApp() } });
    const devices: Device[] = [];
    for (let i = 0; i < 3; i++) devices.push(await register(app, 'ios', `outage-${i}`));
    // Ten 503s: more attempts than the old budget (1 + 5 retries), then APNS is back.
    for (const device of devices) apns.setBehaviour(device.token, [...Array(10).fill({ kind: 'server-error', status: 503 }), { kind: 'ok' }]);
    const answers = await Promise.all(devices.map((device) => publish(device.node, device.secret)));
    for (const answer of answers) assert.ok(answer === 'wait' || answer === 'result', `answered ${answer}`);
    for (const device of devices) await eventually(() => (delivered(device.token).length > 0 ? true : undefined), `the push to ${device.node}`, 60_000);
    for (const device of devices) assert.equal(delivered(device.token).length, 1, 'delivered once');
    assert.equal(await app.server.store.countRetries(), 0);
  });

  test('a wrong APNS topic keeps all 100 registrations; with the topic fixed and a restart, the same devices get their pushes', async () => {
    const dbUrl = `sqlite:${join(testTempDir('push-wrong-topic-'), 'push.db')}`;
    const wrong = await appServer({ storage: { url: dbUrl }, push: { retry_max_attempts: 0 }, apps: { ios: apnsApp('org.example.typo') } });
    const devices: Device[] = [];
    for (let i = 0; i < 100; i++) devices.push(await register(wrong, 'ios', `topic-${i}`));
    for (const device of devices) await publish(device.node, device.secret);
    await eventually(() => (wrong.countLog(/registrations are KEPT/) > 0 ? true : undefined), 'the loud ERROR');
    for (const device of devices) assert.ok(await wrong.server.store.getByNode(device.node), `registration ${device.node} kept`);
    const health = await (await fetch(`${wrong.httpUrl}/push_appserver/v1/health`, { headers: { accept: 'application/json' } })).json() as { status: string; apps: Record<string, { state: string }> };
    assert.equal(health.apps.ios.state, 'degraded');
    const fixed = await appServer({ storage: { url: dbUrl }, apps: { ios: apnsApp() } });
    const answers: string[] = [];
    for (const device of devices) answers.push(await publish(device.node, device.secret));
    assert.deepEqual([...new Set(answers)], ['result']);
    for (const device of devices) assert.equal(delivered(device.token).length, 1, `a push reached ${device.node}`);
    assert.equal(await fixed.server.store.count(), 100);
  });

  test('Prosody restarted during a publish burst: no crash, the component reconnects, publishes after it are answered and delivered', async () => {
    const app = await appServer({ apps: { ios: apnsApp() } });
    const devices: Device[] = [];
    for (let i = 0; i < 5; i++) devices.push(await register(app, 'ios', `burst-${i}`));
    const burst = (async () => {
      for (let round = 0; round < 20; round++) {
        await Promise.all(devices.map((device) => publish(device.node, device.secret)));
      }
    })();
    await eventually(() => (apns.requests.filter((request) => devices.some((device) => device.token === request.token)).length >= 5 ? true : undefined), 'the burst to start');
    await prosody.restart();
    await burst;
    await app.waitOnline(30_000);
    await bob.stop();
    bob = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
    const before = new Map(devices.map((device) => [device.token, delivered(device.token).length]));
    for (const device of devices) assert.equal(await publish(device.node, device.secret), 'result');
    for (const device of devices) assert.ok(delivered(device.token).length > before.get(device.token)!, `a push after the restart reached ${device.node}`);
  });
});
