/**
 * The WebPush provider (src/providers/webpush.ts) against the loopback mock push service, which
 * decrypts every message with the subscription's private key and verifies the VAPID token.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { ConfigError, TableReader, type Table } from '../../src/config/reader.ts';
import { silentLogger } from '../../src/log.ts';
import type { Notification, Provider } from '../../src/providers/types.ts';
import { generateVapidKeys } from '../../src/providers/web-push-crypto.ts';
import { createWebPushProvider, webPushProvider, type WebPushDependencies } from '../../src/providers/webpush.ts';
import { startMockPushEndpoint, type MockPushEndpoint } from '../support/mock-push-endpoint.ts';
import { testPki } from '../support/tls.ts';

const vapid = generateVapidKeys();
let mock: MockPushEndpoint;
const providers: Provider[] = [];

before(async () => {
  mock = await startMockPushEndpoint({ tls: true, vapidPublicKey: vapid.publicKey });
});

after(async () => {
  await Promise.all(providers.map((provider) => provider.close()));
  await mock.close();
});

function settings(extra: Table = {}): Table {
  return {
    vapid_public_key: vapid.publicKey,
    vapid_private_key: vapid.privateKey,
    subject: 'mailto:ops@example.org',
    allow_private: true,
    ca_file: testPki().caFile,
    ...extra,
  };
}

function parse(table: Table) {
  return webPushProvider.parseConfig(new TableReader('test.toml', 'apps.web', table));
}

function provider(extra: Table = {}, dependencies: WebPushDependencies = {}): Provider {
  const created = createWebPushProvider(parse(settings(extra)), { app: 'web', logger: silentLogger }, dependencies);
  providers.push(created);
  return created;
}

const wakeUp: Notification = { summary: { messageCount: 2 }, urgency: 'normal' };
const important: Notification = {
  summary: { messageCount: 1, lastMessageSender: 'juliet@capulet.example/balcony', lastMessageBody: 'Wherefore art thou?' },
  urgency: 'high',
};

function configError(table: Table): ConfigError {
  try {
    parse(table);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error;
  }
  assert.fail('expected a configuration error');
}

test('the config needs only the VAPID pair and a subject; ttl is four weeks and the body stays out by default', () => {
  const config = parse({ vapid_public_key: vapid.publicKey, vapid_private_key: vapid.privateKey, subject: 'https://example.org/contact' });
  assert.equal(config.ttlSeconds, 28 * 24 * 3600);
  assert.equal(config.includeBody, false);
  assert.equal(config.allowPrivate, false);
  assert.equal(config.ca, undefined);
});

test('a missing or mismatched VAPID key is a configuration error naming the key', () => {
  assert.equal(configError({ vapid_public_key: vapid.publicKey, subject: 'mailto:a@b.c' }).key, 'apps.web.vapid_private_key');
  const other = generateVapidKeys();
  const mismatch = configError(settings({ vapid_private_key: other.privateKey }));
  assert.equal(mismatch.key, 'apps.web.vapid_public_key');
  assert.match(mismatch.problem, /does not belong/);
});

test('a subject that is neither mailto: nor https: is a configuration error', () => {
  assert.equal(configError(settings({ subject: 'ops@example.org' })).key, 'apps.web.subject');
});

test('ttl above 28 days, an unknown key and an unreadable ca_file are configuration errors', () => {
  assert.equal(configError(settings({ ttl: 29 * 24 * 3600 })).key, 'apps.web.ttl');
  assert.equal(configError(settings({ vapid_key: 'x' })).key, 'apps.web.vapid_key');
  assert.equal(configError(settings({ ca_file: '/nonexistent/ca.pem' })).key, 'apps.web.ca_file');
});

test('a browser PushSubscription JSON is a valid token', () => {
  const subscription = mock.subscription();
  assert.equal(provider().validateToken(subscription.token), null);
});

test('tokens that are not a usable PushSubscription are refused with the reason', () => {
  const web = provider({ allow_private: false });
  const { keys } = mock.subscription();
  const token = (endpoint: string, p256dh = keys.p256dh, auth = keys.auth) => JSON.stringify({ endpoint, keys: { p256dh, auth } });
  const cases: Array<[string, RegExp]> = [
    ['not json', /PushSubscription JSON/],
    ['[]', /JSON object/],
    [JSON.stringify({ keys }), /endpoint/],
    [token('http://push.example.net/x'), /https/],
    [token('https://user:pw@push.example.net/x'), /credentials/],
    [JSON.stringify({ endpoint: 'https://push.example.net/x' }), /keys/],
    [token('https://push.example.net/x', keys.p256dh.slice(0, 43)), /p256dh/],
    [token('https://push.example.net/x', `${keys.p256dh.slice(0, -2)}AA`), /p256dh/],
    [token('https://push.example.net/x', keys.p256dh, Buffer.alloc(15).toString('base64url')), /auth/],
    [token('https://127.0.0.1/x'), /loopback/],
    [token('https://[fd00::1]/x'), /unique local/],
    [token(`https://push.example.net/${'x'.repeat(4096)}`), /longer than 4096/],
  ];
  for (const [candidate, reason] of cases) assert.match(web.validateToken(candidate) ?? 'accepted', reason, candidate.slice(0, 80));
});

test('a wake-up arrives encrypted for the subscription with the node and message count, VAPID-signed, with TTL and Urgency', async () => {
  const subscription = mock.subscription();
  const outcome = await provider({ ttl: 3600 }).send({ app: 'web', node: 'node-1', token: subscription.token }, wakeUp);
  assert.equal(outcome.kind, 'delivered');
  const [received] = mock.requestsTo(subscription.endpoint);
  assert.equal(received.decryptError, undefined);
  assert.equal(received.vapidError, undefined);
  assert.deepEqual(received.content, { node: 'node-1', 'message-count': 2 });
  assert.equal(received.vapid?.sub, 'mailto:ops@example.org');
  assert.equal(received.vapid?.aud, mock.origin);
  assert.equal(received.headers.ttl, '3600');
  assert.equal(received.headers.urgency, 'normal');
  assert.equal(received.headers['content-encoding'], 'aes128gcm');
});

test('an important message is pushed with Urgency high, and its sender and body only with include_body', async () => {
  const plain = mock.subscription();
  assert.equal((await provider().send({ app: 'web', node: 'n', token: plain.token }, important)).kind, 'delivered');
  const [withoutBody] = mock.requestsTo(plain.endpoint);
  assert.equal(withoutBody.headers.urgency, 'high');
  assert.deepEqual(withoutBody.content, { node: 'n', 'message-count': 1 });

  const detailed = mock.subscription();
  assert.equal((await provider({ include_body: true }).send({ app: 'web', node: 'n', token: detailed.token }, important)).kind, 'delivered');
  const [withBody] = mock.requestsTo(detailed.endpoint);
  assert.deepEqual(withBody.content, { node: 'n', 'message-count': 1, 'last-message-sender': 'juliet@capulet.example/balcony', 'last-message-body': 'Wherefore art thou?' });
});

test('a body too long for one push message is shortened so the message still fits', async () => {
  const subscription = mock.subscription();
  const long: Notification = { summary: { messageCount: 1, lastMessageBody: 'ü'.repeat(4000) }, urgency: 'high' };
  assert.equal((await provider({ include_body: true }).send({ app: 'web', node: 'n', token: subscription.token }, long)).kind, 'delivered');
  const [received] = mock.requestsTo(subscription.endpoint);
  assert.ok(received.body.length <= 4096);
  const body = String(received.content?.['last-message-body']);
  assert.ok(body.endsWith('…') && body.length > 1000, `body of ${body.length} characters`);
});

test('404 and 410 from the push service mean the subscription is dead', async () => {
  for (const status of [404, 410]) {
    const subscription = mock.subscription([{ status }]);
    const outcome = await provider().send({ app: 'web', node: 'n', token: subscription.token }, wakeUp);
    assert.equal(outcome.kind, 'token-dead', `status ${status}`);
  }
});

test('429 with Retry-After asks to retry after that many seconds', async () => {
  const subscription = mock.subscription([{ status: 429, retryAfter: 7 }]);
  const outcome = await provider().send({ app: 'web', node: 'n', token: subscription.token }, wakeUp);
  assert.deepEqual(outcome.kind === 'retry-after' ? outcome.ms : outcome, 7000);
});

test('503 without Retry-After asks for a retry with the dispatcher backoff', async () => {
  const subscription = mock.subscription([{ status: 503 }]);
  const outcome = await provider().send({ app: 'web', node: 'n', token: subscription.token }, wakeUp);
  assert.deepEqual(outcome.kind === 'retry-after' ? outcome.ms : outcome, 0);
});

test('a push service refusing our VAPID key means our credentials are rejected, and health shows it until a push succeeds', async () => {
  const other = generateVapidKeys();
  const web = provider({ vapid_public_key: other.publicKey, vapid_private_key: other.privateKey });
  const refused = mock.subscription();
  const outcome = await web.send({ app: 'web', node: 'n', token: refused.token }, wakeUp);
  assert.equal(outcome.kind, 'credentials-rejected');
  assert.equal(mock.requestsTo(refused.endpoint)[0].status, 403);
  assert.equal(web.status().state, 'degraded');
  assert.match(web.status().detail ?? '', /VAPID/);

  const elsewhere = await startMockPushEndpoint({ tls: true });
  try {
    const accepted = elsewhere.subscription();
    assert.equal((await web.send({ app: 'web', node: 'n', token: accepted.token }, wakeUp)).kind, 'delivered');
    assert.equal(web.status().state, 'ok');
  } finally {
    await elsewhere.close();
  }
});

test('413 means this message can never be sent', async () => {
  const subscription = mock.subscription([{ status: 413 }]);
  const outcome = await provider().send({ app: 'web', node: 'n', token: subscription.token }, wakeUp);
  assert.equal(outcome.kind, 'rejected');
});

test('an endpoint name that resolves to a private address is refused at connect time', async () => {
  const subscription = mock.subscription();
  const rebound = JSON.stringify({ endpoint: 'https://push.example.net/x', keys: subscription.keys });
  const web = provider({ allow_private: false }, { resolveAll: (_host, _options, callback) => callback(null, [{ address: '127.0.0.1', family: 4 }]) });
  assert.equal(web.validateToken(rebound), null);
  const outcome = await web.send({ app: 'web', node: 'n', token: rebound }, wakeUp);
  assert.equal(outcome.kind, 'rejected');
  assert.match(outcome.kind === 'rejected' ? outcome.reason : '', /loopback/);
});

test('push-appserver vapid-keys prints TOML lines that make a working webpush app', () => {
  const printed = execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', fileURLToPath(new URL('../../src/main.ts', import.meta.url)), 'vapid-keys'], { encoding: 'utf8' });
  assert.match(printed, /^vapid_public_key = "[A-Za-z0-9_-]{87}"\nvapid_private_key = "[A-Za-z0-9_-]{43}"\n$/);
  const table = parseToml(`${printed}subject = "mailto:ops@example.org"\n`) as Table;
  assert.equal(parse(table).vapid.publicKey.toString('base64url'), table.vapid_public_key);
});
