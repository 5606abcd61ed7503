/** The Store methods behind the limits of issue #10, on the SQLite backend (removeExpired is in the store contract). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { MIGRATIONS, SqliteStore } from '../../src/store/sqlite.ts';
import type { Registration } from '../../src/store/types.ts';
import { testTempDir } from '../support/temp-dir.ts';

function registration(node: string, deviceKey: string, renewedAt: number): Registration {
  return {
    node, secret: 's', app: 'a', token: 't', deviceKey, boundDomain: null, registeredAt: renewedAt, renewedAt,
    lastPushAt: null, lastErrorAt: null, lastError: null, pushCount: 0,
  };
}

test('countByScope counts exactly the keys of one JID, every app together', async () => {
  const store = new SqliteStore(':memory:');
  await store.insert(registration('n1', 'romeo@m.example|d1', 1));
  await store.insert({ ...registration('n2', 'romeo@m.example|d2|muc=room@c.example', 1), app: 'b' });
  await store.insert(registration('n3', 'romeo@m.example.org|d1', 1));
  await store.insert(registration('n4', '|jid=romeo@m.example|d1', 1));
  await store.insert(registration('n5', 'romeo@m.exampl|d1', 1));
  assert.equal(await store.countByScope('romeo@m.example'), 2);
  assert.equal(await store.countByScope('juliet@c.example'), 0);
  await store.close();
});

test('the block list keeps its size in a counter that follows inserts, renewals and expiry', async () => {
  const store = new SqliteStore(':memory:');
  const future = Date.now() + 60_000;
  await store.blockToken('a', 't1', future);
  await store.blockToken('a', 't2', future);
  await store.blockToken('a', 't1', future + 1);
  assert.equal(await store.blockedTokenCount(), 2);
  await store.blockToken('a', 'short', Date.now() - 1);
  assert.equal(await store.blockedTokenCount(), 3);
  // The next insert sweeps the expired one.
  await store.blockToken('a', 't3', future);
  assert.equal(await store.blockedTokenCount(), 3);
  assert.equal(await store.isTokenBlocked('a', 't1', Date.now()), true);
  await store.close();
});

test('the migration starts the block-list counter at the size of an existing list', async () => {
  const path = join(testTempDir('store-migration'), 'push.db');
  // A database of the version just before the counter's migration, with two blocked tokens.
  const counterMigration = MIGRATIONS.findIndex((sql) => sql.includes('blocked_tokens_count'));
  assert.ok(counterMigration > 0);
  const db = new DatabaseSync(path);
  for (const sql of MIGRATIONS.slice(0, counterMigration)) db.exec(sql);
  db.exec(`PRAGMA user_version = ${counterMigration}`);
  const until = Date.now() + 60_000;
  db.prepare('INSERT INTO blocked_tokens (app, token, until) VALUES (?, ?, ?), (?, ?, ?)').run('a', 't1', until, 'a', 't2', until);
  db.close();
  const reopened = new SqliteStore(path);
  assert.equal(await reopened.blockedTokenCount(), 2);
  await reopened.close();
});
