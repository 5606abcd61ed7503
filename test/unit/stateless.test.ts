/** Monal's stateless dialect (fpush) behind the dispatcher: node = token, pushModule = app. */
import assert from 'node:assert/strict';
import { rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, test } from 'node:test';
import { Dispatcher, type PushRequest } from '../../src/core/dispatcher.ts';
import { Registrations } from '../../src/core/registrations.ts';
import { RegisteredNodes } from '../../src/core/resolvers/registered.ts';
import { StatelessDialect } from '../../src/core/stateless.ts';
import { silentLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { directoryOf, scriptedProvider, type ScriptedProvider } from '../support/fakes.ts';

const DAY = 24 * 3600 * 1000;

describe('stateless dialect', () => {
  let store: SqliteStore;
  let monal: ScriptedProvider;
  let classic: ScriptedProvider;
  let dispatcher: Dispatcher;
  let now: number;

  const publish = (overrides: Partial<PushRequest> = {}): PushRequest => ({
    dialect: 'xep0357', node: 'device-token-1', secret: null, from: 'example.org', summary: { messageCount: 1 }, options: new Map([['pushModule', 'monal-prod']]), ...overrides,
  });

  const wire = (target: SqliteStore) => {
    const apps = directoryOf({ 'monal-prod': monal, classic }, ['monal-prod']);
    const wired = new Dispatcher(target, apps, silentLogger, { timeoutMs: 500, retryMaxAttempts: 0, retryMaxDelayMs: 60_000, now: () => now });
    wired.addResolver(new RegisteredNodes(target, apps, silentLogger, () => now));
    wired.addResolver(new StatelessDialect(target, apps, silentLogger, { blockForMs: 7 * DAY, now: () => now }));
    return wired;
  };

  beforeEach(() => {
    // The store prunes expired blocks by the wall clock, so the test clock starts there.
    now = Date.now();
    store = new SqliteStore(':memory:');
    monal = scriptedProvider();
    classic = scriptedProvider();
    dispatcher = wire(store);
  });

  test('a publish with pushModule naming a stateless app is sent with the node as the token', async () => {
    assert.deepEqual(await dispatcher.dispatch(publish()), { kind: 'delivered' });
    assert.equal(monal.calls.length, 1);
    assert.equal(monal.calls[0].target.token, 'device-token-1');
    assert.equal(monal.calls[0].target.app, 'monal-prod');
    assert.equal(monal.calls[0].notification.summary.messageCount, 1);
    assert.equal(await store.count(), 0, 'nothing is stored');
  });

  test('a pushModule naming no configured app is not-found and reaches no provider', async () => {
    assert.deepEqual(await dispatcher.dispatch(publish({ options: new Map([['pushModule', 'nope']]) })), { kind: 'not-found' });
    assert.equal(monal.calls.length + classic.calls.length, 0);
  });

  test('an app that did not opt in with stateless = true is not reachable statelessly', async () => {
    assert.deepEqual(await dispatcher.dispatch(publish({ options: new Map([['pushModule', 'classic']]) })), { kind: 'not-found' });
    assert.equal(classic.calls.length, 0);
  });

  test('an unknown node without pushModule stays not-found', async () => {
    assert.deepEqual(await dispatcher.dispatch(publish({ options: new Map() })), { kind: 'not-found' });
    assert.equal(monal.calls.length, 0);
  });

  test('an invalid token is refused before any provider call', async () => {
    assert.deepEqual(await dispatcher.dispatch(publish({ node: 'has a space' })), { kind: 'not-found' });
    assert.equal(monal.calls.length, 0);
  });

  test('a registered node is served by its registration, not by the stateless dialect', async () => {
    const registered = await new Registrations(store, directoryOf({ 'monal-prod': monal }, ['monal-prod'])).register({ app: 'monal-prod', deviceId: 'd', token: 'stored-token' });
    assert.ok(registered.ok);
    const result = await dispatcher.dispatch(publish({ node: registered.registration.node, secret: registered.registration.secret }));
    assert.deepEqual(result, { kind: 'delivered' });
    assert.equal(monal.calls[0].target.token, 'stored-token');
  });

  test('a dead token is blocked: later publishes get not-found without reaching the provider', async () => {
    monal.outcomes = [{ kind: 'token-dead', reason: 'Unregistered' }];
    assert.deepEqual(await dispatcher.dispatch(publish()), { kind: 'not-found' });
    assert.deepEqual(await dispatcher.dispatch(publish()), { kind: 'not-found' });
    assert.equal(monal.calls.length, 1);
    assert.equal(await store.isTokenBlocked('monal-prod', 'device-token-1', now), true);
  });

  test('a blocked token is tried again once the block expires', async () => {
    monal.outcomes = [{ kind: 'token-dead', reason: 'Unregistered' }, { kind: 'delivered' }];
    await dispatcher.dispatch(publish());
    now += 8 * DAY;
    assert.deepEqual(await dispatcher.dispatch(publish()), { kind: 'delivered' });
    assert.equal(monal.calls.length, 2);
  });

  test('the block is per app: the same token for another stateless app still goes out', async () => {
    const sandbox = scriptedProvider();
    const apps = directoryOf({ 'monal-prod': monal, 'monal-sandbox': sandbox }, ['monal-prod', 'monal-sandbox']);
    const wired = new Dispatcher(store, apps, silentLogger, { timeoutMs: 500, retryMaxAttempts: 0, retryMaxDelayMs: 60_000, now: () => now });
    wired.addResolver(new RegisteredNodes(store, apps, silentLogger, () => now));
    wired.addResolver(new StatelessDialect(store, apps, silentLogger, { now: () => now }));
    monal.outcomes = [{ kind: 'token-dead', reason: 'BadDeviceToken' }];
    await wired.dispatch(publish());
    assert.deepEqual(await wired.dispatch(publish({ options: new Map([['pushModule', 'monal-sandbox']]) })), { kind: 'delivered' });
    assert.equal(sandbox.calls.length, 1);
  });

  test('the block list survives a restart of the store', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'push-stateless-'));
    try {
      const file = join(dir, 'push.db');
      const first = new SqliteStore(file);
      monal.outcomes = [{ kind: 'token-dead', reason: 'Unregistered' }];
      await wire(first).dispatch(publish());
      await first.close();
      monal.outcomes = [{ kind: 'delivered' }];
      const reopened = new SqliteStore(file);
      assert.deepEqual(await wire(reopened).dispatch(publish()), { kind: 'not-found' });
      assert.equal(monal.calls.length, 1);
      await reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a transient failure is temporary, so the user server keeps the registration', async () => {
    monal.outcomes = [{ kind: 'retry-after', ms: 2000, reason: '503 from the push service' }];
    assert.deepEqual(await dispatcher.dispatch(publish()), { kind: 'temporary', reason: '503 from the push service', retryAfterMs: 2000 });
    assert.equal(await store.isTokenBlocked('monal-prod', 'device-token-1', now), false);
  });

  test('rejected credentials are temporary, never blamed on the token', async () => {
    monal.outcomes = [{ kind: 'credentials-rejected', reason: 'InvalidProviderToken' }];
    const result = await dispatcher.dispatch(publish());
    assert.equal(result.kind, 'temporary');
    assert.equal(await store.isTokenBlocked('monal-prod', 'device-token-1', now), false);
  });

  test('publishes for the same token while one is on the way ride along with it', async () => {
    const slow = scriptedProvider([{ kind: 'delivered' }], { delayMs: 50 });
    const apps = directoryOf({ 'monal-prod': slow }, ['monal-prod']);
    const wired = new Dispatcher(store, apps, silentLogger, { timeoutMs: 5000, retryMaxAttempts: 0, retryMaxDelayMs: 60_000, now: () => now });
    wired.addResolver(new RegisteredNodes(store, apps, silentLogger, () => now));
    wired.addResolver(new StatelessDialect(store, apps, silentLogger, { now: () => now }));
    const results = await Promise.all([wired.dispatch(publish()), wired.dispatch(publish()), wired.dispatch(publish())]);
    assert.equal(slow.calls.length, 1);
    assert.deepEqual(results.map((r) => r.kind), ['delivered', 'delivered', 'delivered']);
  });

  test('a stateless push the service asked to retry is kept and sent again, though nothing is stored per device', async () => {
    const apps = directoryOf({ 'monal-prod': monal }, ['monal-prod']);
    const retrying = new Dispatcher(store, apps, silentLogger, { timeoutMs: 500, retryMaxDelayMs: 60_000, now: () => now, random: () => 1 });
    retrying.addResolver(new RegisteredNodes(store, apps, silentLogger, () => now));
    retrying.addResolver(new StatelessDialect(store, apps, silentLogger, { now: () => now }));
    monal.outcomes = [{ kind: 'retry-after', ms: 0, reason: '503' }, { kind: 'delivered' }];
    assert.equal((await retrying.dispatch(publish())).kind, 'temporary');
    assert.equal(await store.countRetries(), 1);
    now += 2000;
    assert.equal(await retrying.runDueRetries(), 1);
    assert.equal(monal.calls.length, 2);
    assert.equal(monal.calls[1].target.token, 'device-token-1');
    assert.equal(await store.countRetries(), 0);
  });
});
