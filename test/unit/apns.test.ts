/**
 * The APNS provider against the mock APNS (real HTTP/2 over TLS on loopback): configuration,
 * headers and payloads per mode, answer → Outcome, the provider token's reuse and refresh, GOAWAY,
 * the payload limit and token validation. A movable clock stands in for the passing of minutes.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, TableReader, type Table } from '../../src/config/reader.ts';
import { silentLogger } from '../../src/log.ts';
import { ApnsProvider, apnsProvider, validateApnsToken, type ApnsConfig, type ApnsProviderOptions } from '../../src/providers/apns.ts';
import { buildApnsRequest } from '../../src/providers/apns/request.ts';
import { outcomeFromApnsResponse } from '../../src/providers/apns/responses.ts';
import type { Notification } from '../../src/providers/types.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns, type MockApnsOptions } from '../support/mock-apns.ts';
import { closedPort } from '../support/ports.ts';
import { testPki } from '../support/tls.ts';
import { testTempDir } from '../support/temp-dir.ts';

const TOPIC = 'org.example.chat';
const key = createTestApnsKey();
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  await Promise.all(cleanups.map((cleanup) => cleanup()));
});

const withBody: Notification = { summary: { messageCount: 3, lastMessageSender: 'juliet@capulet.example', lastMessageBody: 'Wherefore art thou?' }, urgency: 'high' };
const silent: Notification = { summary: { messageCount: 1 }, urgency: 'normal' };
const target = (n: number) => ({ app: 'ios', node: `node-${n}`, token: testDeviceToken(n) });

function parse(table: Table): ApnsConfig {
  return apnsProvider.parseConfig(new TableReader('test.toml', 'apps.ios', table));
}

function tokenTable(mock: { origin: string; caFile: string } | undefined, extra: Table = {}): Table {
  return {
    topic: TOPIC,
    key_file: key.keyFile,
    key_id: key.keyId,
    team_id: key.teamId,
    ...(mock ? { endpoint: mock.origin, ca_file: mock.caFile } : {}),
    ...extra,
  };
}

/** A clock the test moves; it starts now so the mock's 410 timestamps look real. */
function movableClock() {
  let now = Date.now();
  return { now: () => now, advance: (ms: number) => { now += ms; } };
}

async function mockApns(options: MockApnsOptions = {}): Promise<MockApns> {
  const mock = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], ...options });
  cleanups.push(() => mock.close());
  return mock;
}

function provider(config: ApnsConfig, options: ApnsProviderOptions = {}): ApnsProvider {
  const created = new ApnsProvider(config, { app: 'ios', logger: silentLogger }, options);
  cleanups.push(() => created.close());
  return created;
}

async function tokenSetup(extra: Table = {}, mockOptions: MockApnsOptions = {}) {
  const clock = movableClock();
  const mock = await mockApns({ now: clock.now, ...mockOptions });
  const apns = provider(parse(tokenTable(mock, extra)), { now: clock.now });
  return { clock, mock, apns };
}

