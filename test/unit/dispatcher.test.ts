import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { Dispatcher, type PushRequest } from '../../src/core/dispatcher.ts';
import { Registrations } from '../../src/core/registrations.ts';
import { RegisteredNodes } from '../../src/core/resolvers/registered.ts';
import { silentLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { StatelessDialect } from '../../src/core/stateless.ts';
import { AppDirectory } from '../../src/core/apps.ts';
import type { Telemetry } from '../../src/core/telemetry.ts';
import { replyForDispatch } from '../../src/xmpp/replies.ts';
import { httpReplyForDispatch } from '../../src/http/replies.ts';
import { directoryOf, scriptedProvider, type ScriptedProvider } from '../support/fakes.ts';

describe('dispatcher', () => {
  let store: SqliteStore;
  let provider: ScriptedProvider;
  let dispatcher: Dispatcher;
  let now: number;
  let node: string;
  let secret: string;

  const request = (overrides: Partial<PushRequest> = {}): PushRequest => ({
    dialect: 'xep0357', node, secret, from: 'example.org', summary: { messageCount: 1 }, options: new Map(), ...overrides,
  });

  beforeEach(async () => {
    now = 1_000_000;
    store = new SqliteStore(':memory:');
    provider = scriptedProvider();
    const apps = directoryOf({ apns: provider });
    dispatcher = new Dispatcher(store, apps, silentLogger, { timeoutMs: 200, retryMaxAttempts: 3, retryMaxDelayMs: 60_000, now: () => now });
    dispatcher.addResolver(new RegisteredNodes(store, apps, silentLogger, () => now));
    const registered = await new Registrations(store, apps, () => now).register({ app: 'apns', deviceId: 'dev', token: 'tok' });
    assert.ok(registered.ok);
    ({ node, secret } = registered.registration);
  });

  test('a verified publish reaches the provider once and is recorded', async () => {
    assert.deepEqual(await dispatcher.dispatch(request()), { kind: 'delivered' });
    assert.equal(provider.calls.length, 1);
    assert.equal(provider.calls[0].target.token, 'tok');
    assert.equal((await store.getByNode(node))?.pushCount, 1);
  });

  test('a wrong secret and an unknown node get the same not-found and no provider call', async () => {
    assert.deepEqual(await dispatcher.dispatch(request({ secret: 'wrong' })), { kind: 'not-found' });
    assert.deepEqual(await dispatcher.dispatch(request({ node: 'unknown' })), { kind: 'not-found' });
    assert.deepEqual(await dispatcher.dispatch(request({ secret: null })), { kind: 'not-found' });
    assert.equal(provider.calls.length, 0);
  });

  test('a dead token removes the registration and answers not-found', async () => {
    provider.outcomes = [{ kind: 'token-dead', reason: 'Unregistered', since: now }];
    assert.deepEqual(await dispatcher.dispatch(request()), { kind: 'not-found' });
    assert.equal(await store.getByNode(node), undefined);
  });

  test('a dead token reported before the device re-registered keeps the registration', async () => {
    provider.outcomes = [{ kind: 'token-dead', reason: 'Unregistered', since: now - 10_000 }];
    await store.renew(node, now);
    const result = await dispatcher.dispatch(request());
    assert.equal(result.kind, 'temporary');
    assert.ok(await store.getByNode(node));
  });

  test('retry-after is temporary and schedules one retry that is sent when the provider said, not sooner', async () => {
    // 5 s: the backoff's first step is 1 s, so only the provider's Retry-After explains 5 s.
    provider.outcomes = [{ kind: 'retry-after', ms: 5000, reason: '429 TooManyRequests' }, { kind: 'delivered' }];
    const result = await dispatcher.dispatch(request());
    assert.equal(result.kind, 'temporary');
    now += 4999;
    assert.equal(await dispatcher.runDueRetries(), 0, 'not before the Retry-After');
    assert.equal(provider.calls.length, 1);
    now += 1;
    assert.equal(await dispatcher.runDueRetries(), 1);
    assert.equal(provider.calls.length, 2);
    assert.equal((await store.getByNode(node))?.pushCount, 1);
  });

  test('a second retry-after for a node with a retry pending does not queue another', async () => {
    provider.outcomes = [{ kind: 'retry-after', ms: 5000, reason: 'busy' }];
    await dispatcher.dispatch(request());
    await dispatcher.dispatch(request());
    now += 60_000;
    assert.equal(await dispatcher.runDueRetries(), 1);
  });

  test('our credentials rejected is temporary, never permanent', async () => {
    provider.outcomes = [{ kind: 'credentials-rejected', reason: 'InvalidProviderToken' }];
    const result = await dispatcher.dispatch(request());
    assert.equal(result.kind, 'temporary');
    assert.ok(await store.getByNode(node));
    assert.equal((await store.getByNode(node))?.lastError, 'InvalidProviderToken');
  });

  test('a provider that does not answer in time is temporary', async () => {
    provider.send = () => new Promise(() => {});
    const result = await dispatcher.dispatch(request());
    assert.equal(result.kind, 'temporary');
  });

  test('a provider that throws is temporary, not a crash', async () => {
    provider.send = async () => { throw new Error('boom'); };
    const result = await dispatcher.dispatch(request());
    assert.equal(result.kind, 'temporary');
  });

  test('publishes for a node while one is on the way ride along with it', async () => {
    let release!: () => void;
    provider.send = async (target, notification) => {
      provider.calls.push({ target, notification });
      await new Promise<void>((resolve) => { release = resolve; });
      return { kind: 'delivered' };
    };
    const first = dispatcher.dispatch(request());
    await new Promise((resolve) => setImmediate(resolve));
    const second = dispatcher.dispatch(request());
    await new Promise((resolve) => setImmediate(resolve));
    release();
    assert.deepEqual(await first, { kind: 'delivered' });
    assert.deepEqual(await second, { kind: 'delivered', coalesced: true });
    assert.equal(provider.calls.length, 1);
  });

  test('beyond max in flight a publish gets a temporary answer instead of queueing', async () => {
    const other = await new Registrations(store, directoryOf({ apns: provider }), () => now).register({ app: 'apns', deviceId: 'dev-2', token: 'tok-2' });
    assert.ok(other.ok);
    const limited = new Dispatcher(store, directoryOf({ apns: provider }), silentLogger, { timeoutMs: 1000, maxInFlight: 1, retryMaxAttempts: 0, retryMaxDelayMs: 1000 });
    limited.addResolver(new RegisteredNodes(store, directoryOf({ apns: provider }), silentLogger));
    let release!: () => void;
    provider.send = async () => { await new Promise<void>((resolve) => { release = resolve; }); return { kind: 'delivered' }; };
    const first = limited.dispatch(request());
    await new Promise((resolve) => setImmediate(resolve));
    const second = await limited.dispatch(request({ node: other.registration.node, secret: other.registration.secret }));
    assert.equal(second.kind, 'temporary');
    release();
    assert.equal((await first).kind, 'delivered');
  });

  test('a registration bound to a domain refuses publishes from another domain', async () => {
    const registered = await new Registrations(store, directoryOf({ apns: provider })).register({ app: 'apns', deviceId: 'bound', token: 't2', scope: 'alice@home.example', boundDomain: 'home.example' });
    assert.ok(registered.ok);
    const bound = { node: registered.registration.node, secret: registered.registration.secret };
    assert.equal((await dispatcher.dispatch(request({ ...bound, from: 'evil.example' }))).kind, 'forbidden');
    assert.equal((await dispatcher.dispatch(request({ ...bound, from: 'home.example' }))).kind, 'delivered');
    assert.equal((await dispatcher.dispatch(request({ ...bound, from: 'alice@home.example' }))).kind, 'delivered');
  });

  test('a store that cannot answer the lookup gets a wait with internal-server-error, not a crash', async () => {
    store.getByNode = async () => { throw new Error('SQLITE_IOERR: disk I/O error'); };
    const result = await dispatcher.dispatch(request());
    assert.equal(result.kind, 'temporary');
    assert.equal(result.kind === 'temporary' && result.cause, 'store');
    const reply = replyForDispatch(result);
    assert.ok(reply !== true && reply.type === 'wait' && reply.condition === 'internal-server-error');
    assert.equal(provider.calls.length, 0);
  });

  test('every answered publish and every provider request is reported to telemetry', async () => {
    const seen: string[] = [];
    const telemetry: Telemetry = {
      publishAnswered: (app, dialect, result) => seen.push(`publish ${app} ${dialect} ${result}`),
      providerRequest: (app, kind, outcome) => seen.push(`provider ${app} ${kind} ${outcome}`),
      retryFinished() {}, retriesPending() {}, registrationChanged() {},
    };
    const apps = directoryOf({ apns: provider });
    const observed = new Dispatcher(store, apps, silentLogger, { timeoutMs: 200, retryMaxAttempts: 0, retryMaxDelayMs: 1000, telemetry });
    observed.addResolver(new RegisteredNodes(store, apps, silentLogger));
    await observed.dispatch(request());
    await observed.dispatch(request({ dialect: 'http', node: 'unknown' }));
    assert.deepEqual(seen, ['provider apns scripted delivered', 'publish apns xep0357 delivered', 'publish  http not_found']);
  });
});

describe('dispatcher limits, for every dialect', () => {
  const DOMAIN_LIMITS = { timeoutMs: 1000, retryMaxAttempts: 0, retryMaxDelayMs: 1000 };
  const statelessPublish = (from: string, token = 'tok-a'): PushRequest => ({
    dialect: 'xep0357', node: token, secret: null, from, summary: {}, options: new Map([['pushModule', 'monal']]),
  });

  function wired(options: Partial<ConstructorParameters<typeof Dispatcher>[3]>, provider: ScriptedProvider, allowedDomains?: string[]) {
    const store = new SqliteStore(':memory:');
    const apps = new AppDirectory([{ name: 'monal', providerKind: 'scripted', provider, stateless: true, allowedDomains }]);
    const dispatcher = new Dispatcher(store, apps, silentLogger, { ...DOMAIN_LIMITS, ...options });
    dispatcher.addResolver(new RegisteredNodes(store, apps, silentLogger));
    dispatcher.addResolver(new StatelessDialect(store, apps, silentLogger));
    return dispatcher;
  }

  test('a stateless flood from one domain is limited while another domain still gets through', async () => {
    const provider = scriptedProvider();
    const dispatcher = wired({ maxStatelessPerDomainPerS: 1, statelessBurstPerDomain: 2, now: () => 5000 }, provider);
    const flood = [];
    for (let i = 0; i < 5; i++) flood.push(await dispatcher.dispatch(statelessPublish('flood.example', `tok-${i}`)));
    assert.deepEqual(flood.map((r) => r.kind), ['delivered', 'delivered', 'limited', 'limited', 'limited']);
    assert.equal((await dispatcher.dispatch(statelessPublish('calm.example'))).kind, 'delivered');
    assert.equal(provider.calls.length, 3);
  });

  test('a limited publish is wait/resource-constraint over XMPP and 429 with Retry-After over HTTP', () => {
    const result = { kind: 'limited', reason: 'too many publishes from x', retryAfterMs: 2500 } as const;
    const reply = replyForDispatch(result);
    assert.ok(reply !== true && reply.type === 'wait' && reply.condition === 'resource-constraint');
    const http = httpReplyForDispatch(result, 'n');
    assert.equal(http.status, 429);
    assert.equal(http.headers?.['retry-after'], '3');
  });

  test('stateless pushes beyond their in-flight cap are limited', async () => {
    let release!: () => void;
    const provider = scriptedProvider();
    provider.send = async () => { await new Promise<void>((resolve) => { release = resolve; }); return { kind: 'delivered' }; };
    const dispatcher = wired({ maxStatelessInFlight: 1 }, provider);
    const first = dispatcher.dispatch(statelessPublish('a.example', 'tok-1'));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal((await dispatcher.dispatch(statelessPublish('b.example', 'tok-2'))).kind, 'limited');
    release();
    assert.equal((await first).kind, 'delivered');
  });

  async function registeredNode(dispatcherStore: SqliteStore, apps: AppDirectory, deviceId: string) {
    const registered = await new Registrations(dispatcherStore, apps).register({ app: 'monal', deviceId, token: `tok-${deviceId}` });
    assert.ok(registered.ok);
    return registered.registration;
  }

  function wiredRegistered(options: Partial<ConstructorParameters<typeof Dispatcher>[3]>, provider: ScriptedProvider, allowedDomains?: string[]) {
    const store = new SqliteStore(':memory:');
    const apps = new AppDirectory([{ name: 'monal', providerKind: 'scripted', provider, stateless: false, allowedDomains }]);
    const warnings: string[] = [];
    const logger = { ...silentLogger, warn: (message: string) => { warnings.push(message); }, child: () => logger };
    const dispatcher = new Dispatcher(store, apps, logger, { ...DOMAIN_LIMITS, ...options });
    dispatcher.addResolver(new RegisteredNodes(store, apps, silentLogger));
    return { store, apps, dispatcher, warnings };
  }

  const registeredPublish = (registration: { node: string; secret: string }, from: string): PushRequest => ({
    dialect: 'xep0357', node: registration.node, secret: registration.secret, from, summary: {}, options: new Map(),
  });

  test('registered publishes from one domain over its limit are limited with one warning, another domain still gets through', async () => {
    const provider = scriptedProvider();
    const { store, apps, dispatcher, warnings } = wiredRegistered({ maxPublishesPerDomainPerS: 1, publishBurstPerDomain: 2, now: () => 5000 }, provider);
    // Distinct devices, so coalescing cannot explain a refusal: only the per-domain limit does.
    const devices = await Promise.all(['d0', 'd1', 'd2', 'd3', 'd4', 'd5'].map((id) => registeredNode(store, apps, id)));
    const flood = [];
    for (const device of devices.slice(0, 5)) flood.push(await dispatcher.dispatch(registeredPublish(device, 'flood.example')));
    assert.deepEqual(flood.map((r) => r.kind), ['delivered', 'delivered', 'limited', 'limited', 'limited']);
    const limited = flood[2];
    assert.ok(limited.kind === 'limited' && limited.retryAfterMs > 0, 'a limited publish says when to come back');
    assert.equal((await dispatcher.dispatch(registeredPublish(devices[5], 'calm.example'))).kind, 'delivered');
    assert.equal(provider.calls.length, 3);
    assert.equal(warnings.filter((line) => /over the limit/.test(line)).length, 1, `one warning for three refusals: ${warnings.join(' | ')}`);
  });

  test('a stateless flood over its per-domain limit is logged once, not once per refused publish', async () => {
    const provider = scriptedProvider();
    const store = new SqliteStore(':memory:');
    const apps = new AppDirectory([{ name: 'monal', providerKind: 'scripted', provider, stateless: true }]);
    const warnings: string[] = [];
    const logger = { ...silentLogger, warn: (message: string) => { warnings.push(message); }, child: () => logger };
    const dispatcher = new Dispatcher(store, apps, logger, { ...DOMAIN_LIMITS, maxStatelessPerDomainPerS: 1, statelessBurstPerDomain: 1, now: () => 5000 });
    dispatcher.addResolver(new StatelessDialect(store, apps, silentLogger));
    const kinds = [];
    for (let i = 0; i < 20; i++) kinds.push((await dispatcher.dispatch(statelessPublish('flood.example', `tok-${i}`))).kind);
    assert.equal(kinds.filter((kind) => kind === 'limited').length, 19);
    assert.equal(warnings.filter((line) => /over the limit/.test(line)).length, 1, warnings.join(' | '));
  });

  test('allowed_domains refuses a publish for a registered node from a domain not on the list', async () => {
    const provider = scriptedProvider();
    const { store, apps, dispatcher } = wiredRegistered({}, provider, ['good.example']);
    const device = await registeredNode(store, apps, 'phone');
    assert.equal((await dispatcher.dispatch(registeredPublish(device, 'evil.example'))).kind, 'forbidden');
    assert.equal(provider.calls.length, 0);
    assert.equal((await dispatcher.dispatch(registeredPublish(device, 'good.example'))).kind, 'delivered');
    assert.equal(provider.calls.length, 1);
  });

  test('allowed_domains refuses a publishing domain not on the list, stateless included', async () => {
    const provider = scriptedProvider();
    const dispatcher = wired({}, provider, ['good.example']);
    assert.equal((await dispatcher.dispatch(statelessPublish('evil.example'))).kind, 'forbidden');
    assert.equal((await dispatcher.dispatch(statelessPublish('good.example'))).kind, 'delivered');
    assert.equal(provider.calls.length, 1);
  });
});
