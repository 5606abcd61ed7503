import assert from 'node:assert/strict';
import { test } from 'node:test';
import { summaryFromFields, urgencyOf } from '../../src/core/summary.ts';
import { secretsEqual, newSecret } from '../../src/core/secrets.ts';

const fields = (entries: Record<string, string>) => new Map(Object.entries(entries));

test('a Prosody summary yields count, sender and body', () => {
  const summary = summaryFromFields(fields({ 'message-count': '3', 'last-message-sender': 'juliet@capulet.example/balcony', 'last-message-body': 'New Message!', 'pending-subscription-count': '' }));
  assert.deepEqual(summary, { messageCount: 3, lastMessageSender: 'juliet@capulet.example/balcony', lastMessageBody: 'New Message!' });
});

test('an absent summary is an empty one', () => {
  assert.deepEqual(summaryFromFields(new Map()), {});
});

test('a non-numeric message count is ignored rather than refused', () => {
  assert.deepEqual(summaryFromFields(fields({ 'message-count': 'many' })), {});
});

test('a huge body is truncated', () => {
  const summary = summaryFromFields(fields({ 'last-message-body': 'x'.repeat(10_000) }));
  assert.equal(summary.lastMessageBody?.length, 4096);
});

test('a body makes the push urgent, its absence makes it a silent wake-up', () => {
  assert.equal(urgencyOf({ lastMessageBody: 'hi' }), 'high');
  assert.equal(urgencyOf({ messageCount: 1 }), 'normal');
});

test('secrets compare equal only when identical, whatever their lengths', () => {
  const secret = newSecret();
  assert.equal(secretsEqual(secret, secret), true);
  assert.equal(secretsEqual(secret, secret.slice(0, -1)), false);
  assert.equal(secretsEqual(secret, ''), false);
  assert.equal(secretsEqual(secret, secret + '0'), false);
});
