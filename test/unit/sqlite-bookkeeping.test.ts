/**
 * The SQLite store's batched push bookkeeping: written in slices in the background, never lost,
 * never double-counted, and merged into reads before it is written.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { Registration } from '../../src/store/types.ts';

function registration(i: number): Registration {
  return {
    node: `node-${String(i).padStart(5, '0')}`, secret: 's'.repeat(64), app: 'app', token: `token-${i}`, deviceKey: `|device-${i}`,
    boundDomain: null, registeredAt: 1, renewedAt: 1, lastPushAt: null, lastErrorAt: null, lastError: null, pushCount: 0,
  };
}

async function withStore(work: (store: SqliteStore, path: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-sqlite-'));
  const path = join(dir, 'push.db');
  const store = new SqliteStore(path);
  try {
    await work(store, path);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function until(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('bookkeeping for more nodes than one batch is written in the background, every count exact', async () => {
  await withStore(async (store, path) => {
    const count = 4500;
    for (let i = 0; i < count; i++) await store.insert(registration(i));
    for (let i = 0; i < count; i++) store.recordDelivery(registration(i).node, 1000 + i);
    for (let i = 0; i < count; i += 3) store.recordDelivery(registration(i).node, 9000 + i);
    // Another connection sees only what was written: wait until the background slices are done.
    const { DatabaseSync } = await import('node:sqlite');
    const reader = new DatabaseSync(path, { readOnly: true });
    try {
      const total = () => (reader.prepare('SELECT coalesce(sum(push_count), 0) AS n FROM registrations').get() as { n: number }).n;
      await until(async () => total() === count + Math.ceil(count / 3));
      const row = reader.prepare('SELECT push_count, last_push_at FROM registrations WHERE node = ?').get(registration(3).node) as { push_count: number; last_push_at: number };
      assert.deepEqual({ ...row }, { push_count: 2, last_push_at: 9003 });
    } finally {
      reader.close();
    }
  });
});

test('a read merges bookkeeping that is not written yet', async () => {
  await withStore(async (store) => {
    await store.insert(registration(1));
    store.recordDelivery(registration(1).node, 5000);
    store.recordFailure(registration(1).node, 6000, 'provider said no');
    const read = await store.getByNode(registration(1).node);
    assert.equal(read?.pushCount, 1);
    assert.equal(read?.lastPushAt, 5000);
    assert.equal(read?.lastError, 'provider said no');
  });
});

test('closing the store writes the bookkeeping still pending', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-sqlite-'));
  const path = join(dir, 'push.db');
  try {
    const store = new SqliteStore(path);
    for (let i = 0; i < 2500; i++) await store.insert(registration(i));
    for (let i = 0; i < 2500; i++) store.recordDelivery(registration(i).node, 7000);
    await store.close();
    const reopened = new SqliteStore(path);
    const page = await reopened.list({ limit: 3000 });
    await reopened.close();
    assert.equal(page.length, 2500);
    assert.ok(page.every((r) => r.pushCount === 1 && r.lastPushAt === 7000));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bookkeeping written between a lookup and its batch is counted once in its answer', async () => {
  await withStore(async (store) => {
    for (const i of [1, 2]) await store.insert(registration(i));
    store.recordDelivery(registration(1).node, 5000);
    store.recordDelivery(registration(2).node, 5000);
    const lookups = Promise.all([1, 2, 1].map((i) => store.getByNode(registration(i).node)));
    // Before the batch runs (same turn): the pending counts move into the rows.
    store.flush();
    store.recordDelivery(registration(2).node, 6000);
    const [one, two, oneAgain] = await lookups;
    assert.deepEqual([one?.pushCount, two?.pushCount, oneAgain?.pushCount], [1, 2, 1]);
    assert.equal(two?.lastPushAt, 6000);
  });
});
