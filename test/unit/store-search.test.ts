/**
 * The store's operator queries (issue #12): registrations per app, pending retries, and the
 * admin page's search with paging.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { NewRetry, Registration } from '../../src/store/types.ts';

function registration(node: string, fields: Partial<Registration> = {}): Registration {
  return {
    node, secret: 's'.repeat(32), app: 'ios', token: `tok-${node}`, deviceKey: `|${node}`, boundDomain: null,
    registeredAt: 1, renewedAt: 1, lastPushAt: null, lastErrorAt: null, lastError: null, pushCount: 0, ...fields,
  };
}

function retry(node: string, reason: string): NewRetry {
  return {
    key: node, dialect: 'xep0357', app: 'ios', reason, firstAttemptAt: 5, dueAt: 10, attempt: 1,
    request: { dialect: 'xep0357', node, secret: 's'.repeat(32), from: null, options: {} },
    notification: { summary: { messageCount: 1 }, urgency: 'normal', firstAttemptAt: 5 },
  };
}

async function seeded(): Promise<SqliteStore> {
  const store = new SqliteStore(':memory:');
  await store.insert(registration('n-alice', { deviceKey: 'alice@example.org|phone', token: 'aaaa1111' }));
  await store.insert(registration('n-bob', { deviceKey: 'bob@example.org|phone', token: 'bbbb2222', app: 'android' }));
  await store.insert(registration('n-carol', { deviceKey: 'carol_x@example.org|tab', token: 'aaaa3333' }));
  await store.insert(registration('m-dave', { deviceKey: '|dave-device', token: 'dddd4444', app: 'android' }));
  return store;
}

test('countByApp counts the registrations of every app', async () => {
  const store = await seeded();
  assert.deepEqual(await store.countByApp(), new Map([['android', 2], ['ios', 2]]));
  await store.close();
});

test('countRetries counts what is waiting to be retried, leased or not, until it is finished', async () => {
  const store = await seeded();
  assert.equal(await store.countRetries(), 0);
  await store.saveRetry(retry('n-bob', 'FCM 503'));
  await store.saveRetry(retry('n-alice', 'APNS 503'));
  assert.equal(await store.countRetries(), 2);
  const [first] = await store.leaseDueRetries(10, 1, 60_000);
  assert.equal(await store.countRetries(), 2);
  await store.finishRetry(first.key, first.revision, first.leasedUntil);
  assert.equal(await store.countRetries(), 1);
  await store.close();
});

test('search finds registrations by node prefix, token prefix, JID and app, with a total for paging', async () => {
  const store = await seeded();
  const nodes = async (query: Parameters<SqliteStore['search']>[0]) => (await store.search(query)).registrations.map((r) => r.node);
  assert.deepEqual(await nodes({ node: 'n-', offset: 0, limit: 10 }), ['n-alice', 'n-bob', 'n-carol']);
  assert.deepEqual(await nodes({ tokenPrefix: 'aaaa', offset: 0, limit: 10 }), ['n-alice', 'n-carol']);
  assert.deepEqual(await nodes({ jid: 'Bob@Example.org', offset: 0, limit: 10 }), ['n-bob']);
  assert.deepEqual(await nodes({ jid: 'carol%', offset: 0, limit: 10 }), [], 'LIKE wildcards in the JID are literal');
  assert.deepEqual(await nodes({ jid: 'carol_x@example.org', offset: 0, limit: 10 }), ['n-carol']);
  assert.deepEqual(await nodes({ app: 'android', offset: 0, limit: 10 }), ['m-dave', 'n-bob']);
  assert.deepEqual(await nodes({ app: 'ios', tokenPrefix: 'aaaa3', offset: 0, limit: 10 }), ['n-carol']);

  const firstPage = await store.search({ offset: 0, limit: 3 });
  const secondPage = await store.search({ offset: 3, limit: 3 });
  assert.equal(firstPage.total, 4);
  assert.deepEqual([...firstPage.registrations, ...secondPage.registrations].map((r) => r.node), ['m-dave', 'n-alice', 'n-bob', 'n-carol']);
  await store.close();
});

test('search for failed registrations lists the most recent failure first, bookkeeping not yet flushed included', async () => {
  const store = await seeded();
  store.recordFailure('n-bob', 2000, 'FCM 503');
  store.recordFailure('n-alice', 3000, 'APNS 410 Unregistered');
  const page = await store.search({ failedOnly: true, offset: 0, limit: 10 });
  assert.deepEqual(page.registrations.map((r) => [r.node, r.lastError]), [['n-alice', 'APNS 410 Unregistered'], ['n-bob', 'FCM 503']]);
  assert.equal(page.total, 2);
  await store.close();
});

test('probeWrite writes and leaves nothing behind', async () => {
  const store = await seeded();
  await store.probeWrite();
  assert.equal(await store.countRetries(), 0);
  await store.close();
  await assert.rejects(store.probeWrite(), 'a closed store cannot write');
});

test('search by JID also finds HTTP registrations that named the JID', async () => {
  const store = await seeded();
  await store.insert(registration('h-erin', { deviceKey: '|jid=erin@example.org|laptop' }));
  const page = await store.search({ jid: 'erin@example.org', offset: 0, limit: 10 });
  assert.deepEqual(page.registrations.map((r) => r.node), ['h-erin']);
  await store.close();
});
