/**
 * copyRegistrations (push-appserver copy-store) between two SQLite stores: a page goes in one
 * transaction, and a page the target refuses still arrives row by row, the refused row reported; a
 * copy run again brings what the source changed since (renewals, new tokens, pinned keys) and leaves
 * what the target holds newer. (The CLI test copies SQLite ↔ PostgreSQL through the real command.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { copyRegistrations, type CopyReport } from '../../src/store/copy.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { registration } from './store-contract.ts';

const LATER = 1_700_000_500_000;

async function withStores(body: (source: SqliteStore, target: SqliteStore) => Promise<void>): Promise<void> {
  const source = new SqliteStore(':memory:');
  const target = new SqliteStore(':memory:');
  try {
    await body(source, target);
  } finally {
    await source.close();
    await target.close();
  }
}

function counts(report: CopyReport): { copied: number; present: number; updated: number; conflicts: number } {
  return { copied: report.copied, present: report.present, updated: report.updated, conflicts: report.conflicts.length };
}

test('a page the target refuses as a whole (a device it already has under another node) is copied row by row, and only that row is reported', () => withStores(async (source, target) => {
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
  assert.deepEqual(counts(again), { copied: 0, present: 2499, updated: 0, conflicts: 1 });
}));

test('a registration renewed in the source since the first copy is the source\'s in the target after the next, pushes since included', () => withStores(async (source, target) => {
  await source.insert(registration({ node: 'n1' }));
  await source.insert(registration({ node: 'n2' }));
  await copyRegistrations(source, target);
  await source.renew('n1', LATER);
  source.recordDelivery('n1', LATER + 1);
  const again = await copyRegistrations(source, target);
  assert.deepEqual(counts(again), { copied: 0, present: 1, updated: 1, conflicts: 0 });
  assert.deepEqual(await target.getByNode('n1'), await source.getByNode('n1'));
  assert.equal((await target.getByNode('n1'))?.pushCount, 1);
}));

test('a device that registered again with a new token since the first copy has its new node and token in the target after the next, the old node gone', () => withStores(async (source, target) => {
  const old = registration({ node: 'n-old', deviceKey: 'u@x|phone', token: 'old-token' });
  await source.insert(old);
  await copyRegistrations(source, target);
  // What core/registrations.ts does for a proven JID's new token: a new node and secret, the old node removed.
  const renewed = registration({ node: 'n-new', deviceKey: 'u@x|phone', token: 'new-token', secret: 'n'.repeat(64), registeredAt: LATER, renewedAt: LATER });
  await source.insert(renewed, 'n-old');
  const again = await copyRegistrations(source, target);
  assert.deepEqual(counts(again), { copied: 0, present: 0, updated: 1, conflicts: 0 });
  assert.deepEqual(await target.getByDevice('app', 'u@x|phone'), renewed);
  assert.equal(await target.getByNode('n-old'), undefined);
}));

test('a registration the target renewed later than the source is left as the target has it and counted present', () => withStores(async (source, target) => {
  await source.insert(registration({ node: 'n1' }));
  await copyRegistrations(source, target);
  await source.renew('n1', LATER);
  await target.renew('n1', LATER + 1000);
  const kept = await target.getByNode('n1');
  const again = await copyRegistrations(source, target);
  assert.deepEqual(counts(again), { copied: 0, present: 1, updated: 0, conflicts: 0 });
  assert.deepEqual(await target.getByNode('n1'), kept);
}));

test('a Push 2.0 key the source pinned since the first copy, without a renewal, is pinned in the target by the next', () => withStores(async (source, target) => {
  await source.insert(registration({ node: 'n1' }));
  await copyRegistrations(source, target);
  await source.setPush2Key('n1', 'key-a');
  const again = await copyRegistrations(source, target);
  assert.deepEqual(counts(again), { copied: 0, present: 0, updated: 1, conflicts: 0 });
  assert.equal((await target.getByNode('n1'))?.push2Key, 'key-a');
}));

test('a newer registration of a device the target holds under a node the source still has (for another device) is reported, not put in its place', () => withStores(async (source, target) => {
  await source.insert(registration({ node: 'shared', deviceKey: 'u@x|tablet' }));
  await source.insert(registration({ node: 'n-new', deviceKey: 'u@x|phone', renewedAt: LATER }));
  await target.insert(registration({ node: 'shared', deviceKey: 'u@x|phone' }));
  const report = await copyRegistrations(source, target);
  assert.deepEqual(counts(report), { copied: 0, present: 0, updated: 0, conflicts: 2 });
  assert.equal((await target.getByNode('shared'))?.deviceKey, 'u@x|phone');
  assert.equal(await target.getByNode('n-new'), undefined);
}));

test('renewed registrations the target refuses as a page (one\'s app and device are another node\'s there) are updated one by one, and only that one is reported', () => withStores(async (source, target) => {
  // Not what a server writes (a node keeps its app): a target that changed since the lookups looks so.
  await source.insert(registration({ node: 'n1', app: 'other-app', deviceKey: 'u@x|d', renewedAt: LATER }));
  await source.insert(registration({ node: 'n2', renewedAt: LATER }));
  await target.insert(registration({ node: 'n1', deviceKey: 'u@x|d' }));
  await target.insert(registration({ node: 'n2' }));
  await target.insert(registration({ node: 'elsewhere', app: 'other-app', deviceKey: 'u@x|d' }));
  const report = await copyRegistrations(source, target);
  assert.deepEqual(counts(report), { copied: 0, present: 0, updated: 1, conflicts: 1 });
  assert.match(report.conflicts[0], /^n1: /);
  assert.equal((await target.getByNode('n2'))?.renewedAt, LATER);
  assert.equal((await target.getByNode('n1'))?.app, 'app');
}));

test('the registrations of a page renewed in the source reach the target in one replacing insertMany, not one write each', () => withStores(async (source, target) => {
  for (const node of ['n1', 'n2', 'n3']) await source.insert(registration({ node }));
  await copyRegistrations(source, target);
  for (const node of ['n1', 'n2', 'n3']) await source.renew(node, LATER);
  const batches: Array<{ size: number; replacing: boolean | undefined }> = [];
  const insertMany = target.insertMany.bind(target);
  target.insertMany = (registrations, replacing) => {
    if (registrations.length > 0) batches.push({ size: registrations.length, replacing });
    return insertMany(registrations, replacing);
  };
  assert.equal((await copyRegistrations(source, target)).updated, 3);
  assert.deepEqual(batches, [{ size: 3, replacing: true }]);
}));
