/**
 * The store contract: what every Store implementation promises, run against each of them
 * (test/unit/sqlite-store.test.ts, test/integration/postgres-store.test.ts). `open` returns a new,
 * empty store; `reopen`, when given, opens the same data again after a close (for durability).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NewRetry, Registration, Store } from '../../src/store/types.ts';
import type { HolderState } from '../../src/store/lease-holder.ts';
import type { Urgency } from '../../src/providers/types.ts';

/** A `pending_retries` row as versions before issue #11 wrote it: the urgency, no request or notification. */
export interface OldRetryRow {
  node: string;
  dueAt: number;
  attempt: number;
  urgency: Urgency;
  reason: string;
}

export interface ContractOptions {
  /** Opens the data of a closed store again. */
  reopen?: (closed: Store) => Promise<Store>;
  /** Writes an old-style retry row into the store's database directly (an existing database may hold some). */
  writeOldRetry?: (store: Store, row: OldRetryRow) => Promise<void>;
  /** Passed to every test (e.g. skip when the backend is missing and that is allowed). */
  skip?: string | false;
  /** Opens a second store on the same data whose leases name `leaseHolder`, judging holders with `holderState`. */
  openAs: (open: Store, lease: LeaseIdentity) => Promise<Store>;
}

export interface LeaseIdentity {
  leaseHolder: string;
  holderState: (holder: string) => HolderState;
}

export function registration(overrides: Partial<Registration> & { node: string }): Registration {
  return {
    secret: 's'.repeat(64),
    app: 'app',
    token: `token-${overrides.node}`,
    deviceKey: `user@example.org|device-${overrides.node}`,
    boundDomain: null,
    registeredAt: 1_700_000_000_000,
    renewedAt: 1_700_000_000_000,
    lastPushAt: null,
    lastErrorAt: null,
    lastError: null,
    pushCount: 0,
    push2Key: null,
    ...overrides,
  };
}

function stored(key: string, dueAt: number, overrides: Partial<NewRetry> = {}): NewRetry {
  return {
    key,
    dialect: 'xep0357',
    app: 'app',
    request: { dialect: 'xep0357', node: key, secret: 's'.repeat(64), from: 'example.org', options: { priority: 'high' } },
    notification: { summary: { messageCount: 1 }, urgency: 'normal', firstAttemptAt: 900 },
    firstAttemptAt: 900,
    dueAt,
    attempt: 1,
    reason: 'provider said 503',
    ...overrides,
  };
}

async function settledCount(results: Array<Promise<unknown>>): Promise<{ fulfilled: number; rejected: number }> {
  const settled = await Promise.allSettled(results);
  return {
    fulfilled: settled.filter((s) => s.status === 'fulfilled').length,
    rejected: settled.filter((s) => s.status === 'rejected').length,
  };
}