describe('APNS configuration', () => {
  test('token auth with defaults: production host, alert type, auto priority, mutable content, "New Message"', () => {
    const config = parse(tokenTable(undefined));
    assert.equal(config.origin, 'https://api.push.apple.com');
    assert.equal(config.environment, 'production');
    assert.equal(config.auth.kind, 'token');
    assert.equal(config.pushType, 'alert');
    assert.equal(config.priority, 'auto');
    assert.equal(config.mutableContent, true);
    assert.equal(config.alertText, 'New Message');
    assert.equal(config.includeBody, false);
    assert.equal(config.badge, false);
    assert.equal(config.ttlSeconds, undefined);
    assert.equal(config.connections, 1);
    assert.equal(config.ca, undefined);
  });

  test('environment = "sandbox" selects the sandbox host unless endpoint overrides it', () => {
    assert.equal(parse(tokenTable(undefined, { environment: 'sandbox' })).origin, 'https://api.sandbox.push.apple.com');
    assert.equal(parse(tokenTable(undefined, { environment: 'sandbox', endpoint: 'https://127.0.0.1:8443' })).origin, 'https://127.0.0.1:8443');
  });

  test('ca_file adds the test CA to the built-in roots', () => {
    const config = parse(tokenTable(undefined, { ca_file: testPki().caFile }));
    assert.ok(config.ca && config.ca.length > 1);
    assert.equal(config.ca.at(-1), testPki().ca);
  });

  test('a config with both token and certificate auth is refused, naming both', () => {
    const identity = testPki().clientCertificate('apns-both');
    assert.throws(() => parse(tokenTable(undefined, { cert_file: identity.certFile })), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /token auth \(key_id, team_id\) and certificate auth \(cert_file\) are both configured/);
      return true;
    });
  });

  test('a config with neither token nor certificate auth is refused, saying what to add', () => {
    assert.throws(() => parse({ topic: TOPIC }), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /apps\.ios\.key_file: no APNS credentials: give token auth/);
      return true;
    });
    assert.throws(() => parse({ topic: TOPIC, key_file: key.keyFile }), /key_file: is not enough on its own/);
  });

  test('a key file that is not an EC P-256 key is refused', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const file = join(testTempDir('apns-rsa-'), 'rsa.p8');
    writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }));
    assert.throws(() => parse(tokenTable(undefined, { key_file: file })), /key_file: .* must hold an EC P-256 key/);
    assert.throws(() => parse(tokenTable(undefined, { key_file: '/nonexistent/AuthKey.p8' })), /key_file: cannot read "\/nonexistent\/AuthKey.p8": file not found/);
  });

  test('certificate auth reads PEM files with a passphrase and refuses a wrong one', () => {
    const identity = testPki().clientCertificate('apns-locked', { passphrase: 'open sesame' });
    const config = parse({ topic: TOPIC, cert_file: identity.certFile, key_file: identity.keyFile, passphrase: 'open sesame' });
    assert.equal(config.auth.kind, 'certificate');
    assert.throws(() => parse({ topic: TOPIC, cert_file: identity.certFile, key_file: identity.keyFile, passphrase: 'wrong' }), /key_file: .*cannot be decrypted/);
    assert.throws(() => parse({ topic: TOPIC, cert_file: identity.certFile }), /key_file: is required with cert_file/);
  });

  test('certificate auth accepts a PKCS#12 file', () => {
    const identity = testPki().clientCertificate('apns-p12', { passphrase: 'p12pass' });
    assert.equal(parse({ topic: TOPIC, p12_file: identity.p12File, passphrase: 'p12pass' }).auth.kind, 'certificate');
    assert.throws(() => parse({ topic: TOPIC, p12_file: identity.p12File, passphrase: 'nope' }), /p12_file: .*cannot be used/);
  });

  test('contradictory or unknown settings are refused', () => {
    assert.throws(() => parse(tokenTable(undefined, { push_type: 'background', priority: 'high' })), /priority: a background push must go with priority 5/);
    assert.throws(() => parse(tokenTable(undefined, { push_type: 'voip', priority: 'silent' })), /priority: a VoIP push is always sent with priority 10/);
    assert.throws(() => parse(tokenTable(undefined, { push_typ: 'alert' })), /apps\.ios\.push_typ: is not a known setting here/);
    assert.throws(() => parse(tokenTable(undefined, { endpoint: 'http://127.0.0.1:1' })), /endpoint: must be an https origin/);
    assert.throws(() => parse(tokenTable(undefined, { collapse_id: 'x'.repeat(65) })), /collapse_id: must be 1 to 64 bytes/);
  });
});

describe('APNS device tokens', () => {
  test('64 to 200 hex digits are accepted, anything else is refused before reaching Apple', () => {
    assert.equal(validateApnsToken('a'.repeat(64)), null);
    assert.equal(validateApnsToken('0123456789ABCDEF'.repeat(4)), null);
    assert.equal(validateApnsToken('a'.repeat(200)), null);
    assert.match(validateApnsToken('a'.repeat(63))!, /64 to 200 hex digits/);
    assert.match(validateApnsToken('a'.repeat(201))!, /64 to 200 hex digits/);
    assert.match(validateApnsToken('g'.repeat(64))!, /only hex digits/);
    assert.match(validateApnsToken(`${'a'.repeat(60)}/../`)!, /only hex digits/);
  });

  test('a malformed token is rejected by send without a request', async () => {
    const { mock, apns } = await tokenSetup();
    // The provider the registration path asks refuses what the README promises it refuses.
    assert.equal(apns.validateToken('not-a-token'), 'an APNS device token has 64 to 200 hex digits, got 11 characters');
    assert.equal(apns.validateToken('zz'.repeat(32)), 'an APNS device token has only hex digits (0-9, a-f)');
    assert.equal(apns.validateToken(testDeviceToken(1)), null);
    const outcome = await apns.send({ app: 'ios', node: 'n', token: 'zz'.repeat(32) }, withBody);
    assert.equal(outcome.kind, 'rejected');
    assert.equal(mock.requests.length, 0);
  });
});

