import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, TableReader } from '../../src/config/reader.ts';
import { silentLogger } from '../../src/log.ts';
import { buildFcmMessage, FCM_MAX_TTL_S, fcmProvider, outcomeFromFcmResponse, validateFcmToken, type FcmConfig } from '../../src/providers/fcm.ts';
import { providerFactories } from '../../src/providers/registry.ts';
import type { Notification, Outcome, Provider, PushTarget } from '../../src/providers/types.ts';
import { startMockFcm, type FcmFailure, type MockFcm } from '../support/mock-fcm.ts';
import { closedPort } from '../support/ports.ts';
import { testTempDir } from '../support/temp-dir.ts';

const TOKEN = 'dGVzdC1pbnN0YW5jZQ:APA91bH-test_token_for_fcm_unit_tests_0123456789abcdefABCDEF';
const tokenFor = (name: string) => `${TOKEN}-${name}`;
const target = (token = TOKEN): PushTarget => ({ app: 'android', node: 'node-1', token });
const wakeUp: Notification = { summary: { messageCount: 3 }, urgency: 'normal' };

function reader(table: Record<string, unknown>): TableReader {
  return new TableReader('push.toml', 'apps.android', table);
}

function configError(table: Record<string, unknown>): ConfigError {
  try {
    fcmProvider.parseConfig(reader(table));
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail('the configuration was accepted');
}

const messageConfig = { priority: 'high', ttlSeconds: FCM_MAX_TTL_S, collapseKey: undefined, includeBody: false } as const;

describe('FCM message', () => {
  test('a wake-up is a data message to the registration token with android priority HIGH and a ttl in seconds', () => {
    const { message } = buildFcmMessage({ ...messageConfig, ttlSeconds: 3600 }, target(), wakeUp);
    assert.equal(message.token, TOKEN);
    assert.deepEqual(message.android, { priority: 'HIGH', ttl: '3600s' });
    assert.equal(message.notification, undefined);
  });

  test('priority normal is sent as android priority NORMAL', () => {
    const { message } = buildFcmMessage({ ...messageConfig, priority: 'normal' }, target(), wakeUp);
    assert.equal((message.android as Record<string, string>).priority, 'NORMAL');
  });

  test('the data fields carry the message count, the node and the urgency as strings', () => {
    const { message } = buildFcmMessage(messageConfig, target(), { summary: { messageCount: 3, pendingSubscriptionCount: 1 }, urgency: 'normal' });
    assert.deepEqual(message.data, { node: 'node-1', urgency: 'normal', 'message-count': '3', 'pending-subscription-count': '1' });
  });

  test('sender and body stay out of the message unless include_body is set', () => {
    const notification: Notification = { summary: { messageCount: 1, lastMessageSender: 'juliet@capulet.example', lastMessageBody: 'Wherefore art thou?' }, urgency: 'high' };
    const without = buildFcmMessage(messageConfig, target(), notification).message.data as Record<string, string>;
    assert.equal(without['last-message-sender'], undefined);
    assert.equal(without['last-message-body'], undefined);
    const withBody = buildFcmMessage({ ...messageConfig, includeBody: true }, target(), notification).message.data as Record<string, string>;
    assert.equal(withBody['last-message-sender'], 'juliet@capulet.example');
    assert.equal(withBody['last-message-body'], 'Wherefore art thou?');
  });

  test('a long body is shortened so the data payload stays within FCM limits', () => {
    const notification: Notification = { summary: { lastMessageBody: '😀'.repeat(3000) }, urgency: 'high' };
    const body = (buildFcmMessage({ ...messageConfig, includeBody: true }, target(), notification).message.data as Record<string, string>)['last-message-body'];
    assert.equal([...body].length, 1000);
    assert.ok(Buffer.byteLength(JSON.stringify(body)) < 4096);
    assert.ok(!body.includes('\ufffd'));
  });

  test('the collapse key is sent when configured', () => {
    const { message } = buildFcmMessage({ ...messageConfig, collapseKey: 'xmpp-wakeup' }, target(), wakeUp);
    assert.equal((message.android as Record<string, string>).collapse_key, 'xmpp-wakeup');
  });

  test('the ttl in the message is capped at 28 days', () => {
    const { message } = buildFcmMessage({ ...messageConfig, ttlSeconds: FCM_MAX_TTL_S * 2 }, target(), wakeUp);
    assert.equal((message.android as Record<string, string>).ttl, '2419200s');
  });
});

function fcmError(status: number, googleStatus: string, errorCode: string | undefined, message = 'x', extraDetails: unknown[] = []): string {
  const details = errorCode ? [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }, ...extraDetails] : extraDetails;
  return JSON.stringify({ error: { code: status, message, status: googleStatus, details } });
}

