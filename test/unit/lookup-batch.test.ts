/**
 * The batching of store lookups (src/store/lookup-batch.ts): which lookups share a batch, how a
 * batch is split, and how its failure reaches every caller.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as nextLoopTurn } from 'node:timers/promises';
import { LookupBatcher, type LookupMany } from '../../src/store/lookup-batch.ts';

/** A batcher answering `key:n` and recording the keys of each call. */
function recording(lookupMany: LookupMany<string, string> = (keys) => keys.map((key) => `${key}:answer`), maxBatch?: number) {
  const calls: string[][] = [];
  const batcher = new LookupBatcher<string, string>((keys) => {
    calls.push([...keys]);
    return lookupMany(keys);
  }, { maxBatch });
  return { batcher, calls };
}

test('lookups made in one synchronous stretch are one call, in order, a repeated key as often as asked', async () => {
  const { batcher, calls } = recording();
  const answers = Promise.all(['a', 'b', 'a', 'c'].map((key) => batcher.lookup(key)));
  assert.deepEqual(calls, [], 'nothing runs before the stack unwinds');
  assert.deepEqual(await answers, ['a:answer', 'b:answer', 'a:answer', 'c:answer']);
  assert.deepEqual(calls, [['a', 'b', 'a', 'c']]);
});

test('lookups reached after the same number of awaits share a batch; one made once the batch ran starts the next', async () => {
  const { batcher, calls } = recording();
  // Publishes of one chunk, each going through one async step before its lookup.
  const afterOneAwait = async (key: string) => {
    await null;
    return await batcher.lookup(key);
  };
  assert.deepEqual(await Promise.all(['a', 'b', 'c'].map(afterOneAwait)), ['a:answer', 'b:answer', 'c:answer']);
  assert.deepEqual(calls, [['a', 'b', 'c']]);
  await batcher.lookup('d');
  await batcher.lookup('e');
  // A lookup one await deeper than the first of its stretch comes after the batch was taken.
  const sameStretch = batcher.lookup('f');
  const oneAwaitLater = afterOneAwait('g');
  await Promise.all([sameStretch, oneAwaitLater]);
  assert.deepEqual(calls.slice(1), [['d'], ['e'], ['f'], ['g']]);
});

test('the batch runs before the event loop goes on: before an immediate and a zero timer', async () => {
  const order: string[] = [];
  const batcher = new LookupBatcher<string, string>((keys) => {
    order.push(`batch ${keys.join(',')}`);
    return keys;
  });
  const done = new Promise<void>((resolve) => setTimeout(resolve, 0));
  setImmediate(() => order.push('immediate'));
  setTimeout(() => order.push('timer'), 0);
  void batcher.lookup('a');
  void batcher.lookup('b');
  await done;
  await nextLoopTurn();
  assert.equal(order[0], 'batch a,b');
});

test('a lookup made while an asynchronous batch is answered goes into the next batch', async () => {
  const releases: Array<() => void> = [];
  const { batcher, calls } = recording(async (keys) => {
    await new Promise<void>((resolve) => releases.push(resolve));
    return keys.map((key) => `${key}:late`);
  });
  const first = batcher.lookup('a');
  await nextLoopTurn();
  assert.deepEqual(calls, [['a']]);
  const second = batcher.lookup('b');
  await nextLoopTurn();
  assert.deepEqual(calls, [['a'], ['b']], 'the second batch does not wait for the first');
  releases[1]();
  assert.equal(await second, 'b:late');
  releases[0]();
  assert.equal(await first, 'a:late');
});

test('a batch larger than maxBatch is split into calls of at most maxBatch keys, each answered', async () => {
  const { batcher, calls } = recording(undefined, 3);
  const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
  assert.deepEqual(await Promise.all(keys.map((key) => batcher.lookup(key))), keys.map((key) => `${key}:answer`));
  assert.deepEqual(calls, [['a', 'b', 'c'], ['d', 'e', 'f'], ['g']]);
});

test('a batch that throws fails every lookup of it with that very error, and the next batch is served', async () => {
  const failure = new Error('SQLITE_IOERR: disk I/O error');
  let fail = true;
  const { batcher } = recording((keys) => {
    if (fail) throw failure;
    return keys;
  });
  const settled = await Promise.allSettled(['a', 'b', 'a'].map((key) => batcher.lookup(key)));
  for (const outcome of settled) assert.equal(outcome.status === 'rejected' && outcome.reason, failure);
  fail = false;
  assert.deepEqual(await Promise.all([batcher.lookup('c'), batcher.lookup('d')]), ['c', 'd']);
});

test('a rejected batch fails every lookup of it with that very error; other parts of a split batch are answered', async () => {
  const failure = Object.assign(new Error('write CONNECTION_CLOSED 127.0.0.1:5432'), { code: 'CONNECTION_CLOSED' });
  const { batcher } = recording(async (keys) => {
    if (keys.includes('c')) throw failure;
    return keys;
  }, 2);
  const settled = await Promise.allSettled(['a', 'b', 'c', 'd', 'e'].map((key) => batcher.lookup(key)));
  assert.deepEqual(settled.map((outcome) => outcome.status === 'fulfilled' ? outcome.value : outcome.reason),
    ['a', 'b', failure, failure, 'e']);
});

test('an answer with the wrong number of values fails every lookup of the batch rather than mixing answers up', async () => {
  const { batcher } = recording((keys) => keys.slice(1));
  const settled = await Promise.allSettled([batcher.lookup('a'), batcher.lookup('b')]);
  for (const outcome of settled) {
    assert.equal(outcome.status, 'rejected');
    assert.match(String((outcome as PromiseRejectedResult).reason), /batch of 2 keys was answered with 1 values/);
  }
});

test('flush answers the waiting lookups at once, and their scheduled turn finds nothing to do', async () => {
  const { batcher, calls } = recording();
  const answers = Promise.all([batcher.lookup('a'), batcher.lookup('b')]);
  batcher.flush();
  assert.deepEqual(calls, [['a', 'b']]);
  const later = batcher.lookup('c');
  assert.deepEqual(await answers, ['a:answer', 'b:answer']);
  assert.equal(await later, 'c:answer');
  await nextLoopTurn();
  assert.deepEqual(calls, [['a', 'b'], ['c']]);
  batcher.flush();
  assert.equal(calls.length, 2, 'flushing with nothing waiting calls nothing');
});

test('a batch of one goes to lookupOne when there is one, and its value, throw or rejection is the lookup\'s', async () => {
  const many: string[][] = [];
  const failure = new Error('SQLITE_BUSY: database is locked');
  const batcher = new LookupBatcher<string, string>((keys) => {
    many.push([...keys]);
    return keys.map((key) => `${key}:many`);
  }, {
    lookupOne: (key) => {
      if (key === 'throws') throw failure;
      if (key === 'rejects') return Promise.reject(failure);
      return key === 'later' ? Promise.resolve(`${key}:one`) : `${key}:one`;
    },
  });
  assert.equal(await batcher.lookup('a'), 'a:one');
  assert.equal(await batcher.lookup('later'), 'later:one');
  await assert.rejects(batcher.lookup('throws'), (error) => error === failure);
  await assert.rejects(batcher.lookup('rejects'), (error) => error === failure);
  assert.deepEqual(await Promise.all([batcher.lookup('b'), batcher.lookup('c')]), ['b:many', 'c:many']);
  assert.equal(await batcher.lookup('d'), 'd:one', 'a lone lookup after a batch');
  assert.deepEqual(many, [['b', 'c']]);
});
