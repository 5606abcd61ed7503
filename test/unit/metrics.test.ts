/**
 * The Prometheus adapter of the telemetry port: exact metric names and labels, gauges read at
 * scrape time, the registration gauge kept from events, and the admin page's hour of activity.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PrometheusTelemetry, fanOut, type MetricsSources } from '../../src/ops/metrics.ts';
import { RecentActivity } from '../../src/ops/recent.ts';

function sources(state: { connected: boolean; degraded: Record<string, boolean>; expiry?: Record<string, number> }): MetricsSources {
  return {
    componentConnected: () => state.connected,
    appsDegraded: () => Object.entries(state.degraded).map(([app, degraded]) => ({ app, degraded })),
    credentialsExpiry: () => Object.entries(state.expiry ?? {}).map(([app, expiresAt]) => ({ app, expiresAt })),
  };
}

/** `name{labels} value` lines of the exposition, as a map. */
async function samples(telemetry: PrometheusTelemetry): Promise<Map<string, number>> {
  const text = await telemetry.metrics();
  const map = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    map.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return map;
}

test('publishes are counted by app, dialect and result, with their duration per dialect', async () => {
  const telemetry = new PrometheusTelemetry({ sources: sources({ connected: true, degraded: {} }), processMetrics: false });
  telemetry.publishAnswered('ios', 'xep0357', 'delivered', 0.004);
  telemetry.publishAnswered('ios', 'xep0357', 'delivered', 0.2);
  telemetry.publishAnswered('', 'xep0357', 'not_found', 0.0005);
  telemetry.publishAnswered('android', 'http', 'temporary', 1.5);
  const s = await samples(telemetry);
  assert.equal(s.get('push_appserver_publishes_total{app="ios",dialect="xep0357",result="delivered"}'), 2);
  assert.equal(s.get('push_appserver_publishes_total{app="",dialect="xep0357",result="not_found"}'), 1);
  assert.equal(s.get('push_appserver_publishes_total{app="android",dialect="http",result="temporary"}'), 1);
  assert.equal(s.get('push_appserver_publish_duration_seconds_count{dialect="xep0357"}'), 3);
  assert.equal(s.get('push_appserver_publish_duration_seconds_bucket{le="0.005",dialect="xep0357"}'), 2);
  assert.equal(s.get('push_appserver_publish_duration_seconds_sum{dialect="http"}'), 1.5);
});

test('provider requests are counted by outcome and by HTTP status, with their duration', async () => {
  const telemetry = new PrometheusTelemetry({ sources: sources({ connected: true, degraded: {} }), processMetrics: false });
  telemetry.providerRequest('ios', 'apns', 'delivered', 200, 0.02);
  telemetry.providerRequest('ios', 'apns', 'token_dead', 410, 0.03);
  telemetry.providerRequest('ios', 'apns', 'error', undefined, 10);
  telemetry.providerRequest('ios', 'apns', 'rejected', 9999, 0.01);
  const s = await samples(telemetry);
  assert.equal(s.get('push_appserver_provider_requests_total{app="ios",provider="apns",outcome="delivered"}'), 1);
  assert.equal(s.get('push_appserver_provider_requests_total{app="ios",provider="apns",outcome="token_dead"}'), 1);
  assert.equal(s.get('push_appserver_provider_requests_total{app="ios",provider="apns",outcome="error"}'), 1);
  assert.equal(s.get('push_appserver_provider_responses_total{app="ios",provider="apns",status="200"}'), 1);
  assert.equal(s.get('push_appserver_provider_responses_total{app="ios",provider="apns",status="410"}'), 1);
  assert.equal(s.get('push_appserver_provider_responses_total{app="ios",provider="apns",status="other"}'), 1, 'no series per junk status');
  assert.equal([...s.keys()].filter((key) => key.startsWith('push_appserver_provider_responses_total')).length, 3, 'no answer, no status series');
  assert.equal(s.get('push_appserver_provider_request_duration_seconds_count{app="ios",provider="apns"}'), 4);
});

test('retries: the pending gauge takes the reported value, results are counted', async () => {
  const telemetry = new PrometheusTelemetry({ sources: sources({ connected: true, degraded: {} }), processMetrics: false });
  telemetry.retriesPending(7);
  telemetry.retryFinished('ios', 'delivered');
  telemetry.retryFinished('ios', 'rescheduled');
  telemetry.retryFinished('ios', 'rescheduled');
  const s = await samples(telemetry);
  assert.equal(s.get('push_appserver_retries_pending'), 7);
  assert.equal(s.get('push_appserver_retries_total{app="ios",result="rescheduled"}'), 2);
});