function outcomeOf(status: number, body: string, headers: Record<string, string> = {}): Outcome {
  return outcomeFromFcmResponse({ status, headers, body }, Date.parse('2025-01-01T00:00:00Z'));
}

describe('FCM answers as outcomes', () => {
  test('200 is delivered with the message name as id', () => {
    assert.deepEqual(outcomeOf(200, '{"name":"projects/p/messages/0:1"}'), { kind: 'delivered', id: 'projects/p/messages/0:1' });
  });

  test('UNREGISTERED means the token is dead', () => {
    assert.equal(outcomeOf(404, fcmError(404, 'NOT_FOUND', 'UNREGISTERED')).kind, 'token-dead');
  });

  test('SENDER_ID_MISMATCH is our configuration (the wrong Firebase project), never the token', () => {
    assert.equal(outcomeOf(403, fcmError(403, 'PERMISSION_DENIED', 'SENDER_ID_MISMATCH')).kind, 'credentials-rejected');
  });

  test('INVALID_ARGUMENT about the registration token means the token is dead', () => {
    assert.equal(outcomeOf(400, fcmError(400, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token')).kind, 'token-dead');
    const fieldViolation = { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: 'message.token', description: 'bad' }] };
    assert.equal(outcomeOf(400, fcmError(400, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'Invalid value', [fieldViolation])).kind, 'token-dead');
  });

  test('INVALID_ARGUMENT about a message field means this notification is rejected, not the token', () => {
    const fieldViolation = { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: 'message.data[0].value', description: 'bad' }] };
    const outcome = outcomeOf(400, fcmError(400, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', "Invalid value at 'message.data[0].value'", [fieldViolation]));
    assert.equal(outcome.kind, 'rejected');
    assert.equal(outcomeOf(400, fcmError(400, 'INVALID_ARGUMENT', undefined, 'Invalid JSON payload received.')).kind, 'rejected');
  });

  test('QUOTA_EXCEEDED honours Retry-After', () => {
    assert.deepEqual(pick(outcomeOf(429, fcmError(429, 'RESOURCE_EXHAUSTED', 'QUOTA_EXCEEDED'), { 'retry-after': '17' })), { kind: 'retry-after', ms: 17_000 });
  });

  test('QUOTA_EXCEEDED without Retry-After waits at least a minute', () => {
    assert.deepEqual(pick(outcomeOf(429, fcmError(429, 'RESOURCE_EXHAUSTED', 'QUOTA_EXCEEDED'))), { kind: 'retry-after', ms: 60_000 });
  });

  test('a bare 429 is retried later too', () => {
    assert.deepEqual(pick(outcomeOf(429, 'Too Many Requests', { 'retry-after': '2' })), { kind: 'retry-after', ms: 2000 });
  });

  test('UNAVAILABLE honours Retry-After and otherwise leaves the backoff to the dispatcher', () => {
    assert.deepEqual(pick(outcomeOf(503, fcmError(503, 'UNAVAILABLE', 'UNAVAILABLE'), { 'retry-after': '5' })), { kind: 'retry-after', ms: 5000 });
    assert.deepEqual(pick(outcomeOf(503, fcmError(503, 'UNAVAILABLE', 'UNAVAILABLE'))), { kind: 'retry-after', ms: 0 });
  });

  test('INTERNAL is retried later', () => {
    assert.equal(outcomeOf(500, fcmError(500, 'INTERNAL', 'INTERNAL')).kind, 'retry-after');
  });

  test('any 5xx, even without a Google error body, is retried later', () => {
    assert.equal(outcomeOf(502, '<html>Bad Gateway</html>').kind, 'retry-after');
  });

  test('THIRD_PARTY_AUTH_ERROR means our credentials were rejected', () => {
    assert.equal(outcomeOf(401, fcmError(401, 'UNAUTHENTICATED', 'THIRD_PARTY_AUTH_ERROR')).kind, 'credentials-rejected');
  });

  test('a plain 401 means our credentials were rejected', () => {
    assert.equal(outcomeOf(401, fcmError(401, 'UNAUTHENTICATED', undefined, 'Request had invalid authentication credentials.')).kind, 'credentials-rejected');
  });

  test('a 403 without an FCM error code (no permission on the project) means our credentials were rejected', () => {
    assert.equal(outcomeOf(403, fcmError(403, 'PERMISSION_DENIED', undefined, 'Permission denied')).kind, 'credentials-rejected');
  });

  test('the reason names the FCM error code and message', () => {
    const outcome = outcomeOf(404, fcmError(404, 'NOT_FOUND', 'UNREGISTERED', 'Requested entity was not found.'));
    assert.equal(outcome.kind === 'token-dead' && outcome.reason, 'FCM 404 UNREGISTERED: Requested entity was not found.');
  });
});

function pick(outcome: Outcome): { kind: string; ms?: number } {
  return outcome.kind === 'retry-after' ? { kind: outcome.kind, ms: outcome.ms } : { kind: outcome.kind };
}

describe('FCM registration tokens', () => {
  test('a real-looking registration token is accepted', () => {
    assert.equal(validateFcmToken(TOKEN), null);
  });

  test('junk never reaches Google: short, long, spaced or odd tokens are refused', () => {
    assert.match(validateFcmToken('abc') ?? '', /at least/);
    assert.match(validateFcmToken('a'.repeat(1025)) ?? '', /at most/);
    assert.match(validateFcmToken(`${TOKEN} x`) ?? '', /only letters/);
    assert.match(validateFcmToken(`${TOKEN}/../x`) ?? '', /only letters/);
    assert.match(validateFcmToken(`${TOKEN}\n`) ?? '', /only letters/);
  });
});

describe('FCM configuration', () => {
  let mock: MockFcm;
  before(async () => { mock = await startMockFcm(); });
  after(async () => { await mock.close(); });

  const minimal = () => ({ service_account_file: mock.account.file });

  test('the fcm provider is registered under "fcm"', () => {
    assert.equal(providerFactories.fcm, fcmProvider);
  });

  test('defaults: Google\'s endpoint, priority high, ttl 28 days, no collapse key, no body', () => {
    const config = fcmProvider.parseConfig(reader(minimal()));
    assert.equal(config.endpoint, 'https://fcm.googleapis.com');
    assert.equal(config.ca, undefined);
    assert.equal(config.priority, 'high');
    assert.equal(config.ttlSeconds, 2419200);
    assert.equal(config.collapseKey, undefined);
    assert.equal(config.includeBody, false);
    assert.equal(config.account.projectId, mock.account.projectId);
  });

  test('every documented key is read', () => {
    const config = fcmProvider.parseConfig(reader({ ...minimal(), endpoint: mock.endpoint, ca_file: mock.caFile, priority: 'normal', ttl: 600, collapse_key: 'wake', include_body: true }));
    assert.equal(config.endpoint, mock.endpoint);
    assert.match(config.ca ?? '', /BEGIN CERTIFICATE/);
    assert.deepEqual([config.priority, config.ttlSeconds, config.collapseKey, config.includeBody], ['normal', 600, 'wake', true]);
  });

  test('a missing service_account_file is named', () => {
    assert.equal(configError({}).key, 'apps.android.service_account_file');
  });

  test('an unreadable service_account_file is named with the file', () => {
    const error = configError({ service_account_file: '/nonexistent/sa.json' });
    assert.equal(error.key, 'apps.android.service_account_file');
    assert.match(error.message, /\/nonexistent\/sa\.json.*file not found/);
  });

  test('a service account file lacking a field names the key and the field', () => {
    const file = join(testTempDir('fcm-config-'), 'sa.json');
    writeFileSync(file, JSON.stringify({ type: 'service_account', project_id: 'p' }));
    const error = configError({ service_account_file: file });
    assert.equal(error.key, 'apps.android.service_account_file');
    assert.match(error.message, /"client_email" is missing/);
  });

  test('a ttl above 28 days is refused naming the key', () => {
    const error = configError({ ...minimal(), ttl: FCM_MAX_TTL_S + 1 });
    assert.equal(error.key, 'apps.android.ttl');
    assert.match(error.message, /at most 2419200/);
  });

  test('an unknown priority is refused naming the key', () => {
    const error = configError({ ...minimal(), priority: 'urgent' });
    assert.equal(error.key, 'apps.android.priority');
  });

  test('an endpoint that is not https is refused naming the key', () => {
    assert.equal(configError({ ...minimal(), endpoint: 'http://fcm.googleapis.com' }).key, 'apps.android.endpoint');
    assert.equal(configError({ ...minimal(), endpoint: 'https://fcm.googleapis.com/v1' }).key, 'apps.android.endpoint');
  });

  test('a ca_file without a certificate is refused naming the key', () => {
    assert.equal(configError({ ...minimal(), ca_file: mock.account.file }).key, 'apps.android.ca_file');
  });

  test('an empty collapse_key is refused naming the key', () => {
    assert.equal(configError({ ...minimal(), collapse_key: ' ' }).key, 'apps.android.collapse_key');
  });

  test('a misspelt key is refused naming it', () => {
    assert.equal(configError({ ...minimal(), include_bodies: true }).key, 'apps.android.include_bodies');
  });
});

describe('FCM provider against the mock', () => {
  let mock: MockFcm;
  const providers: Provider[] = [];

  before(async () => { mock = await startMockFcm(); });
  after(async () => {
    await Promise.all(providers.map((provider) => provider.close()));
    await mock.close();
  });

  function provider(overrides: Partial<Record<string, unknown>> = {}): { provider: Provider; config: FcmConfig } {
    mock.setTokenEndpointFailure(undefined);
    mock.setTokenEndpointDelay(0);
    mock.setTokenLifetime(3600);
    const config = fcmProvider.parseConfig(reader({ service_account_file: mock.account.file, endpoint: mock.endpoint, ca_file: mock.caFile, ...overrides }));
    const created = fcmProvider.create(config, { app: 'android', logger: silentLogger });
    providers.push(created);
    return { provider: created, config };
  }

  test('a push is delivered as one authorised POST to the project\'s messages:send', async () => {
    const { provider: fcm } = provider({ collapse_key: 'wake', ttl: 120 });
    const before = mock.requests.length;
    const outcome = await fcm.send(target(tokenFor('delivered')), wakeUp);
    assert.equal(outcome.kind, 'delivered');
    const [request] = mock.requests.slice(before);
    assert.equal(mock.requests.length - before, 1);
    assert.equal(request.path, `/v1/projects/${mock.account.projectId}/messages:send`);
    assert.match(String(request.headers.authorization), /^Bearer ya29\.mock-access-token-\d+$/);
    assert.match(String(request.headers['content-type']), /^application\/json/);
    assert.deepEqual(request.body, {
      message: {
        token: tokenFor('delivered'),
        data: { node: 'node-1', urgency: 'normal', 'message-count': '3' },
        android: { priority: 'HIGH', ttl: '120s', collapse_key: 'wake' },
      },
    });
  });

  const cases: Array<[FcmFailure, Outcome['kind']]> = [
    ['UNREGISTERED', 'token-dead'],
    ['SENDER_ID_MISMATCH', 'credentials-rejected'],
    ['INVALID_TOKEN', 'token-dead'],
    ['INVALID_PAYLOAD', 'rejected'],
    ['QUOTA_EXCEEDED', 'retry-after'],
    ['UNAVAILABLE', 'retry-after'],
    ['INTERNAL', 'retry-after'],
    ['BAD_GATEWAY', 'retry-after'],
    ['THIRD_PARTY_AUTH_ERROR', 'credentials-rejected'],
  ];
  for (const [failure, kind] of cases) {
    test(`the mock's ${failure} answer becomes ${kind}`, async () => {
      const { provider: fcm } = provider();
      const token = tokenFor(failure.toLowerCase());
      mock.fail(token, failure, { retryAfterS: failure === 'QUOTA_EXCEEDED' ? 7 : undefined });
      const outcome = await fcm.send(target(token), wakeUp);
      assert.equal(outcome.kind, kind, JSON.stringify(outcome));
      if (failure === 'QUOTA_EXCEEDED') assert.equal(outcome.kind === 'retry-after' && outcome.ms, 7000);
    });
  }

  test('the access token is fetched once and reused across pushes', async () => {
    const { provider: fcm } = provider();
    const before = mock.tokenRequests.length;
    for (let i = 0; i < 3; i++) assert.equal((await fcm.send(target(tokenFor(`reuse-${i}`)), wakeUp)).kind, 'delivered');
    assert.equal(mock.tokenRequests.length - before, 1);
  });

  test('a burst of concurrent pushes shares one token exchange and all are delivered', async () => {
    const { provider: fcm } = provider();
    mock.setTokenEndpointDelay(50);
    const before = mock.tokenRequests.length;
    const outcomes = await Promise.all(Array.from({ length: 30 }, (_, i) => fcm.send(target(tokenFor(`burst-${i}`)), wakeUp)));
    assert.deepEqual(new Set(outcomes.map((o) => o.kind)), new Set(['delivered']));
    assert.equal(mock.tokenRequests.length - before, 1);
  });

  test('an access token Google no longer accepts is replaced once and the push goes through', async () => {
    const { provider: fcm } = provider();
    assert.equal((await fcm.send(target(tokenFor('before-revoke')), wakeUp)).kind, 'delivered');
    mock.revokeAccessTokens();
    const before = mock.tokenRequests.length;
    assert.equal((await fcm.send(target(tokenFor('after-revoke')), wakeUp)).kind, 'delivered');
    assert.equal(mock.tokenRequests.length - before, 1);
    assert.equal(fcm.status().state, 'ok');
  });

  test('a refused service account is credentials-rejected and degrades status until a success', async () => {
    const { provider: fcm } = provider();
    mock.setTokenEndpointFailure({ status: 400, error: 'invalid_grant', description: 'Invalid JWT Signature.' });
    const outcome = await fcm.send(target(tokenFor('refused-account')), wakeUp);
    assert.equal(outcome.kind, 'credentials-rejected');
    assert.equal(fcm.status().state, 'degraded');
    assert.match(fcm.status().detail ?? '', /invalid_grant/);
    mock.setTokenEndpointFailure(undefined);
    assert.equal((await fcm.send(target(tokenFor('account-fixed')), wakeUp)).kind, 'delivered');
    assert.equal(fcm.status().state, 'ok');
  });

  test('a 401 from FCM with a fresh access token is credentials-rejected without a second try', async () => {
    const { provider: fcm } = provider();
    const token = tokenFor('always-401');
    mock.fail(token, 'UNAUTHENTICATED');
    const before = mock.requests.length;
    const outcome = await fcm.send(target(token), wakeUp);
    assert.equal(outcome.kind, 'credentials-rejected');
    assert.equal(mock.requests.length - before, 1);
    assert.equal(fcm.status().state, 'degraded');
  });

  test('a token endpoint that is down makes the push retry later', async () => {
    const { provider: fcm } = provider();
    mock.setTokenEndpointFailure({ status: 503, error: 'backend_error', retryAfterS: 4 });
    const outcome = await fcm.send(target(tokenFor('token-endpoint-down')), wakeUp);
    assert.deepEqual(pick(outcome), { kind: 'retry-after', ms: 4000 });
    assert.equal(fcm.status().state, 'ok');
  });

  test('an unreachable FCM is a retry, not an exception', async (t) => {
    const refusing = await closedPort();
    t.after(() => refusing.release());
    const { provider: fcm } = provider({ endpoint: `https://127.0.0.1:${refusing.port}` });
    const outcome = await fcm.send(target(tokenFor('unreachable')), wakeUp);
    assert.equal(outcome.kind, 'retry-after');
    assert.match(outcome.kind === 'retry-after' ? outcome.reason : '', /FCM unreachable/);
  });
});