describe('APNS requests', () => {
  test('a summary with a body becomes an alert: priority 10, mutable-content, "New Message" and never the real body', async () => {
    const { mock, apns } = await tokenSetup();
    const outcome = await apns.send(target(1), withBody);
    assert.equal(outcome.kind, 'delivered');
    assert.match((outcome as { id?: string }).id ?? '', /^[0-9a-f-]{36}$/);
    const [request] = mock.requests;
    assert.equal(request.path, `/3/device/${testDeviceToken(1)}`);
    assert.equal(request.headers['apns-topic'], TOPIC);
    assert.equal(request.headers['apns-push-type'], 'alert');
    assert.equal(request.headers['apns-priority'], '10');
    assert.equal(request.headers['apns-expiration'], undefined);
    assert.equal(request.headers['apns-collapse-id'], undefined);
    assert.deepEqual(request.payload, { aps: { alert: { body: 'New Message' }, 'mutable-content': 1 } });
    assert.doesNotMatch(request.body, /Wherefore|juliet/);
  });

  test('a summary without a body becomes a background push: priority 5 and content-available', async () => {
    const { mock, apns } = await tokenSetup();
    assert.equal((await apns.send(target(2), silent)).kind, 'delivered');
    const [request] = mock.requests;
    assert.equal(request.headers['apns-push-type'], 'background');
    assert.equal(request.headers['apns-priority'], '5');
    assert.deepEqual(request.payload, { aps: { 'content-available': 1 } });
  });

  test('include_body, sound, badge and mutable_content = false shape the alert', async () => {
    const { mock, apns } = await tokenSetup({ include_body: true, sound: 'default', badge: true, mutable_content: false, alert_text: 'unused' });
    await apns.send(target(3), withBody);
    assert.deepEqual(mock.requests[0].payload, {
      aps: { alert: { title: 'juliet@capulet.example', body: 'Wherefore art thou?' }, sound: 'default', badge: 3 },
    });
  });

  test('alert_text replaces "New Message" and priority = "high" alerts even without a body', async () => {
    const { mock, apns } = await tokenSetup({ alert_text: 'You have mail', priority: 'high' });
    await apns.send(target(4), silent);
    assert.equal(mock.requests[0].headers['apns-push-type'], 'alert');
    assert.equal(mock.requests[0].headers['apns-priority'], '10');
    assert.deepEqual(mock.requests[0].payload?.aps.alert, { body: 'You have mail' });
  });

  test('priority = "silent" sends a background push even when the summary has a body', async () => {
    const { mock, apns } = await tokenSetup({ priority: 'silent' });
    await apns.send(target(5), withBody);
    assert.equal(mock.requests[0].headers['apns-push-type'], 'background');
    assert.equal(mock.requests[0].headers['apns-priority'], '5');
    assert.deepEqual(mock.requests[0].payload, { aps: { 'content-available': 1 } });
  });

  test('push_type = "voip" uses the .voip topic, push type voip and priority 10', async () => {
    const { mock, apns } = await tokenSetup({ push_type: 'voip' }, { topics: [TOPIC] });
    assert.equal((await apns.send(target(6), silent)).kind, 'delivered');
    const [request] = mock.requests;
    assert.equal(request.headers['apns-topic'], `${TOPIC}.voip`);
    assert.equal(request.headers['apns-push-type'], 'voip');
    assert.equal(request.headers['apns-priority'], '10');
    assert.deepEqual(request.payload, { aps: {}, 'message-count': 1 });
  });

  test('apns-expiration is computed per push from ttl; collapse_id is sent as apns-collapse-id', async () => {
    const { clock, mock, apns } = await tokenSetup({ ttl: 3600, collapse_id: 'chat' });
    await apns.send(target(7), withBody);
    clock.advance(90_000);
    await apns.send(target(7), withBody);
    const [first, second] = mock.requests;
    assert.equal(first.headers['apns-expiration'], String(Math.floor((clock.now() - 90_000) / 1000) + 3600));
    assert.equal(second.headers['apns-expiration'], String(Math.floor(clock.now() / 1000) + 3600));
    assert.equal(first.headers['apns-collapse-id'], 'chat');
  });

  test('a retried push keeps the expiration of its first attempt', () => {
    const firstAttemptAt = Date.now() - 600_000;
    const built = buildApnsRequest(parse(tokenTable(undefined, { ttl: 3600 })), { ...withBody, firstAttemptAt }, Date.now());
    assert.ok(built.ok);
    assert.equal(built.request.headers['apns-expiration'], String(Math.floor(firstAttemptAt / 1000) + 3600));
  });

  test('ttl = 0 asks APNS to try once and not store the push', () => {
    const built = buildApnsRequest(parse(tokenTable(undefined, { ttl: 0 })), withBody, Date.now());
    assert.ok(built.ok);
    assert.equal(built.request.headers['apns-expiration'], '0');
  });
});