test('the registration gauge starts from one count and follows created and removed events', async () => {
  const telemetry = new PrometheusTelemetry({ sources: sources({ connected: true, degraded: {} }), processMetrics: false });
  telemetry.setRegistrationCounts(new Map([['ios', 10]]), ['ios', 'android']);
  telemetry.registrationChanged('ios', 'http', 'created');
  telemetry.registrationChanged('ios', 'xmpp', 'renewed');
  telemetry.registrationChanged('ios', 'http', 'removed');
  telemetry.registrationChanged('ios', 'http', 'token_dead');
  telemetry.registrationChanged('android', 'xmpp', 'created');
  telemetry.registrationChanged('android', 'xmpp', 'expired');
  telemetry.registrationChanged('android', 'xmpp', 'expired');
  const s = await samples(telemetry);
  assert.equal(s.get('push_appserver_registrations{app="ios"}'), 9);
  assert.equal(s.get('push_appserver_registrations{app="android"}'), 0, 'never below zero');
  assert.equal(s.get('push_appserver_registrations_total{app="ios",dialect="xmpp",action="renewed"}'), 1);
  assert.equal(s.get('push_appserver_registrations_total{app="android",dialect="xmpp",action="expired"}'), 2);
});

test('component, degraded apps and certificate expiry are read when Prometheus scrapes', async () => {
  const state = { connected: false, degraded: { ios: false, android: true } as Record<string, boolean>, expiry: { ioscert: Date.UTC(2027, 5, 1) } };
  const telemetry = new PrometheusTelemetry({ sources: sources(state), processMetrics: false });
  let s = await samples(telemetry);
  assert.equal(s.get('push_appserver_component_connected'), 0);
  assert.equal(s.get('push_appserver_component_reconnects_total'), 0);
  assert.equal(s.get('push_appserver_app_degraded{app="android"}'), 1);
  assert.equal(s.get('push_appserver_app_degraded{app="ios"}'), 0);
  assert.equal(s.get('push_appserver_credentials_expiry_timestamp_seconds{app="ioscert"}'), Date.UTC(2027, 5, 1) / 1000);
  state.connected = true;
  state.degraded.android = false;
  telemetry.componentReconnected();
  s = await samples(telemetry);
  assert.equal(s.get('push_appserver_component_connected'), 1);
  assert.equal(s.get('push_appserver_component_reconnects_total'), 1);
  assert.equal(s.get('push_appserver_app_degraded{app="android"}'), 0);
});

test('Node process metrics are included by default', async () => {
  const telemetry = new PrometheusTelemetry({ sources: sources({ connected: true, degraded: {} }) });
  const text = await telemetry.metrics();
  assert.match(text, /^process_cpu_user_seconds_total /m);
  assert.match(text, /^nodejs_eventloop_lag_seconds /m);
  assert.match(telemetry.contentType, /^text\/plain; version=0\.0\.4/);
});

test('the admin page\'s hour counts deliveries and errors per app and keeps the last failures', () => {
  let now = Date.UTC(2026, 0, 1, 12, 0, 0);
  const recent = new RecentActivity(() => now);
  const both = fanOut(recent, new PrometheusTelemetry({ sources: sources({ connected: true, degraded: {} }), processMetrics: false }));
  both.providerRequest('ios', 'apns', 'delivered', 200, 0.01);
  both.providerRequest('ios', 'apns', 'retry', 503, 0.01);
  now += 30 * 60_000;
  both.providerRequest('ios', 'apns', 'delivered', 200, 0.01);
  both.providerRequest('ios', 'apns', 'token_dead', 410, 0.01);
  both.retriesPending(3);
  assert.deepEqual({ ...recent.lastHour('ios'), failures: recent.lastHour('ios').failures.map((f) => f.status) }, { delivered: 2, errors: 2, failures: [410, 503] });
  assert.equal(recent.pendingRetries, 3);
  now += 45 * 60_000;
  assert.deepEqual({ ...recent.lastHour('ios'), failures: recent.lastHour('ios').failures.map((f) => f.status) }, { delivered: 1, errors: 1, failures: [410] }, 'older than an hour: gone');
  now += 24 * 3600_000;
  assert.deepEqual(recent.lastHour('ios'), { delivered: 0, errors: 0, failures: [] });
  assert.deepEqual(recent.lastHour('never-used'), { delivered: 0, errors: 0, failures: [] });
});

test('after an expiry sweep the gauge takes the recount and the drop is counted as expired under dialect="expiry"', async () => {
  const telemetry = new PrometheusTelemetry({ sources: sources({ connected: true, degraded: {} }), processMetrics: false });
  telemetry.setRegistrationCounts(new Map([['ios', 10], ['android', 4]]));
  telemetry.registrationsExpired(new Map([['ios', 7], ['android', 4]]));
  const s = await samples(telemetry);
  assert.equal(s.get('push_appserver_registrations{app="ios"}'), 7);
  assert.equal(s.get('push_appserver_registrations_total{app="ios",dialect="expiry",action="expired"}'), 3);
  assert.equal(s.has('push_appserver_registrations_total{app="ios",dialect="http",action="expired"}'), false, 'not counted as made over HTTP');
  assert.equal(s.has('push_appserver_registrations_total{app="android",dialect="expiry",action="expired"}'), false);
});
