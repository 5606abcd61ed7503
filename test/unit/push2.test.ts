/** The Push 2.0 resolver (core/push2.ts) against a real SQLite store: routing, JWT checks, key pinning, stateless. */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { Dispatcher, type PushRequest } from '../../src/core/dispatcher.ts';
import { readConfig } from '../../src/config/schema.ts';
import { AppDirectory } from '../../src/core/apps.ts';
import { Push2Resolver, push2RequestOptions, type Push2Notification, type Push2Result } from '../../src/core/push2.ts';
import type { Resolution } from '../../src/core/pipeline.ts';
import { Registrations } from '../../src/core/registrations.ts';
import { noTelemetry } from '../../src/core/telemetry.ts';
import { silentLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { scriptedProvider, type ScriptedProvider } from '../support/fakes.ts';
import { es256Jwt, jwtKeyPair, push2Claims, type JwtKeyPair } from '../support/push2.ts';

const AUD = 'https://push.example.org';
const TOPIC = 'im.snikket.app';
const APNS_TOKEN = 'ab'.repeat(32);

describe('Push 2.0 resolver', () => {
  let store: SqliteStore;
  let registrations: Registrations;
  let resolver: Push2Resolver;
  let chat: ScriptedProvider;
  let ios: ScriptedProvider;
  let now: number;
  let key: JwtKeyPair;
  let reported: Array<[string, string, string]>;

  const jwtFor = (pair: JwtKeyPair, overrides: Record<string, unknown> = {}) => ({ token: es256Jwt(pair.privateKey, push2Claims(AUD, now, overrides)), key: pair.publicBase64 });

  const request = (notification: Partial<Push2Notification> = {}, from: string | null = 'example.org'): PushRequest => ({
    dialect: 'push2', node: '', secret: null, from, summary: {}, options: new Map(),
    push2: { client: 'nobody', priority: 'normal', voip: false, payload: Buffer.from('ciphertext'), jwt: jwtFor(key), ...notification },
  });

  const answerOf = (resolution: Resolution | undefined): Push2Result => {
    assert.equal(resolution?.kind, 'answer', `expected an answer, got ${JSON.stringify(resolution)}`);
    return (resolution as Extract<Resolution, { kind: 'answer' }>).result;
  };

  const targetOf = (resolution: Resolution | undefined) => {
    assert.equal(resolution?.kind, 'target', `expected a target, got ${JSON.stringify(resolution)}`);
    return (resolution as Extract<Resolution, { kind: 'target' }>).target;
  };

  const register = async (options: { push2Key?: string; boundDomain?: string; deviceId?: string } = {}) => {
    const result = await registrations.register({ app: 'chat', deviceId: options.deviceId ?? 'phone', token: 'chat-token', boundDomain: options.boundDomain, scope: options.boundDomain ? `user@${options.boundDomain}` : undefined, push2Key: options.push2Key });
    assert.ok(result.ok, JSON.stringify(result));
    return result.registration;
  };

  beforeEach(() => {
    now = Date.now();
    store = new SqliteStore(':memory:');
    chat = scriptedProvider();
    ios = scriptedProvider();
    ios.validateToken = (token) => (/^[0-9a-f]{64}$/.test(token) ? null : 'not an APNS token');
    const apps = new AppDirectory([
      { name: 'chat', providerKind: 'scripted', provider: chat, stateless: false },
      { name: 'ios', providerKind: 'apns', provider: ios, stateless: false, push2Stateless: true, apnsTopic: TOPIC },
      { name: 'ios-closed', providerKind: 'apns', provider: scriptedProvider(), stateless: false, push2Stateless: false, apnsTopic: 'org.closed' },
    ]);
    registrations = new Registrations(store, apps, () => now);
    reported = [];
    const telemetry = { ...noTelemetry, registrationChanged: (app: string, dialect: string, action: string) => { reported.push([app, dialect, action]); } };
    resolver = new Push2Resolver(store, apps, silentLogger, { audiences: [AUD, 'xmpp:push.example.org'], clockSkewS: 30, now: () => now, telemetry });
    key = jwtKeyPair();
  });

  test('a request without a Push 2.0 notification is not this resolver\'s', async () => {
    assert.equal(await resolver.resolve({ ...request(), push2: undefined, dialect: 'xep0357' }), undefined);
  });

  test('the bare node routes to the registration, with the ciphertext, priority and JWT for the provider', async () => {
    const registration = await register({ push2Key: key.publicBase64 });
    const target = targetOf(await resolver.resolve(request({ client: registration.node, priority: 'low' })));
    assert.equal(target.node, registration.node);
    assert.equal(target.token, 'chat-token');
    assert.equal(target.key, `${registration.node}\u0000push2`, 'never coalesced with a XEP-0357 push of the same node');
    assert.equal(target.app.name, 'chat');
    assert.equal(target.publisherDomain, 'example.org');
    assert.equal(target.notification.urgency, 'normal');
    assert.deepEqual(target.notification.push2?.ciphertext, Buffer.from('ciphertext'));
    assert.equal(target.notification.push2?.priority, 'low');
    assert.equal(target.notification.push2?.audience, AUD);
    assert.equal(target.notification.push2?.jwtKey, key.publicRaw.toString('base64url'));
  });

  test('a URL whose last path segment is the node routes to the registration', async () => {
    const registration = await register();
    const target = targetOf(await resolver.resolve(request({ client: `https://push.example.org/push2/${encodeURIComponent(registration.node)}#ignored` })));
    assert.equal(target.node, registration.node);
  });

  test('an unknown client is not-found', async () => {
    assert.deepEqual(answerOf(await resolver.resolve(request({ client: 'no-such-node' }))), { kind: 'not-found' });
    assert.deepEqual(answerOf(await resolver.resolve(request({ client: 'https://push.example.org/x/no-such-node' }))), { kind: 'not-found' });
  });

  test('a JWT signed with another key than the registered one is not-authorized', async () => {
    const registration = await register({ push2Key: key.publicBase64 });
    const result = answerOf(await resolver.resolve(request({ client: registration.node, jwt: jwtFor(jwtKeyPair()) })));
    assert.equal(result.kind, 'forbidden');
    assert.equal(result.condition, 'not-authorized');
  });

  test('without a registered key the first valid key is pinned and another one is refused afterwards', async () => {
    const registration = await register();
    targetOf(await resolver.resolve(request({ client: registration.node })));
    assert.equal((await store.getByNode(registration.node))?.push2Key, key.publicRaw.toString('base64url'));
    const other = answerOf(await resolver.resolve(request({ client: registration.node, jwt: jwtFor(jwtKeyPair()) })));
    assert.equal(other.condition, 'not-authorized');
    targetOf(await resolver.resolve(request({ client: registration.node })));
  });

  test('an expired JWT, a wrong aud, an exp more than a day ahead, a bad signature and a missing JWT are not-authorized', async () => {
    const registration = await register({ push2Key: key.publicBase64 });
    const cases: Array<[string, Partial<Push2Notification>]> = [
      ['expired', { jwt: jwtFor(key, { exp: Math.floor(now / 1000) - 120 }) }],
      ['wrong aud', { jwt: jwtFor(key, { aud: 'https://elsewhere.example' }) }],
      ['too far ahead', { jwt: jwtFor(key, { exp: Math.floor(now / 1000) + 25 * 3600 }) }],
      ['no exp', { jwt: jwtFor(key, { exp: undefined }) }],
      ['alg none', { jwt: { token: `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(push2Claims(AUD, now))).toString('base64url')}.`, key: key.publicBase64 } }],
      ['tampered', { jwt: { token: jwtFor(key).token.replace(/\.[^.]+\./, `.${Buffer.from(JSON.stringify(push2Claims(AUD, now, { sub: 'x' }))).toString('base64url')}.`), key: key.publicBase64 } }],
      ['key not a point', { jwt: { token: jwtFor(key).token, key: Buffer.alloc(65, 4).toString('base64') } }],
      ['missing', { jwt: null }],
    ];
    for (const [name, notification] of cases) {
      const result = answerOf(await resolver.resolve(request({ client: registration.node, ...notification })));
      assert.deepEqual([result.kind, result.condition], ['forbidden', 'not-authorized'], name);
    }
  });

  test('an exp just past within the clock skew is still accepted', async () => {
    const registration = await register({ push2Key: key.publicBase64 });
    targetOf(await resolver.resolve(request({ client: registration.node, jwt: jwtFor(key, { exp: Math.floor(now / 1000) - 10, iat: Math.floor(now / 1000) - 3610 }) })));
  });

  test('the xmpp: audience is accepted too', async () => {
    const registration = await register({ push2Key: key.publicBase64 });
    targetOf(await resolver.resolve(request({ client: registration.node, jwt: jwtFor(key, { aud: 'xmpp:push.example.org' }) })));
  });

  test('a registration bound to a domain refuses a publisher of another domain with forbidden (not not-authorized)', async () => {
    const registration = await register({ boundDomain: 'example.org' });
    const result = answerOf(await resolver.resolve(request({ client: registration.node }, 'evil.example')));
    assert.equal(result.kind, 'forbidden');
    assert.equal(result.condition, undefined);
    assert.equal((await store.getByNode(registration.node))?.push2Key, null, 'a refused publisher pins nothing');
    targetOf(await resolver.resolve(request({ client: registration.node }, 'example.org')));
  });

  test('a notification without ciphertext is rejected', async () => {
    const registration = await register({ push2Key: key.publicBase64 });
    assert.equal(answerOf(await resolver.resolve(request({ client: registration.node, payload: null }))).kind, 'rejected');
  });

  test('stateless: a snikket-apns client URL reaches the app whose topic is the fragment, with nothing stored', async () => {
    const target = targetOf(await resolver.resolve(request({ client: `https://push.example.org/apns/${APNS_TOKEN}#${TOPIC}` })));
    assert.equal(target.app.name, 'ios');
    assert.equal(target.token, APNS_TOKEN);
    assert.equal(target.registration, undefined);
    assert.equal(target.key, `ios\u0000${APNS_TOKEN}\u0000push2`);
    assert.equal(await store.count(), 0);
  });

  test('stateless: a VoIP notification goes to the VoIP token after "&" when the client names one', async () => {
    const voipToken = 'cd'.repeat(32);
    const target = targetOf(await resolver.resolve(request({ client: `https://push.example.org/apns/${APNS_TOKEN}#${TOPIC}&${voipToken}`, voip: true, priority: 'high' })));
    assert.equal(target.token, voipToken);
  });

  test('stateless: an app that did not opt in, an invalid token and a bad JWT are refused', async () => {
    assert.deepEqual(answerOf(await resolver.resolve(request({ client: `https://p.example/apns/${APNS_TOKEN}#org.closed` }))), { kind: 'not-found' });
    assert.deepEqual(answerOf(await resolver.resolve(request({ client: `https://p.example/apns/not-hex#${TOPIC}` }))), { kind: 'not-found' });
    const bad = answerOf(await resolver.resolve(request({ client: `https://p.example/apns/${APNS_TOKEN}#${TOPIC}`, jwt: jwtFor(key, { aud: 'https://other' }) })));
    assert.equal(bad.condition, 'not-authorized');
  });

  test('stateless: a dead token is blocked and then refused like the fpush dialect\'s', async () => {
    const target = targetOf(await resolver.resolve(request({ client: `https://p.example/apns/${APNS_TOKEN}#${TOPIC}` })));
    assert.deepEqual(await resolver.tokenDead(target, { kind: 'token-dead', reason: 'Unregistered' }), { kind: 'not-found' });
    assert.ok(await store.isTokenBlocked('ios', APNS_TOKEN, now));
    assert.deepEqual(answerOf(await resolver.resolve(request({ client: `https://p.example/apns/${APNS_TOKEN}#${TOPIC}` }))), { kind: 'not-found' });
  });

  test('a dead token of a registered client removes the registration and reports it as token_dead', async () => {
    const registration = await register({ boundDomain: 'example.org' });
    const target = targetOf(await resolver.resolve(request({ client: registration.node })));
    assert.deepEqual(await resolver.tokenDead(target, { kind: 'token-dead', reason: 'Unregistered', since: now }), { kind: 'not-found' });
    assert.equal(await store.getByNode(registration.node), undefined);
    assert.deepEqual(reported, [['chat', 'xmpp', 'token_dead']]);
  });

  test('registration: a push2 key that is not a P-256 point is refused naming the field; base64url is accepted', async () => {
    const bad = await registrations.register({ app: 'chat', deviceId: 'd', token: 't', push2Key: 'AAAA' });
    assert.equal(bad.ok, false);
    assert.match(!bad.ok ? bad.failure.message : '', /push2_key/);
    const good = await registrations.register({ app: 'chat', deviceId: 'd', token: 't', push2Key: key.publicRaw.toString('base64url') });
    assert.ok(good.ok);
    assert.equal(good.registration.push2Key, key.publicRaw.toString('base64url'));
  });

  test('registration: the same device re-registering with another push2 key gets a new node (replacing its own when proven)', async () => {
    const first = await register({ push2Key: key.publicBase64, boundDomain: 'example.org' });
    const again = await register({ push2Key: key.publicBase64, boundDomain: 'example.org' });
    assert.equal(again.node, first.node);
    const other = await register({ push2Key: jwtKeyPair().publicBase64, boundDomain: 'example.org' });
    assert.notEqual(other.node, first.node);
    assert.equal(await store.getByNode(first.node), undefined, 'the JID replaced its own registration');
    const anonymous = await register({ push2Key: key.publicBase64, deviceId: 'http-phone' });
    const beside = await register({ push2Key: jwtKeyPair().publicBase64, deviceId: 'http-phone' });
    assert.notEqual(beside.node, anonymous.node);
    assert.equal((await store.getByNode(anonymous.node))?.push2Key, key.publicRaw.toString('base64url'), 'an unproven caller never replaces a key');
  });

  test('registration: a key given when re-registering a registration without one is pinned', async () => {
    const first = await register();
    const again = await register({ push2Key: key.publicBase64 });
    assert.equal(again.node, first.node);
    assert.equal((await store.getByNode(first.node))?.push2Key, key.publicRaw.toString('base64url'));
  });

  test('notify-only (no ciphertext, no JWT) is not-authorized for every client, bound, unbound, signing or stateless, and reaches no provider', async () => {
    const notifyOnly = { payload: null, jwt: null };
    const bound = await register({ boundDomain: 'example.org', deviceId: 'bound' });
    assert.equal(answerOf(await resolver.resolve(request({ client: bound.node, ...notifyOnly }, 'example.org'))).condition, 'not-authorized');
    assert.equal(answerOf(await resolver.resolve(request({ client: bound.node, ...notifyOnly }, 'mallory@example.org'))).condition, 'not-authorized');
    const unbound = await register({ deviceId: 'unbound' });
    assert.equal(answerOf(await resolver.resolve(request({ client: unbound.node, ...notifyOnly }, 'example.org'))).condition, 'not-authorized');
    const signing = await register({ boundDomain: 'example.org', deviceId: 'signing', push2Key: key.publicBase64 });
    const refused = answerOf(await resolver.resolve(request({ client: signing.node, ...notifyOnly }, 'example.org')));
    assert.equal(refused.condition, 'not-authorized');
    assert.match((refused as { reason: string }).reason, /without a JWT/);
    const stateless = answerOf(await resolver.resolve(request({ client: `https://push.example.org/apns/${APNS_TOKEN}#${TOPIC}`, ...notifyOnly }, 'example.org')));
    assert.equal(stateless.condition, 'not-authorized');
    assert.equal((await store.getByNode(bound.node))?.push2Key ?? null, null, 'no key pinned');
    assert.equal(chat.calls.length + ios.calls.length, 0);
  });

  test('a stored retry (the request without its notification) finds the registered target again, domain binding included', async () => {
    const registration = await register({ boundDomain: 'example.org' });
    const retry = (from: string) => resolver.resolve({ ...request({}, from), node: `https://push.example.org/p/${registration.node}`, push2: undefined });
    assert.equal(targetOf(await retry('example.org')).node, registration.node);
    assert.equal(answerOf(await retry('evil.example')).kind, 'forbidden');
    assert.deepEqual(answerOf(await resolver.resolve({ ...request(), node: 'gone', push2: undefined })), { kind: 'not-found' });
  });
});

describe('Push 2.0 configuration', () => {
  test('audiences default to https:// and xmpp: of the component JID; clock skew to 60 s', () => {
    const config = readConfig({ xmpp: { component_jid: 'push.example.org' }, apps: { a: { provider: 'log' } } }, 'test.toml');
    assert.deepEqual(config.push2, { audiences: ['https://push.example.org', 'xmpp:push.example.org'], clockSkewS: 60 });
    assert.equal(config.apps.get('a')?.push2Stateless, false);
  });

  test('audiences must be a non-empty list of strings, naming the key', () => {
    for (const audiences of [[], 7, [1], ['']]) {
      assert.throws(() => readConfig({ push2: { audiences }, apps: { a: { provider: 'log' } } }, 'test.toml'), /push2\.audiences/);
    }
    assert.deepEqual(readConfig({ push2: { audiences: [' https://a '] }, apps: { a: { provider: 'log' } } }, 'test.toml').push2.audiences, ['https://a']);
    assert.deepEqual(readConfig({ push2: { audiences: 'https://a, xmpp:a' }, apps: { a: { provider: 'log' } } }, 'test.toml').push2.audiences, ['https://a', 'xmpp:a'], 'a comma-separated string (environment override)');
  });

  test('push2_stateless is for apns apps only, and an unknown [push2] key is refused', () => {
    assert.throws(() => readConfig({ apps: { a: { provider: 'fcm', push2_stateless: true } } }, 'test.toml'), /apps\.a\.push2_stateless/);
    assert.throws(() => readConfig({ push2: { audience: 'x' }, apps: { a: { provider: 'log' } } }, 'test.toml'), /push2\.audience/);
  });
});

describe('Push 2.0 in the dispatch pipeline', () => {
  test('the provider gets the ciphertext; a stateless Push 2.0 target is under the stateless per-domain limit', async () => {
    const store = new SqliteStore(':memory:');
    const ios = scriptedProvider();
    ios.validateToken = () => null;
    const apps = new AppDirectory([{ name: 'ios', providerKind: 'apns', provider: ios, stateless: false, push2Stateless: true, apnsTopic: TOPIC }]);
    const dispatcher = new Dispatcher(store, apps, silentLogger, { timeoutMs: 500, retryMaxAttempts: 0, retryMaxDelayMs: 1000, maxStatelessPerDomainPerS: 1, statelessBurstPerDomain: 1, maxPublishesPerDomainPerS: 100, publishBurstPerDomain: 100 });
    dispatcher.addResolver(new Push2Resolver(store, apps, silentLogger, { audiences: [AUD], clockSkewS: 30 }));
    const pair = jwtKeyPair();
    const push = (token: string): PushRequest => ({
      dialect: 'push2', node: `https://p.example/apns/${token}#${TOPIC}`, secret: null, from: 'example.org', summary: {}, options: new Map(),
      push2: { client: `https://p.example/apns/${token}#${TOPIC}`, priority: 'high', voip: false, payload: Buffer.from('sealed'), jwt: { token: es256Jwt(pair.privateKey, push2Claims(AUD)), key: pair.publicBase64 } },
    });
    assert.deepEqual(await dispatcher.dispatch(push(APNS_TOKEN)), { kind: 'delivered' });
    assert.deepEqual(ios.calls[0].notification.push2?.ciphertext, Buffer.from('sealed'));
    assert.equal(ios.calls[0].target.token, APNS_TOKEN);
    assert.equal((await dispatcher.dispatch(push('ef'.repeat(32)))).kind, 'limited');
    assert.equal(ios.calls.length, 1);
    await store.close();
  });

  test('a stateless VoIP notification the provider asks to retry is retried on the VoIP token, as a VoIP push', async () => {
    const store = new SqliteStore(':memory:');
    const ios = scriptedProvider([{ kind: 'retry-after', ms: 1000, reason: '503 ServiceUnavailable' }, { kind: 'delivered' }]);
    ios.validateToken = () => null;
    let now = Date.now();
    const apps = new AppDirectory([{ name: 'ios', providerKind: 'apns', provider: ios, stateless: false, push2Stateless: true, apnsTopic: TOPIC }]);
    const dispatcher = new Dispatcher(store, apps, silentLogger, { timeoutMs: 500, retryMaxAttempts: 3, retryMaxDelayMs: 60_000, now: () => now });
    dispatcher.addResolver(new Push2Resolver(store, apps, silentLogger, { audiences: [AUD], clockSkewS: 30, now: () => now }));
    const pair = jwtKeyPair();
    const voipToken = 'cd'.repeat(32);
    const client = `https://p.example/apns/${APNS_TOKEN}#${TOPIC}&${voipToken}`;
    const notification: Push2Notification = { client, priority: 'high', voip: true, payload: Buffer.from('sealed'), jwt: { token: es256Jwt(pair.privateKey, push2Claims(AUD, now)), key: pair.publicBase64 } };
    const result = await dispatcher.dispatch({ dialect: 'push2', node: client, secret: null, from: 'example.org', summary: {}, options: push2RequestOptions(notification), push2: notification });
    assert.equal(result.kind, 'temporary');
    assert.equal(await store.countRetries(), 1, 'the retry is stored, not dropped');
    now += 60_000;
    assert.equal(await dispatcher.runDueRetries(), 1);
    assert.equal(ios.calls.length, 2);
    assert.equal(ios.calls[1].target.token, voipToken, 'the VoIP token again, not the alert token');
    assert.equal(ios.calls[1].notification.push2?.voip, true);
    assert.deepEqual(ios.calls[1].notification.push2?.ciphertext, Buffer.from('sealed'));
    assert.equal(await store.countRetries(), 0);
    await store.close();
  });
});