describe('APNS answers', () => {
  test('410 Unregistered is a dead token carrying the answer timestamp', async () => {
    const { mock, apns } = await tokenSetup();
    mock.setBehaviour(testDeviceToken(10), { kind: 'unregistered', timestamp: 1_700_000_000_000 });
    assert.deepEqual(await apns.send(target(10), withBody), { kind: 'token-dead', reason: 'APNS 410 Unregistered', since: 1_700_000_000_000, status: 410 });
  });

  test('400 TopicDisallowed is our configuration, never the token', async () => {
    const { mock, apns } = await tokenSetup();
    mock.setBehaviour(testDeviceToken(12), { kind: 'bad-request', reason: 'TopicDisallowed' });
    assert.deepEqual(await apns.send(target(12), withBody), { kind: 'credentials-rejected', reason: 'APNS 400 TopicDisallowed', status: 400 });
  });

  for (const reason of ['BadDeviceToken', 'DeviceTokenNotForTopic']) {
    test(`400 ${reason} is a dead token`, async () => {
      const { mock, apns } = await tokenSetup();
      mock.setBehaviour(testDeviceToken(11), { kind: 'bad-request', reason });
      assert.deepEqual(await apns.send(target(11), withBody), { kind: 'token-dead', reason: `APNS 400 ${reason}`, status: 400 });
    });
  }

  test('400 with another reason rejects this notification but keeps the token', async () => {
    const { mock, apns } = await tokenSetup();
    mock.setBehaviour(testDeviceToken(12), { kind: 'bad-request', reason: 'BadCollapseId' });
    assert.deepEqual(await apns.send(target(12), withBody), { kind: 'rejected', reason: 'APNS 400 BadCollapseId', status: 400 });
  });

  test('429 with retry-after is retried after that many seconds', async () => {
    const { mock, apns } = await tokenSetup();
    mock.setBehaviour(testDeviceToken(13), { kind: 'too-many-requests', retryAfterS: 30 });
    assert.deepEqual(await apns.send(target(13), withBody), { kind: 'retry-after', ms: 30_000, reason: 'APNS 429 TooManyRequests', status: 429 });
  });

  test('500 and 503 are retried later, honouring retry-after', async () => {
    const { mock, apns } = await tokenSetup();
    mock.setBehaviour(testDeviceToken(14), { kind: 'server-error', status: 500 });
    mock.setBehaviour(testDeviceToken(15), { kind: 'server-error', status: 503, retryAfterS: 5 });
    assert.deepEqual(await apns.send(target(14), withBody), { kind: 'retry-after', ms: 0, reason: 'APNS 500 InternalServerError', status: 500 });
    assert.deepEqual(await apns.send(target(15), withBody), { kind: 'retry-after', ms: 5_000, reason: 'APNS 503 ServiceUnavailable', status: 503 });
  });

  test('403 InvalidProviderToken rejects our credentials and degrades the app until a push succeeds', async () => {
    const { mock, apns } = await tokenSetup();
    assert.deepEqual(apns.status(), { state: 'ok' });
    mock.setBehaviour(testDeviceToken(16), [{ kind: 'forbidden', reason: 'InvalidProviderToken' }, { kind: 'ok' }]);
    assert.deepEqual(await apns.send(target(16), withBody), { kind: 'credentials-rejected', reason: 'APNS 403 InvalidProviderToken', status: 403 });
    const degraded = apns.status();
    assert.equal(degraded.state, 'degraded');
    assert.match(degraded.detail ?? '', /rejected our credentials \(key TESTKEY001 of team TESTTEAM01\): APNS 403 InvalidProviderToken/);
    assert.equal((await apns.send(target(16), withBody)).kind, 'delivered');
    assert.deepEqual(apns.status(), { state: 'ok' });
  });

  test('a JWT signed by a key APNS does not know is rejected as our credentials', async () => {
    const clock = movableClock();
    const mock = await mockApns({ now: clock.now, keys: [{ keyId: key.keyId, teamId: key.teamId, key: createTestApnsKey().privateKey }] });
    const apns = provider(parse(tokenTable(mock)), { now: clock.now });
    assert.deepEqual(await apns.send(target(17), withBody), { kind: 'credentials-rejected', reason: 'APNS 403 InvalidProviderToken', status: 403 });
    assert.equal(apns.status().state, 'degraded');
  });

  test('the answer mapping covers statuses the mock does not script', () => {
    const at = Date.now();
    assert.equal(outcomeFromApnsResponse({ status: 413, headers: {}, body: '{"reason":"PayloadTooLarge"}' }, at).kind, 'rejected');
    assert.equal(outcomeFromApnsResponse({ status: 405, headers: {}, body: '{"reason":"MethodNotAllowed"}' }, at).kind, 'rejected');
    assert.equal(outcomeFromApnsResponse({ status: 403, headers: {}, body: '{"reason":"BadCertificateEnvironment"}' }, at).kind, 'credentials-rejected');
    assert.deepEqual(outcomeFromApnsResponse({ status: 429, headers: {}, body: '{"reason":"TooManyProviderTokenUpdates"}' }, at), { kind: 'retry-after', ms: 60_000, reason: 'APNS 429 TooManyProviderTokenUpdates' });
    assert.deepEqual(outcomeFromApnsResponse({ status: 410, headers: {}, body: '{"reason":"ExpiredToken"}' }, at), { kind: 'token-dead', reason: 'APNS 410 ExpiredToken' });
    assert.deepEqual(outcomeFromApnsResponse({ status: 503, headers: { 'retry-after': new Date(at + 10_000).toUTCString() }, body: '' }, at).kind, 'retry-after');
    assert.deepEqual(outcomeFromApnsResponse({ status: 200, headers: { 'apns-id': 'abc' }, body: '' }, at), { kind: 'delivered', id: 'abc' });
  });
});