export function storeContract(name: string, open: () => Promise<Store>, options: ContractOptions): void {
  const it = (title: string, body: (store: Store) => Promise<void>) => {
    test(`${name}: ${title}`, { skip: options.skip ?? false }, async () => {
      const store = await open();
      try {
        await body(store);
      } finally {
        await store.close();
      }
    });
  };

  // Registrations (DESIGN §5)

  it('a stored registration is found by its node and by its app and device key, every field intact', async (store) => {
    const stored = registration({ node: 'n1', boundDomain: 'example.org', lastPushAt: 5, lastErrorAt: 6, lastError: 'x', pushCount: 3 });
    await store.insert(stored);
    assert.deepEqual(await store.getByNode('n1'), stored);
    assert.deepEqual(await store.getByDevice('app', stored.deviceKey), stored);
  });

  it('an unknown node or device is not found', async (store) => {
    await store.insert(registration({ node: 'n1' }));
    assert.equal(await store.getByNode('n2'), undefined);
    assert.equal(await store.getByDevice('app', 'nobody|device'), undefined);
    assert.equal(await store.getByDevice('other-app', registration({ node: 'n1' }).deviceKey), undefined);
  });

  it('a second registration for the same app and device key is refused and the first is kept', async (store) => {
    const first = registration({ node: 'n1', deviceKey: 'u@x|d' });
    await store.insert(first);
    await assert.rejects(store.insert(registration({ node: 'n2', deviceKey: 'u@x|d', token: 'other' })));
    assert.deepEqual(await store.getByDevice('app', 'u@x|d'), first);
    assert.equal(await store.getByNode('n2'), undefined);
    assert.equal(await store.count(), 1);
  });

  it('the same device key in two apps is two registrations', async (store) => {
    await store.insert(registration({ node: 'n1', app: 'a', deviceKey: 'u@x|d' }));
    await store.insert(registration({ node: 'n2', app: 'b', deviceKey: 'u@x|d' }));
    assert.equal((await store.getByDevice('a', 'u@x|d'))?.node, 'n1');
    assert.equal((await store.getByDevice('b', 'u@x|d'))?.node, 'n2');
  });

  it('a node that is taken is refused and its registration is untouched', async (store) => {
    const first = registration({ node: 'n1' });
    await store.insert(first);
    await assert.rejects(store.insert(registration({ node: 'n1', deviceKey: 'other|device', secret: 't'.repeat(64) })));
    assert.deepEqual(await store.getByNode('n1'), first);
  });

  it('insertMany stores every registration of a batch, every field intact, more than one chunk included', async (store) => {
    const batch = Array.from({ length: 2500 }, (_, i) => registration({
      node: `n${i}`, boundDomain: i % 2 ? 'example.org' : null, lastPushAt: i, lastErrorAt: i % 3 ? null : i, lastError: i % 3 ? null : `e'${i}"`,
      pushCount: i, push2Key: i % 5 ? null : `key-${i}`,
    }));
    await store.insertMany(batch);
    await store.insertMany([]);
    assert.equal(await store.count(), 2500);
    const read = await Promise.all(batch.map((r) => store.getByNode(r.node)));
    assert.deepEqual(read, batch);
  });

  it('insertMany is all or nothing: one refused registration (taken node or device) leaves the batch unstored', async (store) => {
    await store.insert(registration({ node: 'taken', deviceKey: 'u@x|taken' }));
    for (const refused of [registration({ node: 'taken', deviceKey: 'u@x|other' }), registration({ node: 'fresh', deviceKey: 'u@x|taken' })]) {
      await assert.rejects(store.insertMany([registration({ node: 'a1' }), refused, registration({ node: 'a2' })]));
      assert.equal(await store.getByNode('a1'), undefined);
      assert.equal(await store.getByNode('a2'), undefined);
      assert.equal(await store.count(), 1);
    }
  });

  it('insertMany replacing puts each registration in place of what its node holds, every field the new one\'s, and keeps the node\'s retry', async (store) => {
    await store.insert(registration({ node: 'n1', deviceKey: 'u@x|d', pushCount: 3 }));
    await store.saveRetry(stored('n1', 5000));
    const newer = registration({ node: 'n1', deviceKey: 'u@x|d', token: 'new-token', renewedAt: 1_700_000_009_000, lastPushAt: 1_700_000_008_000, pushCount: 7, push2Key: 'key-a' });
    const fresh = registration({ node: 'n2' });
    await store.insertMany([newer, fresh], true);
    assert.deepEqual(await store.list({ limit: 10 }), [newer, fresh]);
    assert.equal(await store.countRetries(), 1);
  });

  it('insertMany replacing is all or nothing: a device another node holds leaves every replaced registration as it was', async (store) => {
    const old = registration({ node: 'n1', deviceKey: 'u@x|d' });
    await store.insert(old);
    await store.insert(registration({ node: 'other', deviceKey: 'u@x|taken' }));
    await assert.rejects(store.insertMany([{ ...old, renewedAt: old.renewedAt + 1 }, registration({ node: 'n2', deviceKey: 'u@x|taken' })], true));
    assert.deepEqual(await store.getByNode('n1'), old);
    assert.equal(await store.count(), 2);
  });

  it('an insert that replaces a node removes it in the same step', async (store) => {
    await store.insert(registration({ node: 'old', deviceKey: 'u@x|d', token: 'old-token' }));
    await store.insert(registration({ node: 'new', deviceKey: 'u@x|d', token: 'new-token' }), 'old');
    assert.equal(await store.getByNode('old'), undefined);
    assert.equal((await store.getByDevice('app', 'u@x|d'))?.node, 'new');
    assert.equal(await store.count(), 1);
  });

  it('a replacing insert that fails leaves the replaced registration in place', async (store) => {
    await store.insert(registration({ node: 'old', deviceKey: 'u@x|d' }));
    await store.insert(registration({ node: 'taken', deviceKey: 'other|d' }));
    await assert.rejects(store.insert(registration({ node: 'taken', deviceKey: 'u@x|d', token: 'new' }), 'old'));
    assert.equal((await store.getByNode('old'))?.deviceKey, 'u@x|d');
    assert.equal((await store.getByNode('taken'))?.deviceKey, 'other|d');
    assert.equal(await store.count(), 2);
  });

  it('two inserts for the same device key at once: exactly one wins and it is the one stored', async (store) => {
    const a = registration({ node: 'race-a', deviceKey: 'u@x|d', token: 'ta' });
    const b = registration({ node: 'race-b', deviceKey: 'u@x|d', token: 'tb' });
    const outcome = await settledCount([store.insert(a), store.insert(b)]);
    assert.deepEqual(outcome, { fulfilled: 1, rejected: 1 });
    const winner = await store.getByDevice('app', 'u@x|d');
    assert.ok(winner?.node === 'race-a' || winner?.node === 'race-b');
    assert.equal(await store.count(), 1);
  });

  it('two replacements of the same registration at once leave exactly one new registration and no old one', async (store) => {
    await store.insert(registration({ node: 'old', deviceKey: 'u@x|d' }));
    const outcome = await settledCount([
      store.insert(registration({ node: 'new-a', deviceKey: 'u@x|d', token: 'ta' }), 'old'),
      store.insert(registration({ node: 'new-b', deviceKey: 'u@x|d', token: 'tb' }), 'old'),
    ]);
    assert.deepEqual(outcome, { fulfilled: 1, rejected: 1 });
    assert.equal(await store.getByNode('old'), undefined);
    const winner = await store.getByDevice('app', 'u@x|d');
    assert.ok(winner?.node === 'new-a' || winner?.node === 'new-b');
    assert.equal(await store.count(), 1);
  });

  it('renewing changes only the renewal time', async (store) => {
    const stored = registration({ node: 'n1' });
    await store.insert(stored);
    await store.renew('n1', stored.renewedAt + 1000);
    assert.deepEqual(await store.getByNode('n1'), { ...stored, renewedAt: stored.renewedAt + 1000 });
  });

  it('removing answers whether there was something to remove', async (store) => {
    await store.insert(registration({ node: 'n1' }));
    assert.equal(await store.remove('n1'), true);
    assert.equal(await store.remove('n1'), false);
    assert.equal(await store.getByNode('n1'), undefined);
    assert.equal(await store.count(), 0);
  });

  it('a dead token removes a registration not renewed since, but not one renewed after', async (store) => {
    await store.insert(registration({ node: 'stale', renewedAt: 1000 }));
    await store.insert(registration({ node: 'renewed', renewedAt: 1000 }));
    await store.renew('renewed', 3000);
    assert.equal(await store.removeIfNotRenewedSince('stale', 2000), true);
    assert.equal(await store.removeIfNotRenewedSince('renewed', 2000), false);
    assert.equal(await store.removeIfNotRenewedSince('missing', 2000), false);
    assert.equal(await store.getByNode('stale'), undefined);
    assert.equal((await store.getByNode('renewed'))?.renewedAt, 3000);
  });

  it('a dead token reported for the very time of the last renewal removes the registration', async (store) => {
    await store.insert(registration({ node: 'n1', renewedAt: 2000 }));
    assert.equal(await store.removeIfNotRenewedSince('n1', 2000), true);
  });

  it('the listing pages through every registration in node order', async (store) => {
    const nodes = Array.from({ length: 25 }, (_, i) => `node-${String(i).padStart(3, '0')}`);
    for (const node of [...nodes].reverse()) await store.insert(registration({ node }));
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await store.list({ after, limit: 10 });
      seen.push(...page.map((r) => r.node));
      if (page.length < 10) break;
      after = page[page.length - 1].node;
    }
    assert.deepEqual(seen, nodes);
    assert.equal(await store.count(), 25);
  });

  // Bookkeeping

  it('deliveries and failures show in reads at once, before they are written', async (store) => {
    await store.insert(registration({ node: 'n1' }));
    store.recordDelivery('n1', 5000);
    store.recordDelivery('n1', 5001);
    store.recordFailure('n1', 6000, 'provider said no');
    const read = await store.getByNode('n1');
    assert.equal(read?.pushCount, 2);
    assert.equal(read?.lastPushAt, 5001);
    assert.equal(read?.lastErrorAt, 6000);
    assert.equal(read?.lastError, 'provider said no');
  });

  it('bookkeeping for more nodes than one batch is counted exactly in the listing', async (store) => {
    const count = 2600;
    for (let i = 0; i < count; i++) await store.insert(registration({ node: `n${String(i).padStart(5, '0')}` }));
    for (let i = 0; i < count; i++) store.recordDelivery(`n${String(i).padStart(5, '0')}`, 1000 + i);
    for (let i = 0; i < count; i += 2) store.recordDelivery(`n${String(i).padStart(5, '0')}`, 9000 + i);
    const listed = await store.list({ limit: count + 1 });
    assert.equal(listed.reduce((sum, r) => sum + r.pushCount, 0), count + count / 2);
    assert.deepEqual({ pushCount: listed[4].pushCount, lastPushAt: listed[4].lastPushAt }, { pushCount: 2, lastPushAt: 9004 });
    assert.deepEqual({ pushCount: listed[5].pushCount, lastPushAt: listed[5].lastPushAt }, { pushCount: 1, lastPushAt: 1005 });
  });

  it('a failure after a delivery keeps the delivery and records the error', async (store) => {
    await store.insert(registration({ node: 'n1' }));
    store.recordDelivery('n1', 1000);
    await store.list({ limit: 1 });
    store.recordFailure('n1', 2000, 'throttled');
    await store.list({ limit: 1 });
    const read = await store.getByNode('n1');
    assert.deepEqual({ pushCount: read?.pushCount, lastPushAt: read?.lastPushAt, lastErrorAt: read?.lastErrorAt, lastError: read?.lastError },
      { pushCount: 1, lastPushAt: 1000, lastErrorAt: 2000, lastError: 'throttled' });
  });

  it('bookkeeping for an unknown or removed node is dropped without an error', async (store) => {
    await store.insert(registration({ node: 'n1' }));
    store.recordDelivery('ghost', 1000);
    store.recordDelivery('n1', 1000);
    await store.remove('n1');
    await store.insert(registration({ node: 'n1', deviceKey: 'again|d' }));
    const listed = await store.list({ limit: 10 });
    assert.deepEqual(listed.map((r) => [r.node, r.pushCount]), [['n1', 0]]);
  });

  // Lookups of one event-loop turn share one round trip (src/store/lookup-batch.ts)

  it('lookups issued in one turn each get their own registration, unknown nodes and repeats included', async (store) => {
    // Nodes an array literal or a JSON document would have to escape, and one that reads like NULL.
    const odd = ['quote"back\\slash', 'comma,{brace}', 'NULL', 'with space', 'ünï-cödé-✓'];
    const known = [...Array.from({ length: 40 }, (_, i) => `n${i}`), ...odd];
    for (const node of known) await store.insert(registration({ node }));
    const asked: string[] = [];
    // More than one query's worth (a store may split a batch), every node several times, unknown ones between.
    for (let i = 0; i < 1200; i++) asked.push(i % 7 === 3 ? `unknown-${i % 5}` : known[(i * 13) % known.length]);
    const answers = await Promise.all(asked.map((node) => store.getByNode(node)));
    for (const [index, node] of asked.entries()) {
      if (node.startsWith('unknown-')) assert.equal(answers[index], undefined, `${node} is not registered`);
      else assert.deepEqual(answers[index], registration({ node }), `lookup ${index} of ${node}`);
    }
    const [one, two] = await Promise.all([store.getByNode('n1'), store.getByNode('n1')]);
    assert.notEqual(one, two, 'two lookups of one node in one turn get two objects');
    one!.pushCount = 99;
    assert.equal(two!.pushCount, 0);
  });

  it('a lookup in the same turn as an insert sees the insert, and every other write finished before it', async (store) => {
    await store.insert(registration({ node: 'kept' }));
    await store.insert(registration({ node: 'gone' }));
    // Started before the writes: the later lookups may be answered in the same batch as this one.
    const earlier = store.getByNode('kept');
    await store.insert(registration({ node: 'added' }));
    await store.renew('kept', 1_700_000_009_000);
    await store.remove('gone');
    const [first, added, kept, gone] = await Promise.all([earlier, store.getByNode('added'), store.getByNode('kept'), store.getByNode('gone')]);
    assert.equal(first?.node, 'kept');
    assert.deepEqual(added, registration({ node: 'added' }));
    assert.equal(kept?.renewedAt, 1_700_000_009_000);
    assert.equal(gone, undefined);
  });

  it('unflushed bookkeeping is merged into batched lookups, for each lookup of a node', async (store) => {
    for (const node of ['n1', 'n2', 'n3']) await store.insert(registration({ node }));
    store.recordDelivery('n1', 5000);
    store.recordDelivery('n1', 5001);
    store.recordFailure('n2', 6000, 'provider said no');
    const [n1, n2, n3, again] = await Promise.all(['n1', 'n2', 'n3', 'n1'].map((node) => store.getByNode(node)));
    for (const read of [n1, again]) assert.deepEqual({ pushCount: read?.pushCount, lastPushAt: read?.lastPushAt }, { pushCount: 2, lastPushAt: 5001 });
    assert.deepEqual({ lastErrorAt: n2?.lastErrorAt, lastError: n2?.lastError, pushCount: n2?.pushCount }, { lastErrorAt: 6000, lastError: 'provider said no', pushCount: 0 });
    assert.equal(n3?.pushCount, 0);
  });

  it('a lookup made just before a close is answered; after the close every lookup of a turn fails like a lone one', async (store) => {
    await store.insert(registration({ node: 'n1' }));
    const beforeClose = store.getByNode('n1');
    await store.close();
    assert.equal((await beforeClose)?.node, 'n1');
    const lone = await Promise.allSettled([store.getByNode('n1')]);
    const batch = await Promise.allSettled(['n1', 'n2', 'n1'].map((node) => store.getByNode(node)));
    assert.equal(lone[0].status, 'rejected');
    const loneError = (lone[0] as PromiseRejectedResult).reason as Error;
    for (const settled of batch) {
      assert.equal(settled.status, 'rejected');
      assert.equal(((settled as PromiseRejectedResult).reason as Error).message, loneError.message);
    }
  });

  if (options.reopen) {
    const reopen = options.reopen;
    test(`${name}: closing the store writes the bookkeeping still pending`, { skip: options.skip ?? false }, async () => {
      const store = await open();
      for (let i = 0; i < 300; i++) await store.insert(registration({ node: `n${i}` }));
      for (let i = 0; i < 300; i++) store.recordDelivery(`n${i}`, 7000);
      store.recordFailure('n7', 7100, 'gone wrong');
      await store.close();
      const reopened = await reopen(store);
      try {
        const listed = await reopened.list({ limit: 1000 });
        assert.equal(listed.length, 300);
        assert.ok(listed.every((r) => r.pushCount === 1 && r.lastPushAt === 7000));
        assert.equal((await reopened.getByNode('n7'))?.lastError, 'gone wrong');
      } finally {
        await reopened.close();
      }
    });
  }

  // The leased retry queue (issue #11)

  it('a saved retry is leased with everything it was saved with, revision 1, and is not leased again before the lease ends', async (store) => {
    const saved = stored('n1', 1000);
    await store.saveRetry(saved);
    assert.deepEqual(await store.leaseDueRetries(999, 10, 60_000), []);
    assert.deepEqual(await store.leaseDueRetries(1000, 10, 60_000), [{ ...saved, revision: 1, leasedUntil: 60_000 }]);
    assert.deepEqual(await store.leaseDueRetries(59_999, 10, 70_000), []);
    const again = await store.leaseDueRetries(60_000, 10, 70_000);
    assert.deepEqual(again.map((r) => [r.key, r.dueAt, r.revision]), [['n1', 60_000, 1]]);
    assert.equal(await store.countRetries(), 1);
  });

  // Lease holders (lease-holder.ts): a restart takes back what a process that is gone had leased.
  const holders: Record<string, HolderState> = { 'holder-gone': 'gone', 'holder-running': 'running', 'holder-unknown': 'unknown' };
  const as = (store: Store, leaseHolder: string) => options.openAs(store, { leaseHolder, holderState: (holder) => holders[holder] ?? 'running' });
  const withStores = async (stores: Store[], body: () => Promise<void>) => {
    try {
      await body();
    } finally {
      for (const opened of stores) await opened.close();
    }
  };

  it('a retry leased by a holder that is gone is due again at once, with its revision; those of a running or unknown holder stay leased', async (store) => {
    await store.saveRetry(stored('gone', 1000));
    await store.saveRetry(stored('running', 1001));
    await store.saveRetry(stored('unknown', 1002));
    const [gone, running, unknown, me] = await Promise.all(['holder-gone', 'holder-running', 'holder-unknown', 'holder-me'].map((holder) => as(store, holder)));
    await withStores([gone, running, unknown, me], async () => {
      assert.deepEqual((await gone.leaseDueRetries(5000, 1, 100_000)).map((r) => r.key), ['gone']);
      assert.deepEqual((await running.leaseDueRetries(5000, 1, 100_000)).map((r) => r.key), ['running']);
      assert.deepEqual((await unknown.leaseDueRetries(5000, 1, 100_000)).map((r) => r.key), ['unknown']);
      assert.equal(await me.releaseLeasesOfGoneHolders(6000), 1);
      const again = await me.leaseDueRetries(6000, 10, 200_000);
      assert.deepEqual(again.map((r) => [r.key, r.dueAt, r.revision, r.leasedUntil]), [['gone', 6000, 1, 200_000]]);
      assert.equal(await me.releaseLeasesOfGoneHolders(7000), 0, 'the new lease names its own holder');
      assert.deepEqual(await me.leaseDueRetries(99_999, 10, 300_000), [], 'the others wait out their lease');
    });
  });

  it('a retry rescheduled or merged into after its lease names no holder, so taking back leases leaves it where it is due', async (store) => {
    await store.saveRetry(stored('rescheduled', 1000));
    await store.saveRetry(stored('merged', 1001));
    const [gone, me] = await Promise.all([as(store, 'holder-gone'), as(store, 'holder-me')]);
    await withStores([gone, me], async () => {
      const leased = await gone.leaseDueRetries(5000, 10, 100_000);
      const rescheduled = leased.find((r) => r.key === 'rescheduled')!;
      await gone.rescheduleRetry('rescheduled', rescheduled.revision, rescheduled.leasedUntil, 50_000, 2, 'provider said 503 again');
      await gone.saveRetry(stored('merged', 80_000));
      assert.equal(await me.releaseLeasesOfGoneHolders(6000), 0);
      assert.deepEqual(await me.leaseDueRetries(49_999, 10, 200_000), []);
      assert.deepEqual((await me.leaseDueRetries(50_000, 10, 200_000)).map((r) => r.key), ['rescheduled']);
      assert.deepEqual((await me.leaseDueRetries(100_000, 10, 300_000)).map((r) => [r.key, r.revision]), [['merged', 2]]);
    });
  });

  it('saving a key again merges: the newer push, the earlier due time, the larger attempt, high urgency wins, the revision moves', async (store) => {
    await store.saveRetry(stored('n1', 5000, { attempt: 3, notification: { summary: {}, urgency: 'high' } }));
    const newer = stored('n1', 2000, { attempt: 1, reason: 'throttled', app: 'other', notification: { summary: { messageCount: 7, lastMessageSender: 'bob@example.org' }, urgency: 'normal' },
      request: { dialect: 'xep0357', node: 'n1', secret: null, from: null, options: {} }, firstAttemptAt: 1500 });
    await store.saveRetry(newer);
    const [leased] = await store.leaseDueRetries(9000, 10, 20_000);
    assert.deepEqual(leased, { ...newer, dueAt: 2000, attempt: 3, notification: { ...newer.notification, urgency: 'high' }, revision: 2, leasedUntil: 20_000 });
    assert.equal(await store.countRetries(), 1);
  });

  it('finishing a lease removes the row only when no newer push merged into it meanwhile', async (store) => {
    await store.saveRetry(stored('n1', 1000));
    await store.saveRetry(stored('n2', 1000));
    const leased = await store.leaseDueRetries(1000, 10, 50_000);
    await store.saveRetry(stored('n1', 3000, { reason: 'newer push' }));
    for (const retry of leased) await store.finishRetry(retry.key, retry.revision, retry.leasedUntil);
    const left = await store.leaseDueRetries(100_000, 10, 200_000);
    assert.deepEqual(left.map((r) => [r.key, r.reason, r.revision]), [['n1', 'newer push', 2]]);
    await store.finishRetry('n1', 2, 200_000);
    assert.equal(await store.countRetries(), 0);
  });

  it('rescheduling sets due time, attempt and reason of a leased row, and is a no-op for a gone one', async (store) => {
    await store.saveRetry(stored('n1', 1000));
    const [leased] = await store.leaseDueRetries(1000, 10, 50_000);
    await store.rescheduleRetry('n1', leased.revision, leased.leasedUntil, 4000, 2, 'still 503');
    await store.rescheduleRetry('gone', 1, 50_000, 4000, 2, 'nothing');
    assert.deepEqual(await store.leaseDueRetries(3999, 10, 90_000), []);
    const [again] = await store.leaseDueRetries(4000, 10, 90_000);
    assert.deepEqual({ dueAt: again.dueAt, attempt: again.attempt, reason: again.reason, revision: again.revision },
      { dueAt: 4000, attempt: 2, reason: 'still 503', revision: leased.revision });
    assert.equal(await store.countRetries(), 1);
  });

  it('a fractional due time (a jittered backoff) is accepted and leased at that time to the millisecond', async (store) => {
    await store.saveRetry(stored('n1', 1000.4, { firstAttemptAt: 900.6 }));
    const [first] = await store.leaseDueRetries(1001, 10, 1500.3);
    await store.rescheduleRetry('n1', first.revision, first.leasedUntil, 2000.7, 2, 'jittered');
    assert.deepEqual(await store.leaseDueRetries(1999, 10, 50_000.2), []);
    const [leased] = await store.leaseDueRetries(2001, 10, 50_000.2);
    assert.ok(Math.abs(leased.dueAt - 2000.7) < 1 && Math.abs(leased.firstAttemptAt - 900.6) < 1, `${leased.dueAt} ${leased.firstAttemptAt}`);
    // A fractional lease end names its lease as well as a whole one.
    await store.finishRetry(leased.key, leased.revision, leased.leasedUntil);
    assert.equal(await store.countRetries(), 0);
  });

  // Issue #11, the ABA on revision: revisions restart at 1 for a key saved again after its row
  // went, so a stale lease is told from the row's current one by the lease's end as well.

  it('a stale lease finishing late leaves a new row of the key alone, though it is at the same revision', async (store) => {
    await store.saveRetry(stored('k', 1000, { reason: 'first push' }));
    // Worker A leases K (revision 1) and stalls past its lease.
    const [a] = await store.leaseDueRetries(1000, 10, 26_000);
    assert.deepEqual([a.key, a.revision, a.leasedUntil], ['k', 1, 26_000]);
    // Worker B leases K again when A's lease has ended (still revision 1), delivers it, and finishes.
    const [b] = await store.leaseDueRetries(26_000, 10, 51_000);
    assert.deepEqual([b.key, b.revision, b.leasedUntil], ['k', 1, 51_000]);
    await store.finishRetry(b.key, b.revision, b.leasedUntil);
    assert.equal(await store.countRetries(), 0);
    // A new push for K fails: a new row, revision 1 again.
    await store.saveRetry(stored('k', 30_000, { reason: 'newer push', attempt: 1 }));
    // A finally finishes: the new row stays, and is leased (and finished) as usual.
    await store.finishRetry(a.key, a.revision, a.leasedUntil);
    assert.equal(await store.countRetries(), 1);
    const [again] = await store.leaseDueRetries(30_000, 10, 55_000);
    assert.deepEqual([again.key, again.reason, again.revision, again.dueAt, again.attempt], ['k', 'newer push', 1, 30_000, 1]);
    await store.finishRetry(again.key, again.revision, again.leasedUntil);
    assert.equal(await store.countRetries(), 0);
  });

  it('a stale lease can neither reschedule nor finish a row another worker leased again; that worker can', async (store) => {
    await store.saveRetry(stored('k', 1000));
    const [a] = await store.leaseDueRetries(1000, 10, 26_000);
    const [b] = await store.leaseDueRetries(26_000, 10, 51_000);
    assert.equal(b.revision, a.revision);
    await store.rescheduleRetry(a.key, a.revision, a.leasedUntil, 27_000, 5, 'stale reschedule');
    await store.finishRetry(a.key, a.revision, a.leasedUntil);
    // Still B's: not due before B's lease ends, not moved by A.
    assert.deepEqual(await store.leaseDueRetries(50_999, 10, 80_000), []);
    assert.equal(await store.countRetries(), 1);
    await store.rescheduleRetry(b.key, b.revision, b.leasedUntil, 60_000, 2, 'still 503');
    const [c] = await store.leaseDueRetries(60_000, 10, 85_000);
    assert.deepEqual([c.dueAt, c.attempt, c.reason, c.revision], [60_000, 2, 'still 503', 1]);
    // B's lease ended with its reschedule: B can no longer finish the row C holds now.
    await store.finishRetry(b.key, b.revision, b.leasedUntil);
    assert.equal(await store.countRetries(), 1);
    await store.finishRetry(c.key, c.revision, c.leasedUntil);
    assert.equal(await store.countRetries(), 0);
  });

  it('rescheduling a lease leaves a newer push merged into the row meanwhile as it was saved', async (store) => {
    await store.saveRetry(stored('k', 1000));
    const [leased] = await store.leaseDueRetries(1000, 10, 50_000);
    await store.saveRetry(stored('k', 3000, { reason: 'newer push', attempt: 1 }));
    await store.rescheduleRetry(leased.key, leased.revision, leased.leasedUntil, 40_000, 4, 'old push 503');
    const [again] = await store.leaseDueRetries(3000, 10, 60_000);
    assert.deepEqual([again.dueAt, again.attempt, again.reason, again.revision], [3000, 1, 'newer push', 2]);
  });

  it('leases come oldest due first and at most the limit', async (store) => {
    for (const [key, due] of [['c', 3000], ['a', 1000], ['d', 9000], ['b', 2000]] as const) await store.saveRetry(stored(key, due));
    assert.deepEqual((await store.leaseDueRetries(5000, 2, 50_000)).map((r) => r.key), ['a', 'b']);
    assert.deepEqual((await store.leaseDueRetries(5000, 10, 50_000)).map((r) => r.key), ['c']);
  });

  it('leasers at once never get the same row', async (store) => {
    for (let i = 0; i < 60; i++) await store.saveRetry(stored(`n${i}`, 1000 + i));
    const batches = await Promise.all(Array.from({ length: 6 }, () => store.leaseDueRetries(5000, 15, 100_000)));
    const leased = batches.flat().map((r) => r.key);
    assert.equal(new Set(leased).size, leased.length);
    assert.equal(leased.length + (await store.leaseDueRetries(5000, 100, 100_000)).length, 60);
  });

  it('removing a registration removes the retry keyed by its node; cancelling removes any revision', async (store) => {
    await store.insert(registration({ node: 'n1' }));
    await store.insert(registration({ node: 'n2' }));
    await store.saveRetry(stored('n1', 1000));
    await store.saveRetry(stored('n2', 1000));
    await store.saveRetry(stored('n3', 1000));
    await store.saveRetry(stored('n3', 1000));
    await store.remove('n1');
    await store.removeIfNotRenewedSince('n2', Number.MAX_SAFE_INTEGER);
    await store.cancelRetry('n3');
    assert.equal(await store.countRetries(), 0);
  });

  it('a registration that replaces another node (a new token) removes the replaced node\'s retry with it', async (store) => {
    await store.insert(registration({ node: 'old', deviceKey: 'device-1' }));
    await store.saveRetry(stored('old', 1000));
    await store.insert(registration({ node: 'new', deviceKey: 'device-1' }), 'old');
    assert.equal(await store.getByNode('old'), undefined);
    assert.equal(await store.countRetries(), 0);
  });

  it('a cancelled retry is not leased, cancelling an unknown key is harmless, and the key may be saved again', async (store) => {
    await store.saveRetry(stored('n1', 1000));
    await store.cancelRetry('n1');
    await store.cancelRetry('never-saved');
    assert.deepEqual(await store.leaseDueRetries(5000, 10, 50_000), []);
    await store.saveRetry(stored('n1', 2000, { reason: 'again' }));
    assert.deepEqual((await store.leaseDueRetries(5000, 10, 50_000)).map((r) => [r.key, r.dueAt, r.reason]), [['n1', 2000, 'again']]);
  });

  it('saves of one key at once leave one row with every save merged into it', async (store) => {
    await Promise.all(Array.from({ length: 5 }, (_, i) => store.saveRetry(stored('n1', 1004 - i, { attempt: i + 1 }))));
    assert.equal(await store.countRetries(), 1);
    const leased = await store.leaseDueRetries(9000, 10, 50_000);
    assert.deepEqual(leased.map((r) => [r.key, r.dueAt, r.attempt, r.revision]), [['n1', 1000, 5, 5]]);
  });

  if (options.writeOldRetry) {
    const writeOldRetry = options.writeOldRetry;
    it('a retry row written before issue #11 is leased with the registration\'s secret, domain and app', async (store) => {
      await store.insert(registration({ node: 'n1', app: 'ios', boundDomain: 'example.org' }));
      await writeOldRetry(store, { node: 'n1', dueAt: 1000, attempt: 2, urgency: 'high', reason: 'provider said 503' });
      const [leased] = await store.leaseDueRetries(1000, 10, 50_000);
      assert.deepEqual({ key: leased.key, app: leased.app, request: leased.request, urgency: leased.notification.urgency, attempt: leased.attempt },
        { key: 'n1', app: 'ios', request: { dialect: 'xep0357', node: 'n1', secret: 's'.repeat(64), from: 'example.org', options: {} }, urgency: 'high', attempt: 2 });
      await store.finishRetry(leased.key, leased.revision, leased.leasedUntil);
      assert.equal(await store.countRetries(), 0);
    });
  }

  it('a retry carrying a Push 2.0 ciphertext gets the same bytes back when leased', async (store) => {
    const ciphertext = Buffer.from([0, 1, 2, 250, 255, 128, 64]);
    const push2 = { ciphertext, priority: 'high' as const, voip: false, jwt: 'a.b.c', jwtKey: 'key', audience: 'https://push.example' };
    await store.saveRetry(stored('n1', 1000, { notification: { summary: {}, urgency: 'high', push2 } }));
    const [leased] = await store.leaseDueRetries(1000, 10, 50_000);
    assert.ok(Buffer.isBuffer(leased.notification.push2?.ciphertext));
    assert.deepEqual(leased.notification.push2, push2);
  });

  // Limits, expiry and operator queries (issues #10, #12) and Push 2.0 key pinning (#14)

  it('countByScope counts exactly the registrations one JID made, every app together', async (store) => {
    await store.insert(registration({ node: 'n1', deviceKey: 'romeo@m.example|d1' }));
    await store.insert(registration({ node: 'n2', deviceKey: 'romeo@m.example|d2|muc=room@c.example', app: 'other' }));
    await store.insert(registration({ node: 'n3', deviceKey: 'romeo@m.example.org|d1' }));
    await store.insert(registration({ node: 'n4', deviceKey: '|jid=romeo@m.example|d1' }));
    await store.insert(registration({ node: 'n5', deviceKey: 'romeo@m.exampl|d1' }));
    await store.insert(registration({ node: 'n6', deviceKey: 'Romeo@m.example|d3' }));
    assert.equal(await store.countByScope('romeo@m.example'), 2);
    assert.equal(await store.countByScope('juliet@c.example'), 0);
  });

  it('removeExpired removes at most the batch, least recently active first, with their retries; a recent push keeps one', async (store) => {
    for (let i = 0; i < 5; i += 1) await store.insert(registration({ node: `old-${i}`, renewedAt: 100 + i }));
    await store.insert(registration({ node: 'fresh', renewedAt: 10_000 }));
    await store.insert(registration({ node: 'pushed', renewedAt: 100 }));
    store.recordDelivery('pushed', 9_000);
    await store.saveRetry(stored('old-0', 1));
    assert.deepEqual(await store.removeExpired(1000, 3), ['old-0', 'old-1', 'old-2']);
    assert.deepEqual(await store.removeExpired(1000, 3), ['old-3', 'old-4']);
    assert.deepEqual(await store.removeExpired(1000, 3), []);
    assert.equal(await store.countRetries(), 0);
    assert.deepEqual((await store.list({ limit: 10 })).map((r) => r.node), ['fresh', 'pushed']);
  });

  it('a Push 2.0 key is stored with the registration, pinned once, and the first key wins a race', async (store) => {
    await store.insert(registration({ node: 'given', push2Key: 'key-a' }));
    assert.equal((await store.getByNode('given'))?.push2Key, 'key-a');
    assert.equal(await store.setPush2Key('given', 'key-a'), true);
    assert.equal(await store.setPush2Key('given', 'key-b'), false);
    await store.insert(registration({ node: 'open' }));
    const answers = await Promise.all(['k1', 'k2', 'k3'].map((key) => store.setPush2Key('open', key)));
    assert.equal(answers.filter(Boolean).length, 1);
    const pinned = (await store.getByNode('open'))?.push2Key;
    assert.equal(answers[['k1', 'k2', 'k3'].indexOf(pinned!)], true);
    assert.equal(await store.setPush2Key('gone', 'k1'), false);
  });

  it('countByApp counts the registrations of every app', async (store) => {
    await store.insert(registration({ node: 'a1', app: 'ios' }));
    await store.insert(registration({ node: 'a2', app: 'ios' }));
    await store.insert(registration({ node: 'b1', app: 'android' }));
    assert.deepEqual(await store.countByApp(), new Map([['android', 1], ['ios', 2]]));
  });

  it('search filters by node prefix, token prefix, JID (case-insensitive, wildcards literal) and app, and pages with a total', async (store) => {
    await store.insert(registration({ node: 'n-alice', deviceKey: 'alice@example.org|phone', token: 'aaaa1111', app: 'ios' }));
    await store.insert(registration({ node: 'n-bob', deviceKey: 'bob@example.org|phone', token: 'bbbb2222', app: 'android' }));
    await store.insert(registration({ node: 'n-carol', deviceKey: 'carol_x@example.org|tab', token: 'aaaa3333', app: 'ios' }));
    await store.insert(registration({ node: 'm-dave', deviceKey: '|dave-device', token: 'dddd4444', app: 'android' }));
    await store.insert(registration({ node: 'h-erin', deviceKey: '|jid=erin@example.org|laptop', token: 'eeee', app: 'ios' }));
    const nodes = async (query: Omit<Parameters<Store['search']>[0], 'offset' | 'limit'>) => (await store.search({ ...query, offset: 0, limit: 10 })).registrations.map((r) => r.node);
    assert.deepEqual(await nodes({ node: 'n-' }), ['n-alice', 'n-bob', 'n-carol']);
    assert.deepEqual(await nodes({ tokenPrefix: 'aaaa' }), ['n-alice', 'n-carol']);
    assert.deepEqual(await nodes({ jid: 'Bob@Example.org' }), ['n-bob']);
    assert.deepEqual(await nodes({ jid: 'carol%' }), []);
    assert.deepEqual(await nodes({ jid: 'carol_x@example.org' }), ['n-carol']);
    assert.deepEqual(await nodes({ jid: 'carolx@example.org' }), []);
    assert.deepEqual(await nodes({ jid: 'erin@example.org' }), ['h-erin']);
    assert.deepEqual(await nodes({ app: 'android' }), ['m-dave', 'n-bob']);
    assert.deepEqual(await nodes({ app: 'ios', tokenPrefix: 'aaaa3' }), ['n-carol']);
    const first = await store.search({ offset: 0, limit: 3 });
    const second = await store.search({ offset: 3, limit: 3 });
    assert.equal(first.total, 5);
    assert.deepEqual([...first.registrations, ...second.registrations].map((r) => r.node), ['h-erin', 'm-dave', 'n-alice', 'n-bob', 'n-carol']);
  });

  it('search for failed registrations lists the most recent failure first, unwritten bookkeeping included', async (store) => {
    await store.insert(registration({ node: 'n-alice' }));
    await store.insert(registration({ node: 'n-bob' }));
    await store.insert(registration({ node: 'n-carol' }));
    store.recordFailure('n-bob', 2000, 'FCM 503');
    store.recordFailure('n-alice', 3000, 'APNS 410 Unregistered');
    const page = await store.search({ failedOnly: true, offset: 0, limit: 10 });
    assert.deepEqual(page.registrations.map((r) => [r.node, r.lastError]), [['n-alice', 'APNS 410 Unregistered'], ['n-bob', 'FCM 503']]);
    assert.equal(page.total, 2);
  });

  it('probeWrite writes and leaves nothing behind', async (store) => {
    await store.probeWrite();
    assert.equal(await store.countRetries(), 0);
    assert.deepEqual(await store.leaseDueRetries(Number.MAX_SAFE_INTEGER, 10, Number.MAX_SAFE_INTEGER), []);
  });

  // Block list (stateless dialect)

  it('a blocked token is blocked until its expiry, for its own app only', async (store) => {
    const now = Date.now();
    await store.blockToken('app', 'dead', now + 60_000);
    assert.equal(await store.isTokenBlocked('app', 'dead', now), true);
    assert.equal(await store.isTokenBlocked('app', 'dead', now + 59_999), true);
    assert.equal(await store.isTokenBlocked('app', 'dead', now + 60_000), false);
    assert.equal(await store.isTokenBlocked('other-app', 'dead', now), false);
    assert.equal(await store.isTokenBlocked('app', 'alive', now), false);
  });

  it('blocking a token again moves its expiry', async (store) => {
    const now = Date.now();
    await store.blockToken('app', 'dead', now + 1000);
    await store.blockToken('app', 'dead', now + 120_000);
    assert.equal(await store.isTokenBlocked('app', 'dead', now + 60_000), true);
  });

  it('blocking is not registering: the block list and the registrations are separate', async (store) => {
    await store.blockToken('app', 'dead', Date.now() + 60_000);
    assert.equal(await store.count(), 0);
    assert.deepEqual(await store.list({ limit: 10 }), []);
  });

  // Throttle window (push.min_interval_ms, shared by instances)

  it('the first claim of a key opens its window; claims inside it get its end and change nothing; at the end it opens again', async (store) => {
    assert.equal(await store.claimThrottleWindow('node-1', 10_000, 5000), 0);
    assert.equal(await store.claimThrottleWindow('node-1', 11_000, 5000), 15_000);
    assert.equal(await store.claimThrottleWindow('node-1', 14_999, 5000), 15_000, 'a refused claim does not move the window');
    assert.equal(await store.claimThrottleWindow('other', 11_000, 5000), 0, 'each key has its own window');
    assert.equal(await store.claimThrottleWindow('node-1', 15_000, 5000), 0);
    assert.equal(await store.claimThrottleWindow('node-1', 16_000, 5000), 20_000);
  });

  it('claims of one key at once: exactly one opens the window, every other gets its end', async (store) => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => store.claimThrottleWindow('node-1', 50_000, 3000)));
    assert.deepEqual(answers.toSorted((a, b) => a - b), [0, ...Array(7).fill(53_000)]);
  });

  it('claims of one key at once in the same millisecond after a window: exactly one reopens it', async (store) => {
    assert.equal(await store.claimThrottleWindow('node-1', 1000, 3000), 0);
    const answers = await Promise.all(Array.from({ length: 8 }, () => store.claimThrottleWindow('node-1', 4000, 3000)));
    assert.deepEqual(answers.toSorted((a, b) => a - b), [0, ...Array(7).fill(7000)]);
  });

  it('many keys past their windows are all claimable again (rows past a window mean nothing)', async (store) => {
    for (let i = 0; i < 1100; i++) assert.equal(await store.claimThrottleWindow(`node-${i}`, 1000 + i, 100), 0);
    assert.equal(await store.claimThrottleWindow('node-1099', 2100, 100), 2199, 'the latest window holds');
    assert.equal(await store.claimThrottleWindow('node-0', 2200, 100), 0);
  });

  // Health and life cycle

  it('an open store answers a ping and closes twice without an error', async (store) => {
    await store.ping();
    await store.close();
    await store.close();
  });
}
