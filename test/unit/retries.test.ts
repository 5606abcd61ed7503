/** Issue #11 in the core: no accepted push is lost (real SQLite store, scripted provider, test clock). */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, beforeEach, describe, test } from 'node:test';
import { AppDirectory } from '../../src/core/apps.ts';
import { Dispatcher, type DispatcherOptions, type PushRequest } from '../../src/core/dispatcher.ts';
import { Registrations } from '../../src/core/registrations.ts';
import { RegisteredNodes } from '../../src/core/resolvers/registered.ts';
import { silentLogger } from '../../src/log.ts';
import type { Outcome } from '../../src/providers/types.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/types.ts';
import { scriptedProvider, type ScriptedProvider } from '../support/fakes.ts';

const UNAVAILABLE: Outcome = { kind: 'retry-after', ms: 0, reason: 'APNS 503 ServiceUnavailable', status: 503 };
const dirs: string[] = [];
after(() => { for (const dir of dirs) rmSync(dir, { recursive: true, force: true }); });
function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'push-retries-'));
  dirs.push(dir);
  return join(dir, 'push.db');
}

describe('retries', () => {
  let now: number;
  let provider: ScriptedProvider;
  let store: SqliteStore;

  const appsWith = (extra: { includeBody?: boolean; ttlSeconds?: number } = {}) =>
    new AppDirectory([{ name: 'apns', providerKind: 'apns', provider, stateless: false, ...extra }]);

  function dispatcherOn(target: Store, apps: AppDirectory, options: Partial<DispatcherOptions> = {}): Dispatcher {
    const dispatcher = new Dispatcher(target, apps, silentLogger, { timeoutMs: 200, retryMaxDelayMs: 3600_000, now: () => now, random: () => 1, ...options });
    dispatcher.addResolver(new RegisteredNodes(target, apps, silentLogger, () => now));
    return dispatcher;
  }

  async function register(target: Store, apps: AppDirectory, device = 'dev', token = 'tok') {
    const registered = await new Registrations(target, apps, () => now).register({ app: 'apns', deviceId: device, token });
    assert.ok(registered.ok);
    return registered.registration;
  }

  const publish = (node: string, secret: string, summary: PushRequest['summary'] = { messageCount: 1 }): PushRequest => ({
    dialect: 'xep0357', node, secret, from: 'example.org', summary, options: new Map(),
  });

  /** Runs the retry queue as the loop would, stepping the clock to each due time, until `done` or the age limit. */
  async function runUntil(dispatcher: Dispatcher, done: () => boolean, stepMs: number, limitMs: number): Promise<void> {
    const end = now + limitMs;
    while (!done() && now < end) {
      now += stepMs;
      await dispatcher.runDueRetries();
    }
  }

  beforeEach(() => {
    now = 10_000_000;
    provider = scriptedProvider();
    store = new SqliteStore(':memory:');
  });

  test('a push is retried through a provider outage far longer than 31 s and delivered when it recovers', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps);
    const { node, secret } = await register(store, apps);
    provider.outcomes = [...Array(12).fill(UNAVAILABLE), { kind: 'delivered' }];
    assert.equal((await dispatcher.dispatch(publish(node, secret))).kind, 'temporary');
    await runUntil(dispatcher, () => provider.calls.length === 13, 1000, 3600_000);
    assert.equal(provider.calls.length, 13);
    assert.equal(await store.countRetries(), 0);
    assert.equal((await store.getByNode(node))?.pushCount, 1);
  });

  test('the backoff is capped by retry_max_backoff_s, so a device wakes soon after the provider recovers', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps, { retryMaxBackoffMs: 60_000 });
    const { node, secret } = await register(store, apps);
    provider.outcomes = [...Array(20).fill(UNAVAILABLE), { kind: 'delivered' }];
    await dispatcher.dispatch(publish(node, secret));
    const sentAt: number[] = [];
    provider.send = async (target, notification) => { sentAt.push(now); provider.calls.push({ target, notification }); return provider.outcomes.shift()!; };
    await runUntil(dispatcher, () => provider.outcomes.length === 0, 1000, 3600_000);
    const gaps = sentAt.slice(1).map((at, i) => at - sentAt[i]);
    assert.ok(Math.max(...gaps) <= 60_000, `largest gap ${Math.max(...gaps)} ms`);
  });

  test('a push is given up once its age passes retry_max_age_s', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps, { retryMaxAgeMs: 120_000 });
    const { node, secret } = await register(store, apps);
    provider.outcomes = [UNAVAILABLE];
    await dispatcher.dispatch(publish(node, secret));
    await runUntil(dispatcher, () => false, 1000, 300_000);
    const attempts = provider.calls.length;
    assert.equal(await store.countRetries(), 0);
    assert.ok(attempts > 2 && attempts < 20, `${attempts} attempts`);
    assert.ok(await store.getByNode(node), 'the registration stays');
  });

  test('the app\'s ttl ends retries sooner than retry_max_age_s', async () => {
    const apps = appsWith({ ttlSeconds: 10 });
    const dispatcher = dispatcherOn(store, apps);
    const { node, secret } = await register(store, apps);
    provider.outcomes = [UNAVAILABLE];
    await dispatcher.dispatch(publish(node, secret));
    await runUntil(dispatcher, () => false, 1000, 60_000);
    assert.equal(await store.countRetries(), 0);
    assert.ok(provider.calls.length <= 6, `${provider.calls.length} attempts`);
  });

  test('retry_max_attempts = 0 turns retries off', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps, { retryMaxAttempts: 0 });
    const { node, secret } = await register(store, apps);
    provider.outcomes = [UNAVAILABLE];
    await dispatcher.dispatch(publish(node, secret));
    assert.equal(await store.countRetries(), 0);
  });

  test('the retried push is the same push: alert urgency, counts and sender kept, the body not stored', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps);
    const { node, secret } = await register(store, apps);
    provider.outcomes = [UNAVAILABLE, { kind: 'delivered' }];
    const firstAt = now;
    await dispatcher.dispatch(publish(node, secret, { messageCount: 4, lastMessageSender: 'juliet@example.org', lastMessageBody: 'secret words' }));
    const [stored] = await store.leaseDueRetries(now + 3600_000, 10, now);
    assert.equal(JSON.stringify(stored).includes('secret words'), false, 'no message body in the store');
    await runUntil(dispatcher, () => provider.calls.length === 2, 1000, 60_000);
    const retried = provider.calls[1].notification;
    assert.equal(retried.urgency, 'high');
    assert.equal(retried.summary.messageCount, 4);
    assert.equal(retried.summary.lastMessageSender, 'juliet@example.org');
    assert.equal(retried.summary.lastMessageBody, undefined);
    assert.equal(retried.firstAttemptAt, firstAt);
  });

  test('with include_body = true the retried push carries the body too', async () => {
    const apps = appsWith({ includeBody: true });
    const dispatcher = dispatcherOn(store, apps);
    const { node, secret } = await register(store, apps);
    provider.outcomes = [UNAVAILABLE, { kind: 'delivered' }];
    await dispatcher.dispatch(publish(node, secret, { lastMessageBody: 'hello' }));
    await runUntil(dispatcher, () => provider.calls.length === 2, 1000, 60_000);
    assert.equal(provider.calls[1].notification.summary.lastMessageBody, 'hello');
  });

  test('many pending retries for one node collapse into one that carries the newest summary', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps);
    const { node, secret } = await register(store, apps);
    provider.outcomes = [UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, { kind: 'delivered' }];
    for (const count of [1, 2, 3]) await dispatcher.dispatch(publish(node, secret, { messageCount: count }));
    assert.equal(await store.countRetries(), 1);
    await runUntil(dispatcher, () => provider.calls.length === 4, 1000, 60_000);
    assert.equal(provider.calls[3].notification.summary.messageCount, 3);
    assert.equal(await store.countRetries(), 0);
  });

  /**
   * A publish the provider refused left a retry in a file store; `first` leased it and its request
   * hangs at the provider. Returns the dispatcher holding the lease.
   */
  async function retryOnItsWay(first: SqliteStore, apps: AppDirectory): Promise<Dispatcher> {
    const { node, secret } = await register(first, apps);
    provider.outcomes = [UNAVAILABLE];
    const holding = dispatcherOn(first, apps);
    await holding.dispatch(publish(node, secret));
    now += 2000;
    provider.send = () => new Promise(() => {});
    void holding.runDueRetries();
    await new Promise((resolve) => setImmediate(resolve));
    return holding;
  }

  /** A dispatcher on `target` whose provider delivers once. */
  function recoveredOn(target: Store): { dispatcher: Dispatcher; recovered: ScriptedProvider } {
    const recovered = scriptedProvider([{ kind: 'delivered' }]);
    return { dispatcher: dispatcherOn(target, new AppDirectory([{ name: 'apns', providerKind: 'apns', provider: recovered, stateless: false }])), recovered };
  }

  test('a retry leased by a process that died is sent by the next one when the lease ends', async () => {
    const file = tempDb();
    const first = new SqliteStore(file);
    // The first process leases the due retry and dies while its request is on the way.
    await retryOnItsWay(first, appsWith());
    const restarted = new SqliteStore(file);
    const { dispatcher: second, recovered } = recoveredOn(restarted);
    assert.equal(await second.runDueRetries(), 0, 'not sent again while leased');
    now += 60_000;
    assert.equal(await second.runDueRetries(), 1);
    assert.equal(recovered.calls.length, 1);
    assert.equal(await restarted.countRetries(), 0);
    await restarted.close();
    await first.close();
  });

  test('a graceful stop with a retry still on its way makes it due at once for whoever leases next, not when its lease ends', async () => {
    const file = tempDb();
    const first = new SqliteStore(file);
    const stopping = await retryOnItsWay(first, appsWith());
    await stopping.close(20);
    const next = new SqliteStore(file);
    const { dispatcher: second, recovered } = recoveredOn(next);
    assert.equal(await second.runDueRetries(), 1, 'due at once');
    assert.equal(recovered.calls.length, 1);
    assert.equal(await next.countRetries(), 0);
    await next.close();
    await first.close();
  });

  test('a worker that stalls past its lease and finishes late does not remove the newer push saved for the node since (ABA on revision)', async () => {
    const apps = appsWith();
    const { node, secret } = await register(store, apps);
    // Worker A's provider answers only when the test says so (A stalls); B's is the scripted one.
    const stalled = scriptedProvider();
    let answer: ((outcome: Outcome) => void) | undefined;
    stalled.send = async (target, notification) => {
      stalled.calls.push({ target, notification });
      return await new Promise<Outcome>((resolve) => { answer = resolve; });
    };
    const workerA = dispatcherOn(store, new AppDirectory([{ name: 'apns', providerKind: 'apns', provider: stalled, stateless: false }]), { timeoutMs: 10_000 });
    const workerB = dispatcherOn(store, apps);
    provider.outcomes = [UNAVAILABLE, { kind: 'delivered' }, UNAVAILABLE, { kind: 'delivered' }];
    assert.equal((await workerB.dispatch(publish(node, secret, { messageCount: 1 }))).kind, 'temporary');
    // A leases the retry (revision 1, lease ends in 2 * 10 s + 5 s) and stalls.
    now += 1000;
    const runA = workerA.runDueRetries();
    while (!answer) await new Promise((resolve) => setImmediate(resolve));
    // A's lease ends; B leases the same row (still revision 1), delivers it, and removes it.
    now += 25_000;
    assert.equal(await workerB.runDueRetries(), 1);
    assert.equal(await store.countRetries(), 0);
    // A newer push for the node fails: a new row, revision 1 again.
    assert.equal((await workerB.dispatch(publish(node, secret, { messageCount: 2 }))).kind, 'temporary');
    assert.equal(await store.countRetries(), 1);
    // A comes back and its push is delivered: its finish must not take the newer row with it.
    answer({ kind: 'delivered' });
    assert.equal(await runA, 1);
    assert.equal(await store.countRetries(), 1, 'the newer push is still owed');
    now += 1000;
    assert.equal(await workerB.runDueRetries(), 1);
    assert.equal(provider.calls.length, 4);
    assert.equal(provider.calls[3].notification.summary.messageCount, 2);
    assert.equal(await store.countRetries(), 0);
  });

  test('a retry the store cannot save is kept in memory and still sent when due', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps);
    const { node, secret } = await register(store, apps);
    const saveRetry = store.saveRetry.bind(store);
    store.saveRetry = async () => { throw new Error('SQLITE_FULL: database or disk is full'); };
    provider.outcomes = [UNAVAILABLE, { kind: 'delivered' }];
    assert.equal((await dispatcher.dispatch(publish(node, secret))).kind, 'temporary');
    await runUntil(dispatcher, () => provider.calls.length === 2, 1000, 60_000);
    assert.equal(provider.calls.length, 2);
    store.saveRetry = saveRetry;
  });

  test('within push.min_interval_ms later publishes merge into one push at the window\'s end, each answered delivered', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps, { minIntervalMs: 5000 });
    const { node, secret } = await register(store, apps);
    assert.deepEqual(await dispatcher.dispatch(publish(node, secret, { messageCount: 1 })), { kind: 'delivered' });
    now += 1000;
    assert.equal((await dispatcher.dispatch(publish(node, secret, { messageCount: 2 }))).kind, 'delivered');
    now += 1000;
    assert.equal((await dispatcher.dispatch(publish(node, secret, { messageCount: 3 }))).kind, 'delivered');
    assert.equal(provider.calls.length, 1);
    now += 2000;
    await dispatcher.runDueRetries();
    assert.equal(provider.calls.length, 1, 'not before the window ends');
    now += 1000;
    await dispatcher.runDueRetries();
    assert.equal(provider.calls.length, 2);
    assert.equal(provider.calls[1].notification.summary.messageCount, 3);
  });

  test('two dispatchers on one store share the throttle window: a node gets one push, then the merged one at the window\'s end', async () => {
    const apps = appsWith();
    const first = dispatcherOn(store, apps, { minIntervalMs: 5000 });
    const second = dispatcherOn(store, apps, { minIntervalMs: 5000 });
    const { node, secret } = await register(store, apps);
    // The first push is still on its way (nothing recorded on the registration yet) when the second instance is asked.
    let answer!: (outcome: Outcome) => void;
    const send = provider.send;
    provider.send = async (target, notification) => {
      provider.calls.push({ target, notification });
      return await new Promise<Outcome>((resolve) => { answer = resolve; });
    };
    const onItsWay = first.dispatch(publish(node, secret, { messageCount: 1 }));
    while (provider.calls.length === 0) await new Promise((resolve) => setImmediate(resolve));
    now += 1000;
    assert.equal((await second.dispatch(publish(node, secret, { messageCount: 2 }))).kind, 'delivered');
    assert.equal(provider.calls.length, 1, 'the second dispatcher keeps the window the first opened');
    provider.send = send;
    answer({ kind: 'delivered' });
    assert.deepEqual(await onItsWay, { kind: 'delivered' });
    now += 3999;
    await second.runDueRetries();
    assert.equal(provider.calls.length, 1, 'not before the window ends');
    now += 1;
    await first.runDueRetries();
    assert.equal(provider.calls.length, 2);
    assert.equal(provider.calls[1].notification.summary.messageCount, 2);
  });

  test('a graceful stop answers pushes still on their way with wait and keeps them as retries', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps, { timeoutMs: 60_000 });
    const { node, secret } = await register(store, apps);
    provider.send = () => new Promise(() => {});
    const onItsWay = dispatcher.dispatch(publish(node, secret));
    await new Promise((resolve) => setImmediate(resolve));
    await dispatcher.close(20);
    assert.equal((await onItsWay).kind, 'temporary');
    assert.equal(await store.countRetries(), 1);
    const other = await register(store, apps, 'dev-2', 'tok-2');
    assert.equal((await dispatcher.dispatch(publish(other.node, other.secret))).kind, 'temporary', 'publishes while closing are answered wait');
    assert.equal(await store.countRetries(), 2, '… and kept');
  });

  test('when every push of an app comes back token-dead, registrations are kept and the app is degraded', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps, { deadTokenThreshold: 5 });
    const registrations = [];
    for (let i = 0; i < 20; i++) registrations.push(await register(store, apps, `dev-${i}`, `tok-${i}`));
    provider.outcomes = [{ kind: 'token-dead', reason: 'APNS 400 DeviceTokenNotForTopic', status: 400 }];
    for (const { node, secret } of registrations) await dispatcher.dispatch(publish(node, secret));
    assert.equal(await store.count(), 20, 'all registrations are still there');
    assert.equal(dispatcher.appStatus('apns')?.state, 'degraded');
    provider.outcomes = [{ kind: 'delivered' }];
    await dispatcher.dispatch(publish(registrations[0].node, registrations[0].secret));
    assert.equal(dispatcher.appStatus('apns'), undefined, 'a delivery ends it');
  });

  test('a single dead token among deliveries is still removed', async () => {
    const apps = appsWith();
    const dispatcher = dispatcherOn(store, apps);
    const good = await register(store, apps, 'good', 'tok-good');
    const dead = await register(store, apps, 'dead', 'tok-dead');
    await dispatcher.dispatch(publish(good.node, good.secret));
    provider.outcomes = [{ kind: 'token-dead', reason: 'Unregistered', since: now }];
    assert.deepEqual(await dispatcher.dispatch(publish(dead.node, dead.secret)), { kind: 'not-found' });
    assert.equal(await store.getByNode(dead.node), undefined);
  });
});

