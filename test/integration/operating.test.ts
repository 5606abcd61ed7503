/**
 * What an operator watches, against the real chain (Prosody, the app server as its component, the
 * mock APNS over HTTP/2+TLS): /metrics after publishes, /ready with its reasons, the metrics token.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { prosodyMissing } from '../support/prosody.ts';
import { publishIq, startPushStack, type PushStack } from '../support/push-stack.ts';
import { startAppServer } from '../support/app-server.ts';
import { rejectionOf } from '../support/xmpp-client.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns } from '../support/mock-apns.ts';
import { join } from 'node:path';
import { SqliteStore } from '../../src/store/sqlite.ts';

const skip = prosodyMissing();
const TOPIC = 'org.example.chat';
const ADMIN_TOKEN = 'operating-test-admin-token-0123456789abcdef';
const METRICS_TOKEN = 'scrape-token-for-prometheus';

async function scrape(url: string): Promise<Map<string, number>> {
  const response = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of (await response.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** Polls the metrics until `probe` is satisfied (counters are updated as answers go out). */
async function metricsUntil(url: string, probe: (samples: Map<string, number>) => boolean): Promise<Map<string, number>> {
  const deadline = performance.now() + 15_000;
  for (;;) {
    const samples = await scrape(url);
    if (probe(samples)) return samples;
    if (performance.now() > deadline) return samples;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('metrics and readiness through Prosody', { skip, timeout: 180_000 }, () => {
  let stack: PushStack;
  let apns: MockApns;
  const unknownKey = createTestApnsKey({ keyId: 'UNKNOWN777' });

  before(async () => {
    const key = createTestApnsKey();
    apns = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC] });
    const auth = { endpoint: apns.origin, ca_file: apns.caFile, key_file: key.keyFile, key_id: key.keyId, team_id: key.teamId };
    stack = await startPushStack({
      http: { admin_token: ADMIN_TOKEN },
      metrics: { token: METRICS_TOKEN },
      apps: {
        ios: { provider: 'apns', topic: TOPIC, ...auth },
        iosbadkey: { provider: 'apns', topic: TOPIC, ...auth, key_file: unknownKey.keyFile, key_id: unknownKey.keyId },
      },
    });
  });

  after(async () => {
    await stack?.stop();
    await apns?.close();
  });

  test('ready says READY while the component is connected, the store writes and no app is degraded', async () => {
    const response = await fetch(`${stack.app.httpUrl}/push_appserver/v1/ready`);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), 'READY');
    const json = await (await fetch(`${stack.app.httpUrl}/push_appserver/v1/ready`, { headers: { accept: "application/json" } })).json() as any;
    assert.equal(json.ready, true);
    assert.deepEqual(json.store, { kind: 'sqlite', reads: true, writes: true });
    assert.equal(json.component.state, 'online');
  });

  test('/metrics needs the metrics token when one is configured', async () => {
    const anonymous = await fetch(`${stack.app.httpUrl}/metrics`);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get('www-authenticate'), 'Bearer realm="metrics"');
    const wrong = await fetch(`${stack.app.httpUrl}/metrics`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401);
  });

  test('a delivered publish shows in the publish, provider, status and registration metrics', async () => {
    const url = stack.app.httpUrl;
    const reply = await stack.app.post('/push_appserver/v1/register', { type: 'ios', node: 'metrics-device', token: testDeviceToken(501) });
    const [, node, secret] = reply.body.split('\n');
    await stack.bob.iq(publishIq(node, secret));
    const samples = await metricsUntil(url, (s) => s.get('push_appserver_publishes_total{app="ios",dialect="xep0357",result="delivered"}') === 1);
    assert.equal(samples.get('push_appserver_publishes_total{app="ios",dialect="xep0357",result="delivered"}'), 1);
    assert.equal(samples.get('push_appserver_provider_requests_total{app="ios",provider="apns",outcome="delivered"}'), 1);
    assert.equal(samples.get('push_appserver_provider_responses_total{app="ios",provider="apns",status="200"}'), 1);
    assert.equal(samples.get('push_appserver_provider_request_duration_seconds_count{app="ios",provider="apns"}'), 1);
    assert.equal(samples.get('push_appserver_publish_duration_seconds_count{dialect="xep0357"}'), 1);
    assert.equal(samples.get('push_appserver_registrations{app="ios"}'), 1);
    assert.equal(samples.get('push_appserver_registrations_total{app="ios",dialect="http",action="created"}'), 1);
    assert.equal(samples.get('push_appserver_component_connected'), 1);
    assert.equal(samples.get('push_appserver_app_degraded{app="ios"}'), 0);
    assert.ok((samples.get('process_resident_memory_bytes') ?? 0) > 0, 'Node process metrics');
  });

  test('a publish for an unknown node counts with app=""', async () => {
    await rejectionOf(stack.bob.iq(publishIq('no-such-node', 'whatever')));
    const samples = await metricsUntil(stack.app.httpUrl, (s) => s.has('push_appserver_publishes_total{app="",dialect="xep0357",result="not_found"}'));
    assert.equal(samples.get('push_appserver_publishes_total{app="",dialect="xep0357",result="not_found"}'), 1);
  });

  test('rejected credentials make the app degraded: ready answers 503 with the reason, key ids only with the admin token', async () => {
    const reply = await stack.app.post('/push_appserver/v1/register', { type: 'iosbadkey', node: 'badkey-device', token: testDeviceToken(502) });
    const [, node, secret] = reply.body.split('\n');
    await rejectionOf(stack.bob.iq(publishIq(node, secret)));
    const url = stack.app.httpUrl;
    const samples = await metricsUntil(url, (s) => s.get('push_appserver_app_degraded{app="iosbadkey"}') === 1);
    assert.equal(samples.get('push_appserver_app_degraded{app="iosbadkey"}'), 1);
    assert.equal(samples.get('push_appserver_provider_requests_total{app="iosbadkey",provider="apns",outcome="credentials_rejected"}'), 1);
    assert.equal(samples.get('push_appserver_provider_responses_total{app="iosbadkey",provider="apns",status="403"}'), 1);

    const anonymous = await fetch(`${url}/push_appserver/v1/ready`);
    assert.equal(anonymous.status, 503);
    assert.equal(await anonymous.text(), 'NOT READY\napp iosbadkey degraded: the push service rejected the app\'s credentials');
    const anonymousJson = await (await fetch(`${url}/push_appserver/v1/ready`, { headers: { accept: 'application/json' } })).text();
    assert.ok(!anonymousJson.includes('UNKNOWN777'), 'no key id without the admin token');
    const admin = await fetch(`${url}/push_appserver/v1/ready`, { headers: { accept: 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(admin.status, 503);
    const report = await admin.json() as any;
    assert.equal(report.ready, false);
    assert.match(report.apps.iosbadkey.detail, /key UNKNOWN777/);
    assert.equal(report.apps.ios.state, 'ok');
    const health = await fetch(`${url}/push_appserver/v1/health`);
    assert.equal(health.status, 200, 'liveness keeps its contract');
    assert.equal(await health.text(), 'RUNNING');
  });

  test('a Prosody restart shows in the metrics: component_connected goes 0 then 1, reconnects_total counts one', async () => {
    const url = stack.app.httpUrl;
    const before = await scrape(url);
    assert.equal(before.get('push_appserver_component_connected'), 1);
    assert.equal(before.get('push_appserver_component_reconnects_total'), 0);
    let whileDown: Map<string, number> | undefined;
    await stack.prosody.restart(async () => {
      whileDown = await metricsUntil(url, (s) => s.get('push_appserver_component_connected') === 0);
    });
    assert.equal(whileDown?.get('push_appserver_component_connected'), 0, 'disconnected while Prosody is down');
    assert.equal(whileDown?.get('push_appserver_component_reconnects_total'), 0, 'nothing re-established yet');
    const after = await metricsUntil(url, (s) => s.get('push_appserver_component_connected') === 1 && s.get('push_appserver_component_reconnects_total') === 1);
    assert.equal(after.get('push_appserver_component_connected'), 1);
    assert.equal(after.get('push_appserver_component_reconnects_total'), 1);
    const ready = await fetch(`${url}/push_appserver/v1/ready`, { headers: { accept: 'application/json' } });
    assert.equal((await ready.json() as any).component.state, 'online');
  });
});

describe('readiness without the XMPP server', () => {
  test('a component that cannot connect makes ready answer 503 naming it; metrics can be turned off', async () => {
    const app = await startAppServer({ metrics: { enabled: false } });
    try {
      const response = await fetch(`${app.httpUrl}/push_appserver/v1/ready`);
      assert.equal(response.status, 503);
      assert.match(await response.text(), /^NOT READY\ncomponent not connected \((connecting|offline)\)$/);
      assert.equal((await fetch(`${app.httpUrl}/metrics`)).status, 404);
    } finally {
      await app.stop();
    }
  });
});

test('the registrations gauge follows changes made outside this process (another instance, the CLI) at the next recount', async () => {
  const app = await startAppServer({ metrics: { token: METRICS_TOKEN, registrations_recount_s: 1 }, apps: { ios: { provider: 'log' } } });
  try {
    for (const device of ['a', 'b', 'c']) {
      const reply = await app.post('/push_appserver/v1/register', { type: 'ios', node: `gauge-${device}`, token: testDeviceToken(600 + device.charCodeAt(0)) });
      assert.equal(reply.status, 200);
    }
    assert.equal((await scrape(app.httpUrl)).get('push_appserver_registrations{app="ios"}'), 3, 'this process counted its own registrations');
    // What another instance on the same database, or `push-appserver registrations remove`, does.
    const other = new SqliteStore(join(app.dir, 'push.db'));
    const [first] = await other.list({ limit: 1 });
    assert.equal(await other.remove(first.node), true);
    await other.close();
    const samples = await metricsUntil(app.httpUrl, (s) => s.get('push_appserver_registrations{app="ios"}') === 2);
    assert.equal(samples.get('push_appserver_registrations{app="ios"}'), 2);
  } finally {
    await app.stop();
  }
});