describe('APNS provider token', () => {
  test('one JWT with kid, iss and iat is reused across many pushes', async () => {
    const { clock, mock, apns } = await tokenSetup();
    for (let i = 0; i < 10; i += 1) {
      clock.advance(60_000);
      assert.equal((await apns.send(target(20), withBody)).kind, 'delivered');
    }
    await Promise.all(Array.from({ length: 20 }, (_, i) => apns.send(target(100 + i), silent)));
    assert.equal(mock.jwts().length, 1);
    assert.equal(apns.tokens?.issued, 1);
    const { jwt } = mock.requests[0];
    assert.deepEqual(jwt?.header, { alg: 'ES256', typ: 'JWT', kid: key.keyId });
    assert.equal(jwt?.claims.iss, key.teamId);
    assert.equal(typeof jwt?.claims.iat, 'number');
  });

  test('the JWT is replaced once it is 40 minutes old, well before Apple’s hour', async () => {
    const { clock, mock, apns } = await tokenSetup();
    await apns.send(target(21), withBody);
    clock.advance(39 * 60_000);
    await apns.send(target(21), withBody);
    assert.equal(mock.jwts().length, 1);
    clock.advance(60_000);
    assert.equal((await apns.send(target(21), withBody)).kind, 'delivered');
    assert.equal(mock.jwts().length, 2);
    assert.equal(mock.requests[2].jwt?.claims.iat, Math.floor(clock.now() / 1000));
  });

  test('ExpiredProviderToken on a token over 20 minutes old gets one new token and one retry', async () => {
    const { clock, mock, apns } = await tokenSetup();
    await apns.send(target(22), withBody);
    clock.advance(25 * 60_000);
    mock.setBehaviour(testDeviceToken(22), [{ kind: 'expired-provider-token' }, { kind: 'ok' }]);
    assert.equal((await apns.send(target(22), withBody)).kind, 'delivered');
    assert.equal(mock.requests.length, 3);
    assert.equal(mock.jwts().length, 2);
    assert.notEqual(mock.requests[1].jwt?.raw, mock.requests[2].jwt?.raw);
  });

  test('ExpiredProviderToken again right after the refresh is not refreshed a second time', async () => {
    const { clock, mock, apns } = await tokenSetup();
    await apns.send(target(23), withBody);
    clock.advance(25 * 60_000);
    mock.setBehaviour(testDeviceToken(23), { kind: 'expired-provider-token' });
    assert.deepEqual(await apns.send(target(23), withBody), { kind: 'credentials-rejected', reason: 'APNS 403 ExpiredProviderToken', status: 403 });
    assert.equal(mock.jwts().length, 2);
    clock.advance(5 * 60_000);
    assert.equal((await apns.send(target(23), withBody)).kind, 'credentials-rejected');
    assert.equal(mock.jwts().length, 2, 'a token younger than 20 minutes is never replaced');
    assert.equal(apns.status().state, 'degraded');
  });

  test('ExpiredProviderToken on a token younger than 20 minutes is not refreshed (the clock is wrong, not the token)', async () => {
    const { mock, apns } = await tokenSetup();
    mock.setBehaviour(testDeviceToken(24), { kind: 'expired-provider-token' });
    assert.equal((await apns.send(target(24), withBody)).kind, 'credentials-rejected');
    assert.equal(mock.requests.length, 1);
    assert.equal(apns.tokens?.issued, 1);
  });

  test('many concurrent pushes refused as expired replace the token only once', async () => {
    const { clock, mock, apns } = await tokenSetup();
    await apns.send(target(25), withBody);
    clock.advance(25 * 60_000);
    for (let i = 0; i < 10; i += 1) mock.setBehaviour(testDeviceToken(200 + i), [{ kind: 'expired-provider-token' }, { kind: 'ok' }]);
    const outcomes = await Promise.all(Array.from({ length: 10 }, (_, i) => apns.send(target(200 + i), withBody)));
    assert.deepEqual(outcomes.map((o) => o.kind), Array(10).fill('delivered'));
    assert.equal(mock.jwts().length, 2);
    assert.equal(apns.tokens?.issued, 2);
  });
});

