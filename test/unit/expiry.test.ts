/**
 * The expiry sweep on its own (README "registration.expire_days"): batches, the background timer,
 * and 0 meaning never. The HTTP-level scenario is in test/integration/limits.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExpirySweeper } from '../../src/core/expiry.ts';
import { Registrations } from '../../src/core/registrations.ts';
import { silentLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { directoryOf, scriptedProvider } from '../support/fakes.ts';

const DAY = 24 * 3600 * 1000;
const NOW = 1_800_000_000_000;

/** `stale` registrations last renewed three days ago and `fresh` ones renewed now. */
async function storeWith(stale: number, fresh: number): Promise<{ store: SqliteStore; staleNodes: string[]; freshNodes: string[] }> {
  const store = new SqliteStore(':memory:');
  const registrations = new Registrations(store, directoryOf({ apns: scriptedProvider() }), () => NOW);
  const make = async (name: string) => {
    const result = await registrations.register({ app: 'apns', deviceId: name, token: `tok-${name}` });
    assert.ok(result.ok);
    return result.registration.node;
  };
  const staleNodes: string[] = [];
  for (let i = 0; i < stale; i += 1) {
    const node = await make(`stale-${i}`);
    await store.renew(node, NOW - 3 * DAY);
    staleNodes.push(node);
  }
  const freshNodes: string[] = [];
  for (let i = 0; i < fresh; i += 1) freshNodes.push(await make(`fresh-${i}`));
  return { store, staleNodes, freshNodes };
}

test('a sweep removes every expired registration in batches of batchSize and keeps the fresh ones', async () => {
  const { store, staleNodes, freshNodes } = await storeWith(7, 2);
  const batches: number[] = [];
  const removeExpired = store.removeExpired.bind(store);
  store.removeExpired = async (before, limit) => {
    const removed = await removeExpired(before, limit);
    batches.push(removed.length);
    return removed;
  };
  let reported = 0;
  const sweeper = new ExpirySweeper(store, silentLogger, { expireDays: 1, batchSize: 3, now: () => NOW, onRemoved: (n) => { reported += n; } });
  try {
    assert.equal(await sweeper.sweep(), 7);
    assert.deepEqual(batches, [3, 3, 1], 'small batches, never all at once');
    assert.equal(reported, 7);
    for (const node of staleNodes) assert.equal(await store.getByNode(node), undefined);
    for (const node of freshNodes) assert.ok(await store.getByNode(node));
  } finally {
    await store.close();
  }
});

test('expire_days = 0 never removes anything, neither in the background nor swept by hand', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { store, staleNodes } = await storeWith(2, 0);
  const sweeper = new ExpirySweeper(store, silentLogger, { expireDays: 0, now: () => NOW + 10_000 * DAY });
  try {
    sweeper.start();
    t.mock.timers.tick(10 * 3600_000);
    assert.equal(await sweeper.sweep(), 0);
    for (const node of staleNodes) assert.ok(await store.getByNode(node));
  } finally {
    await sweeper.stop();
    t.mock.timers.reset();
    await store.close();
  }
});

test('once started, the sweep runs in the background and again every interval', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { store } = await storeWith(1, 1);
  let now = NOW;
  const sweeps: number[] = [];
  const sweeper = new ExpirySweeper(store, silentLogger, { expireDays: 1, intervalMs: 60_000, now: () => now, onRemoved: (n) => sweeps.push(n) });
  const settle = async (what: string, done: () => boolean) => {
    for (let i = 0; i < 1000 && !done(); i += 1) await new Promise((resolve) => setImmediate(resolve));
    assert.ok(done(), what);
  };
  try {
    sweeper.start();
    assert.equal(await store.count(), 2, 'nothing removed before the first sweep is due');
    t.mock.timers.tick(10_000);
    await settle('the first background sweep removed the stale registration', () => sweeps.length === 1);
    assert.equal(await store.count(), 1);
    // Two days on, the one that was fresh is stale too: the next interval's sweep removes it.
    now += 2 * DAY;
    t.mock.timers.tick(60_000);
    await settle('the next sweep removed the now stale one', () => sweeps.length === 2);
    assert.equal(await store.count(), 0);
  } finally {
    await sweeper.stop();
    t.mock.timers.reset();
    await store.close();
  }
});
