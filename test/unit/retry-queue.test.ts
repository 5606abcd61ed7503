/** The retry queue over the store and its memory fallback: a finish or reschedule acts only on the lease it was given. */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { RetryQueue } from '../../src/core/retry-queue.ts';
import { silentLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { NewRetry } from '../../src/store/types.ts';

function retry(key: string, dueAt: number, reason: string): NewRetry {
  return {
    key, dialect: 'xep0357', app: 'app', reason, firstAttemptAt: 900, dueAt, attempt: 1,
    request: { dialect: 'xep0357', node: key, secret: null, from: null, options: {} },
    notification: { summary: { messageCount: 1 }, urgency: 'normal', firstAttemptAt: 900 },
  };
}

describe('retry queue', () => {
  let store: SqliteStore;
  let queue: RetryQueue;
  beforeEach(() => {
    store = new SqliteStore(':memory:');
    queue = new RetryQueue(store, silentLogger);
  });

  test('through the store: the lease that took a row finishes it; a stale lease leaves the new row saved since', async () => {
    assert.equal(await queue.save(retry('k', 1000, 'first')), true);
    const [a] = await queue.lease(1000, 10, 26_000);
    assert.equal(a.leasedUntil, 26_000);
    const [b] = await queue.lease(26_000, 10, 51_000);
    await queue.finish(b);
    assert.equal(await queue.count(), 0);
    await queue.save(retry('k', 30_000, 'newer'));
    await queue.finish(a);
    await queue.reschedule(a, 99_000, 7, 'stale');
    const [again] = await queue.lease(30_000, 10, 55_000);
    assert.deepEqual([again.reason, again.dueAt, again.attempt], ['newer', 30_000, 1]);
    await queue.finish(again);
    assert.equal(await queue.count(), 0);
  });

  describe('with the store refusing saves (kept in memory)', () => {
    beforeEach(() => {
      store.saveRetry = async () => { throw new Error('SQLITE_FULL: database or disk is full'); };
    });

    test('a lease and its finish remove the retry', async () => {
      assert.equal(await queue.save(retry('k', 1000, 'first')), false);
      const [leased] = await queue.lease(1000, 10, 26_000);
      assert.ok(leased.revision < 0);
      assert.equal(leased.leasedUntil, 26_000);
      await queue.finish(leased);
      assert.equal(await queue.count(), 0);
    });

    test('a newer push merged in memory during the lease survives its finish and its reschedule', async () => {
      await queue.save(retry('k', 1000, 'first'));
      const [leased] = await queue.lease(1000, 10, 26_000);
      await queue.save(retry('k', 5000, 'newer'));
      await queue.reschedule(leased, 90_000, 4, 'first failed');
      await queue.finish(leased);
      assert.equal(await queue.count(), 1);
      const [again] = await queue.lease(5000, 10, 30_000);
      assert.deepEqual([again.reason, again.dueAt, again.attempt], ['newer', 5000, 1]);
    });

    test('a stale lease neither moves nor removes the retry leased again after it ended; the new lease does', async () => {
      await queue.save(retry('k', 1000, 'first'));
      const [a] = await queue.lease(1000, 10, 26_000);
      const [b] = await queue.lease(26_000, 10, 51_000);
      await queue.reschedule(a, 27_000, 5, 'stale');
      await queue.finish(a);
      assert.deepEqual(await queue.lease(50_999, 10, 80_000), [], 'still leased to b');
      await queue.reschedule(b, 60_000, 2, 'still 503');
      const [c] = await queue.lease(60_000, 10, 85_000);
      assert.deepEqual([c.dueAt, c.attempt, c.reason], [60_000, 2, 'still 503']);
      await queue.finish(c);
      assert.equal(await queue.count(), 0);
    });
  });
});