describe('APNS connection', () => {
  test('pushes share one HTTP/2 session', async () => {
    const { mock, apns } = await tokenSetup();
    await apns.send(target(30), withBody);
    await Promise.all(Array.from({ length: 10 }, (_, i) => apns.send(target(31 + i), silent)));
    assert.equal(mock.sessionsOpened(), 1);
  });

  test('a GOAWAY before the push was processed sends it again on a new session', async () => {
    const { mock, apns } = await tokenSetup();
    await apns.send(target(40), withBody);
    mock.setBehaviour(testDeviceToken(41), [{ kind: 'goaway' }, { kind: 'ok' }]);
    assert.equal((await apns.send(target(41), withBody)).kind, 'delivered');
    assert.equal(mock.sessionsOpened(), 2);
    assert.deepEqual(mock.requests.map((r) => r.session), [1, 1, 2]);
    assert.equal((await apns.send(target(42), withBody)).kind, 'delivered');
    assert.equal(mock.sessionsOpened(), 2);
  });

  test('a slow answer beyond the request timeout is retried later', async () => {
    const clock = movableClock();
    const mock = await mockApns({ now: clock.now });
    const apns = provider(parse(tokenTable(mock)), { now: clock.now, requestTimeoutMs: 150 });
    mock.setBehaviour(testDeviceToken(43), [{ kind: 'slow', delayMs: 1000 }, { kind: 'ok' }]);
    const outcome = await apns.send(target(43), withBody);
    assert.equal(outcome.kind, 'retry-after');
    assert.match((outcome as { reason: string }).reason, /no answer within 150 ms/);
    assert.equal((await apns.send(target(43), withBody)).kind, 'delivered');
  });

  test('an unreachable APNS is retried later, not blamed on our credentials', async (t) => {
    const refusing = await closedPort();
    t.after(() => refusing.release());
    const apns = provider(parse(tokenTable({ origin: `https://127.0.0.1:${refusing.port}`, caFile: testPki().caFile })));
    const outcome = await apns.send(target(44), withBody);
    assert.equal(outcome.kind, 'retry-after');
    assert.match((outcome as { reason: string }).reason, /APNS unreachable/);
    assert.equal(apns.status().state, 'ok');
  });
});

