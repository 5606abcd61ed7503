/**
 * WAL checkpoints happen on a worker thread, not inside a commit on the serving thread; an idle store
 * starts no thread; a failed thread hands checkpoints back to the serving connection.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DatabaseSync } from 'node:sqlite';
import { test } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { WalCheckpointer } from '../../src/store/wal-checkpointer.ts';
import type { Registration } from '../../src/store/types.ts';

function registration(i: number): Registration {
  return {
    node: `node-${i}`, secret: 's'.repeat(64), app: 'app', token: `token-${i}`, deviceKey: `|device-${i}`,
    boundDomain: null, registeredAt: 1, renewedAt: 1, lastPushAt: null, lastErrorAt: null, lastError: null, pushCount: 0,
  };
}

function tempDb(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-wal-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'push.db');
}

function walDb(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT)');
  return db;
}

const autocheckpointPages = (db: DatabaseSync) => (db.prepare('PRAGMA wal_autocheckpoint').get() as { wal_autocheckpoint: number }).wal_autocheckpoint;

test('the serving connection never checkpoints by itself once a checkpointer is attached', async (t) => {
  const db = walDb(tempDb(t));
  const checkpointer = new WalCheckpointer(db, db.location()!);
  try {
    assert.equal(autocheckpointPages(db), 0);
  } finally {
    await checkpointer.close();
    db.close();
  }
});

test('writes to a file store are copied back from the WAL by the worker thread', async (t) => {
  const path = tempDb(t);
  const store = new SqliteStore(path);
  try {
    assert.ok(store.checkpointer, 'a file store has a checkpointer');
    const checkpointed = store.checkpointer.nextCheckpoint();
    for (let i = 0; i < 50; i++) await store.insert(registration(i));
    const done = await checkpointed;
    assert.ok(done.walFrames > 0, 'the inserts were in the WAL');
    assert.equal(done.checkpointed, done.walFrames, 'every frame is now in the database file');
    assert.equal(store.checkpointer.threadStarted, true);
    assert.equal((await store.getByNode('node-49'))?.token, 'token-49');
  } finally {
    await store.close();
  }
  const reopened = new SqliteStore(path);
  try {
    assert.equal(await reopened.count(), 50);
  } finally {
    await reopened.close();
  }
});

test('an idle store starts no checkpoint thread', async (t) => {
  // Mocked timers instead of a sleep: running every pending timer fires whatever a read might have
  // scheduled, and the write afterwards shows that the same step does start the thread.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const store = new SqliteStore(tempDb(t));
  try {
    await store.getByNode('nobody');
    await store.list({ limit: 10 });
    await store.count();
    t.mock.timers.runAll();
    assert.equal(store.checkpointer?.threadStarted, false, 'reads scheduled no checkpoint');
    assert.equal(store.checkpointer?.checkpoints, 0);
    await store.insert(registration(1));
    t.mock.timers.runAll();
    assert.equal(store.checkpointer?.threadStarted, true, 'a write does schedule one');
  } finally {
    t.mock.timers.reset();
    await store.close();
  }
});

test('an in-memory store has no WAL and so no checkpointer', async () => {
  const store = new SqliteStore(':memory:');
  assert.equal(store.checkpointer, undefined);
  await store.close();
});

test('when the checkpoint thread fails, the serving connection checkpoints again and says why', async (t) => {
  const path = tempDb(t);
  const broken = join(path, '..', 'broken-worker.mjs');
  writeFileSync(broken, 'throw new Error("no checkpoints here");\n');
  const db = walDb(path);
  let reported: Error | undefined;
  const checkpointer = new WalCheckpointer(db, path, {
    everyMs: 1,
    workerUrl: pathToFileURL(broken),
    onFallback: (error) => { reported = error; },
  });
  t.after(() => checkpointer.close());
  const next = checkpointer.nextCheckpoint();
  db.exec("INSERT INTO t VALUES ('x')");
  checkpointer.noteWrite();
  try {
    await assert.rejects(next, /no checkpoints here/);
    assert.match(String(reported?.message), /no checkpoints here/);
    assert.equal(checkpointer.active, false);
    assert.equal(autocheckpointPages(db), 1000, "SQLite's own automatic checkpoints are back");
  } finally {
    db.close();
  }
});
