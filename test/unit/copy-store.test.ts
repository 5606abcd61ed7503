/**
 * copyRegistrations (push-appserver copy-store) between two SQLite stores: a page goes in one
 * transaction, and a page the target refuses still arrives row by row, the refused row reported.
 * (The CLI test copies SQLite ↔ PostgreSQL through the real command.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { copyRegistrations } from '../../src/store/copy.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { registration } from './store-contract.ts';

test('a page the target refuses as a whole (a device it already has under another node) is copied row by row, and only that row is reported', async () => {
  const source = new SqliteStore(':memory:');
  const target = new SqliteStore(':memory:');
  try {
    for (let i = 0; i < 2500; i++) await source.insert(registration({ node: `n${String(i).padStart(4, '0')}` }));
    // The same app and device key as source's n1234, under another node: only the unique index knows.
    await target.insert(registration({ node: 'elsewhere', deviceKey: registration({ node: 'n1234' }).deviceKey }));
    const report = await copyRegistrations(source, target);
    assert.equal(report.copied, 2499);
    assert.equal(report.present, 0);
    assert.equal(report.conflicts.length, 1);
    assert.match(report.conflicts[0], /^n1234: /);
    assert.equal(await target.count(), 2500);
    const again = await copyRegistrations(source, target);
    assert.deepEqual({ copied: again.copied, present: again.present, conflicts: again.conflicts.length }, { copied: 0, present: 2499, conflicts: 1 });
  } finally {
    await source.close();
    await target.close();
  }
});
