import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyedRateLimiter } from '../../src/core/rate-limit.ts';

test('a key may spend its burst at once, then waits for the refill it is told about', () => {
  let now = 0;
  const limiter = new KeyedRateLimiter({ perSecond: 2, burst: 3, now: () => now });
  for (let i = 0; i < 3; i++) assert.deepEqual(limiter.take('a.example'), { allowed: true });
  assert.deepEqual(limiter.take('a.example'), { allowed: false, retryAfterMs: 500 });
  now = 499;
  assert.equal(limiter.take('a.example').allowed, false);
  now = 1000;
  assert.equal(limiter.take('a.example').allowed, true);
});

test('one key running dry does not limit another key', () => {
  const limiter = new KeyedRateLimiter({ perSecond: 1, burst: 1, now: () => 0 });
  assert.equal(limiter.take('flood.example').allowed, true);
  assert.equal(limiter.take('flood.example').allowed, false);
  assert.equal(limiter.take('quiet.example').allowed, true);
});

test('a flood of distinct keys keeps at most maxKeys buckets', () => {
  const limiter = new KeyedRateLimiter({ perSecond: 1, maxKeys: 100, now: () => 0 });
  for (let i = 0; i < 10_000; i++) limiter.take(`k${i}`);
  assert.equal(limiter.size, 100);
});

test('a rate of 0 turns the limit off', () => {
  const limiter = new KeyedRateLimiter({ perSecond: 0, now: () => 0 });
  for (let i = 0; i < 1000; i++) assert.equal(limiter.take('x').allowed, true);
  assert.equal(limiter.enabled, false);
});