describe('sqlite store under write errors', () => {
  test('bookkeeping writes refused by a lock held elsewhere are kept, health says degraded, and it recovers', async () => {
    const file = tempDb();
    const store = new SqliteStore(file);
    const apps = new AppDirectory([{ name: 'apns', providerKind: 'apns', provider: scriptedProvider(), stateless: false }]);
    const registered = await new Registrations(store, apps).register({ app: 'apns', deviceId: 'd', token: 't' });
    assert.ok(registered.ok);
    const other = new DatabaseSync(file);
    other.exec('BEGIN IMMEDIATE');
    store.recordDelivery(registered.registration.node, Date.now());
    assert.doesNotThrow(() => store.flush());
    assert.equal(store.health().state, 'degraded');
    assert.match(store.health().detail ?? '', /locked|busy/i);
    other.exec('COMMIT');
    other.close();
    const deadline = Date.now() + 10_000;
    while (store.health().state !== 'ok' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(store.health().state, 'ok');
    const reopened = new DatabaseSync(file);
    const row = reopened.prepare('SELECT push_count FROM registrations WHERE node = ?').get(registered.registration.node) as { push_count: number };
    reopened.close();
    assert.equal(row.push_count, 1);
    await store.close();
  });

  test('a full database (max_page_count): publishes are answered, retries it cannot hold are kept in memory and sent, health says so with SQLite\'s message, registrations stay, and it recovers by itself', async () => {
    const file = tempDb();
    let now = 10_000_000;
    const provider = scriptedProvider();
    const apps = new AppDirectory([{ name: 'apns', providerKind: 'apns', provider, stateless: false }]);
    const register = async (target: Store, _apps: AppDirectory, deviceId: string, token: string) => {
      const registered = await new Registrations(target, apps, () => now).register({ app: 'apns', deviceId, token });
      assert.ok(registered.ok);
      return registered.registration;
    };
    const publish = (node: string, secret: string): PushRequest => ({ dialect: 'xep0357', node, secret, from: 'example.org', summary: { messageCount: 1 }, options: new Map() });
    const filling = new SqliteStore(file);
    const nodes: Array<{ node: string; secret: string }> = [];
    for (let i = 0; i < 60; i++) nodes.push(await register(filling, apps, `d${i}`, `t${i}`));
    await filling.close();
    const probe = new DatabaseSync(file, { readOnly: true });
    const { page_count: pages } = probe.prepare('PRAGMA page_count').get() as { page_count: number };
    probe.close();
    // Not one page more than it has now: every write that needs a new page fails with SQLITE_FULL.
    const store = new SqliteStore(file, { maxPageCount: pages });
    const warnings: string[] = [];
    const logger = { ...silentLogger, warn: (message: string, fields?: Record<string, unknown>) => { warnings.push(`${message} ${JSON.stringify(fields)}`); } };
    const dispatcher = new Dispatcher(store, apps, logger, { timeoutMs: 200, retryMaxDelayMs: 60_000, now: () => now, random: () => 1 });
    dispatcher.addResolver(new RegisteredNodes(store, apps, silentLogger, () => now));
    provider.outcomes = nodes.map(() => UNAVAILABLE);
    for (const { node, secret } of nodes) assert.equal((await dispatcher.dispatch(publish(node, secret))).kind, 'temporary');
    const saved = await store.countRetries();
    assert.ok(saved < nodes.length, `the full database held ${saved} of ${nodes.length} retries`);
    assert.ok(warnings.some((line) => /cannot save a retry/.test(line) && /full/i.test(line)), warnings.join('\n'));
    assert.equal(store.health().state, 'degraded');
    assert.match(store.health().detail ?? '', /full/i);
    const refused = await new Registrations(store, apps, () => now).register({ app: 'apns', deviceId: 'one-more', token: `one-more-${'x'.repeat(3000)}` });
    assert.deepEqual(refused.ok ? 'registered' : refused.failure.code, 'unavailable');

    provider.outcomes = nodes.map(() => ({ kind: 'delivered' }));
    now += 2000;
    await dispatcher.runDueRetries();
    const pushedTo = new Set(provider.calls.slice(nodes.length).map((call) => call.target.node));
    assert.equal(pushedTo.size, nodes.length, 'every publish\'s retry went out, saved or not');
    assert.equal(await store.countRetries(), 0);
    for (const { node } of nodes) assert.ok(await store.getByNode(node), `registration ${node} stays`);
    // The delivered retries freed their rows: the next write succeeds and health is ok again, without a restart.
    store.flush();
    assert.equal(store.health().state, 'ok');
    provider.outcomes = [UNAVAILABLE];
    await dispatcher.dispatch(publish(nodes[0].node, nodes[0].secret));
    assert.equal(await store.countRetries(), 1, 'retries are saved again');
    await store.close();
  });
});