describe('APNS payload limit', () => {
  test('a payload over 4 KB is never sent and is rejected with the sizes', async () => {
    const { mock, apns } = await tokenSetup({ alert_text: 'x'.repeat(4100) });
    const outcome = await apns.send(target(50), withBody);
    assert.equal(outcome.kind, 'rejected');
    assert.match((outcome as { reason: string }).reason, /payload of \d+ bytes is over the APNS limit of 4096 for alert pushes/);
    assert.equal(mock.requests.length, 0);
  });

  test('an over-long message body is shortened to fit instead', async () => {
    const { mock, apns } = await tokenSetup({ include_body: true });
    const long: Notification = { summary: { lastMessageBody: 'ä'.repeat(4000) }, urgency: 'high' };
    assert.equal((await apns.send(target(51), long)).kind, 'delivered');
    assert.ok(Buffer.byteLength(mock.requests[0].body) <= 4096);
    assert.match(mock.requests[0].payload?.aps.alert.body, /^ä+…$/);
  });

  test('a VoIP payload may use up to 5 KB', () => {
    const long: Notification = { summary: { lastMessageBody: 'v'.repeat(4500) }, urgency: 'high' };
    const voip = buildApnsRequest(parse(tokenTable(undefined, { push_type: 'voip', include_body: true })), long, Date.now());
    assert.ok(voip.ok);
    assert.ok(Buffer.byteLength(voip.request.payload) > 4096 && Buffer.byteLength(voip.request.payload) <= 5120);
    const alert = buildApnsRequest(parse(tokenTable(undefined, { include_body: true })), long, Date.now());
    assert.ok(alert.ok);
    assert.ok(Buffer.byteLength(alert.request.payload) <= 4096);
  });
});

describe('APNS certificate auth', () => {
  test('a client certificate the server trusts pushes without a JWT', async () => {
    const mock = await mockApns({ auth: 'certificate' });
    const identity = testPki().clientCertificate('apns-cert-ok');
    const apns = provider(parse({ topic: TOPIC, cert_file: identity.certFile, key_file: identity.keyFile, endpoint: mock.origin, ca_file: mock.caFile }));
    assert.equal((await apns.send(target(60), withBody)).kind, 'delivered');
    assert.equal(mock.requests[0].clientCertificate, 'apns-cert-ok');
    assert.equal(mock.requests[0].headers.authorization, undefined);
    assert.equal(mock.requests[0].headers['apns-topic'], TOPIC);
  });

  test('a PKCS#12 client certificate works the same', async () => {
    const mock = await mockApns({ auth: 'certificate' });
    const identity = testPki().clientCertificate('apns-cert-p12', { passphrase: 'secret' });
    const apns = provider(parse({ topic: TOPIC, p12_file: identity.p12File, passphrase: 'secret', endpoint: mock.origin, ca_file: mock.caFile }));
    assert.equal((await apns.send(target(61), withBody)).kind, 'delivered');
    assert.equal(mock.requests[0].clientCertificate, 'apns-cert-p12');
  });

  test('a certificate the server does not trust is our credentials rejected, and the app is degraded', async () => {
    const mock = await mockApns({ auth: 'certificate' });
    const dir = testTempDir('apns-selfsigned-');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-subj', '/CN=not-trusted', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const apns = provider(parse({ topic: TOPIC, cert_file: join(dir, 'cert.pem'), key_file: join(dir, 'key.pem'), endpoint: mock.origin, ca_file: mock.caFile }));
    const outcome = await apns.send(target(62), withBody);
    assert.equal(outcome.kind, 'credentials-rejected');
    assert.equal(apns.status().state, 'degraded');
    assert.match(apns.status().detail ?? '', /certificate .*cert\.pem/);
    assert.equal(mock.requests.length, 0);
  });
});
